"""The micro-batcher: grouping, bounds, deadlines, cancellation and failure isolation."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future

import pytest

from service.errors import BatcherClosed, DeadlineExceeded, QueueFull
from service.inference.batcher import Batched, MicroBatcher


class Recorder:
    """A `run` that records each call and can be held closed to let requests pile up."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def __call__(self, key: str, values: list[int]) -> Sequence[int | Exception]:
        self.started.set()
        self.gate.wait(10)
        self.calls.append((key, list(values)))
        return [ValueError(f"bad {v}") if v < 0 else v * 10 for v in values]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


Batcher = MicroBatcher[str, int, int]
Make = Callable[..., Batcher]


@pytest.fixture
def make(recorder: Recorder) -> Iterator[Make]:
    made: list[Batcher] = []

    def build(
        max_batch: int = 4,
        max_wait: float = 0.05,
        max_queue: int = 100,
        background_batch: int | None = None,
    ) -> Batcher:
        batcher: Batcher = MicroBatcher(
            recorder,
            max_batch=max_batch,
            max_wait=max_wait,
            max_queue=max_queue,
            background_batch=background_batch,
        )
        made.append(batcher)
        return batcher

    yield build
    for batcher in made:
        batcher.close(timeout=5)


def hold(batcher: Batcher, recorder: Recorder) -> Future[Batched[int]]:
    """Occupy the dispatcher with one call that waits on the gate."""
    recorder.gate.clear()
    busy = batcher.submit("busy", 0, alone=True)
    assert recorder.started.wait(5)
    return busy


def test_items_waiting_together_run_in_one_call_per_key(make: Make, recorder: Recorder) -> None:
    batcher = make(max_batch=8)
    busy = hold(batcher, recorder)
    a = [batcher.submit("a", i) for i in range(1, 6)]
    b = [batcher.submit("b", i) for i in range(6, 8)]
    recorder.gate.set()
    results = [f.result(5) for f in (*a, *b)]
    busy.result(5)
    assert [r.value for r in results] == [10, 20, 30, 40, 50, 60, 70]
    assert sorted(recorder.calls[1:]) == [("a", [1, 2, 3, 4, 5]), ("b", [6, 7])]
    assert {r.batch_size for r in results[:5]} == {5} and {r.batch_size for r in results[5:]} == {2}


def test_a_group_never_exceeds_max_batch(make: Make, recorder: Recorder) -> None:
    batcher = make(max_batch=3)
    busy = hold(batcher, recorder)
    futures = [batcher.submit("a", i) for i in range(1, 8)]
    recorder.gate.set()
    assert [f.result(5).value for f in futures] == [i * 10 for i in range(1, 8)]
    busy.result(5)
    assert [len(values) for _, values in recorder.calls[1:]] == [3, 3, 1]


def test_a_lone_item_runs_after_max_wait_without_company(make: Make, recorder: Recorder) -> None:
    batcher = make(max_batch=64, max_wait=0.01)
    assert batcher.submit("a", 1).result(5).value == 10
    assert recorder.calls == [("a", [1])]


def test_the_queue_is_bounded_at_submit_time(make: Make, recorder: Recorder) -> None:
    batcher = make(max_queue=3)
    busy = hold(batcher, recorder)
    queued = [batcher.submit("a", i) for i in range(1, 4)]
    assert batcher.pending == 3
    with pytest.raises(QueueFull):
        batcher.submit("a", 9)
    recorder.gate.set()
    assert [f.result(5).value for f in queued] == [10, 20, 30]
    busy.result(5)
    assert batcher.submit("a", 4).result(5).value == 40  # room again


def test_interactive_items_run_before_older_background_ones(make: Make, recorder: Recorder) -> None:
    batcher = make(max_batch=4, background_batch=2)
    busy = hold(batcher, recorder)
    bulk = [batcher.submit("bulk", i, background=True) for i in range(1, 6)]
    interactive = [batcher.submit("api", i) for i in range(6, 8)]
    assert (batcher.pending, batcher.background_pending) == (2, 5)
    recorder.gate.set()
    assert [f.result(5).value for f in (*bulk, *interactive)] == [i * 10 for i in range(1, 8)]
    busy.result(5)
    # the interactive pair first, then the background items two at a time
    assert recorder.calls[1:] == [
        ("api", [6, 7]),
        ("bulk", [1, 2]),
        ("bulk", [3, 4]),
        ("bulk", [5]),
    ]


