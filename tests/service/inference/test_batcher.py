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


# --- stepwise work (a large image's tile batches) -----------------------------------------


class Steps:
    """Stepwise work of `count` steps of `seconds` each, recording what happened to it."""

    tiles_per_step = 2

    def __init__(self, count: int, seconds: float = 0.05, fail_at: int | None = None) -> None:
        self.count, self.seconds, self.fail_at = count, seconds, fail_at
        self.ran = 0
        self.closed = False
        self.log: list[tuple[str, float]] = []  # ("step", end time)

    @property
    def done(self) -> bool:
        return self.ran == self.count

    def step(self) -> None:
        if self.fail_at == self.ran:
            raise ValueError("this step fails")
        time.sleep(self.seconds)
        self.ran += 1
        self.log.append(("step", time.monotonic()))

    def result(self) -> int:
        return 1000 + self.ran

    def close(self) -> None:
        self.closed = True


def test_stepwise_work_runs_to_its_result_and_says_when_it_is_done(make: Make) -> None:
    batcher = make()
    steps = Steps(4, seconds=0.01)
    released = threading.Event()
    result = batcher.submit_steps(steps, on_done=released.set).result(5)  # type: ignore[arg-type]
    assert result.value == 1004 and result.batch_size == 2
    assert result.run_seconds >= 0.04
    assert released.wait(1) and steps.closed
    assert batcher.pending == 0


def test_a_request_arriving_during_stepwise_work_waits_for_one_step(
    make: Make, recorder: Recorder
) -> None:
    batcher = make(max_wait=0.05)
    steps = Steps(40, seconds=0.05)  # 2 s of work
    huge = batcher.submit_steps(steps)  # type: ignore[arg-type]
    time.sleep(0.3)
    asked = time.monotonic()
    answer = batcher.submit("small", 1).result(5)
    waited = time.monotonic() - asked
    assert answer.value == 10
    assert waited < 0.05 + 0.05 + 0.1, f"waited {waited:.3f} s behind the stepwise work"
    assert not huge.done()  # the large one was interleaved, not finished first
    assert huge.result(10).value == 1040


def test_cancelling_stepwise_work_drops_its_remaining_steps(make: Make) -> None:
    batcher = make()
    steps = Steps(100, seconds=0.02)
    released = threading.Event()
    future = batcher.submit_steps(steps, on_done=released.set)  # type: ignore[arg-type]
    time.sleep(0.2)
    assert future.cancel()  # still pending while steps run
    assert released.wait(1)
    ran = steps.ran
    time.sleep(0.2)
    assert steps.ran == ran < 100 and steps.closed
    assert batcher.pending == 0


def test_stepwise_work_past_its_deadline_stops_with_deadline_exceeded(make: Make) -> None:
    batcher = make()
    steps = Steps(100, seconds=0.02)
    future = batcher.submit_steps(steps, deadline=time.time() + 0.2)  # type: ignore[arg-type]
    with pytest.raises(DeadlineExceeded):
        future.result(5)
    assert steps.ran < 20 and steps.closed


def test_a_failing_step_fails_only_its_own_work(make: Make) -> None:
    batcher = make()
    broken = batcher.submit_steps(Steps(5, seconds=0.01, fail_at=2))  # type: ignore[arg-type]
    fine = batcher.submit_steps(Steps(3, seconds=0.01))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="this step fails"):
        broken.result(5)
    assert fine.result(5).value == 1003


def test_two_stepwise_works_take_turns(make: Make) -> None:
    batcher = make()
    first, second = Steps(10, seconds=0.01), Steps(10, seconds=0.01)
    a = batcher.submit_steps(first)  # type: ignore[arg-type]
    b = batcher.submit_steps(second)  # type: ignore[arg-type]
    a.result(5), b.result(5)
    # round robin: the second started long before the first ended
    assert second.log[0][1] < first.log[-1][1]


def test_stepwise_bulk_work_yields_to_interactive_stepwise_work(make: Make) -> None:
    batcher = make()
    bulk, interactive = Steps(10, seconds=0.02), Steps(5, seconds=0.02)
    done_bulk = batcher.submit_steps(bulk, background=True)  # type: ignore[arg-type]
    time.sleep(0.05)
    batcher.submit_steps(interactive).result(5)  # type: ignore[arg-type]
    assert bulk.ran < 10  # the interactive work went first once it came
    assert done_bulk.result(5).value == 1010


def test_the_idle_hook_runs_when_the_queue_runs_dry_not_between_batches(
    recorder: Recorder,
) -> None:
    idle: list[int] = []
    batcher: Batcher = MicroBatcher(
        recorder,
        max_batch=2,
        max_wait=0.01,
        max_queue=100,
        on_idle=lambda: idle.append(len(recorder.calls)),
    )
    try:
        recorder.gate.clear()
        futures = [batcher.submit("k", i) for i in range(6)]  # three batches, back to back
        assert recorder.started.wait(2)
        recorder.gate.set()
        for future in futures:
            future.result(5)
        deadline = time.monotonic() + 2
        while not idle and time.monotonic() < deadline:
            time.sleep(0.01)
        assert idle == [3]  # once, after the last of the three batches
        time.sleep(0.1)
        assert idle == [3]  # and not again while nothing runs
    finally:
        batcher.close()