def test_background_items_wait_while_an_interactive_one_waits_for_company(
    make: Make, recorder: Recorder
) -> None:
    batcher = make(max_batch=4, max_wait=0.2)
    started = time.monotonic()
    interactive = batcher.submit("api", 1)
    bulk = batcher.submit("bulk", 2, background=True)
    assert bulk.result(5).value == 20
    assert interactive.result(5).value == 10
    assert recorder.calls == [("api", [1]), ("bulk", [2])]
    assert time.monotonic() - started >= 0.2  # the lone interactive item waited max_wait


def test_background_items_do_not_count_against_the_queue_bound(
    make: Make, recorder: Recorder
) -> None:
    batcher = make(max_queue=2)
    busy = hold(batcher, recorder)
    bulk = [batcher.submit("bulk", i, background=True) for i in range(1, 6)]
    queued = [batcher.submit("api", i) for i in (6, 7)]
    with pytest.raises(QueueFull):
        batcher.submit("api", 8)
    recorder.gate.set()
    assert [f.result(5).value for f in (*bulk, *queued)] == [i * 10 for i in range(1, 8)]
    busy.result(5)


def test_an_item_past_its_deadline_is_not_run(make: Make, recorder: Recorder) -> None:
    batcher = make()
    busy = hold(batcher, recorder)
    late = batcher.submit("a", 1, deadline=time.time() + 0.01)
    fine = batcher.submit("a", 2, deadline=time.time() + 60)
    time.sleep(0.05)
    recorder.gate.set()
    with pytest.raises(DeadlineExceeded):
        late.result(5)
    assert fine.result(5).value == 20
    busy.result(5)
    assert recorder.calls[1:] == [("a", [2])]


def test_a_cancelled_item_is_skipped(make: Make, recorder: Recorder) -> None:
    batcher = make()
    busy = hold(batcher, recorder)
    gone = batcher.submit("a", 1)
    kept = batcher.submit("a", 2)
    assert gone.cancel()
    recorder.gate.set()
    assert kept.result(5).value == 20
    busy.result(5)
    assert recorder.calls[1:] == [("a", [2])]


def test_a_bad_item_fails_only_itself(make: Make) -> None:
    batcher = make(max_wait=0.2)
    futures = [batcher.submit("a", v) for v in (1, -1, 3)]
    assert futures[0].result(5).value == 10 and futures[2].result(5).value == 30
    with pytest.raises(ValueError, match="bad -1"):
        futures[1].result(5)


def test_a_failing_run_fails_its_batch_and_the_batcher_goes_on() -> None:
    calls = []

    def run(key: str, values: list[int]) -> list[int]:
        calls.append(values)
        if len(calls) == 1:
            raise RuntimeError("engine crashed")
        return values

    batcher: MicroBatcher[str, int, int] = MicroBatcher(
        run, max_batch=2, max_wait=0.2, max_queue=10
    )
    try:
        first = [batcher.submit("a", v) for v in (1, 2)]
        for future in first:
            with pytest.raises(RuntimeError, match="engine crashed"):
                future.result(5)
        assert batcher.submit("a", 3).result(5).value == 3
    finally:
        batcher.close()


def test_close_finishes_queued_items_then_refuses_new_ones(make: Make, recorder: Recorder) -> None:
    batcher = make(max_wait=30)  # without close, these would wait 30 s for company
    futures = [batcher.submit("a", i) for i in (1, 2)]
    batcher.close(timeout=5)
    assert [f.result(0).value for f in futures] == [10, 20]
    with pytest.raises(BatcherClosed):
        batcher.submit("a", 3)


def test_cancelling_an_awaiting_coroutine_drops_its_item(make: Make, recorder: Recorder) -> None:
    batcher = make()
    busy = hold(batcher, recorder)

    async def give_up() -> Future[Batched[int]]:
        future = batcher.submit("a", 1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.wrap_future(future), 0.01)
        return future

    future = asyncio.run(give_up())
    assert future.cancelled()
    recorder.gate.set()
    busy.result(5)
    assert batcher.submit("a", 2).result(5).value == 20
    assert [values for _, values in recorder.calls] == [[0], [2]]


def test_options_are_validated(recorder: Recorder) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(recorder, max_batch=0, max_wait=0, max_queue=1)
