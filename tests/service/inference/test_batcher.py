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
from tests.waiting import wait_until


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
    # the interactive item waits for its company; a background batch of one is complete
    batcher = make(max_batch=2, max_wait=60, background_batch=1)
    interactive = batcher.submit("api", 1)
    bulk = batcher.submit("bulk", 2, background=True)
    company = batcher.submit("api", 3)  # had the bulk item gone first, it would show below
    assert [f.result(10).value for f in (interactive, company, bulk)] == [10, 30, 20]
    assert recorder.calls == [("api", [1, 3]), ("bulk", [2])]


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
    late = batcher.submit("a", 1, deadline=time.time() - 1)  # passed while it was queued
    fine = batcher.submit("a", 2, deadline=time.time() + 60)
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
    """Stepwise work of `count` steps, each of which waits until the test allows it; records
    what happened to it (in `log`, shared between works to see their order)."""

    tiles_per_step = 2

    def __init__(
        self,
        count: int,
        *,
        name: str = "steps",
        log: list[str] | None = None,
        fail_at: int | None = None,
        allowed: int = 0,
    ) -> None:
        self.count, self.name, self.fail_at = count, name, fail_at
        self.log = [] if log is None else log
        self.ran = 0
        self.started = 0
        self.busy_seconds = 0.0
        self.closed = False
        self._permits = threading.Semaphore(allowed)

    def allow(self, steps: int) -> None:
        """Let `steps` more steps finish."""
        self._permits.release(steps)

    def wait_started(self, steps: int) -> None:
        wait_until(lambda: self.started >= steps, f"{self.name}: step {steps} never started")

    @property
    def done(self) -> bool:
        return self.ran == self.count

    def step(self) -> None:
        began = time.monotonic()
        self.started += 1
        if self.fail_at == self.ran:
            raise ValueError("this step fails")
        assert self._permits.acquire(timeout=60), f"{self.name}: step {self.ran + 1} held"
        self.ran += 1
        self.log.append(self.name)
        self.busy_seconds += time.monotonic() - began

    def result(self) -> int:
        return 1000 + self.ran

    def close(self) -> None:
        self.closed = True


def test_stepwise_work_runs_to_its_result_and_says_when_it_is_done(make: Make) -> None:
    batcher = make()
    steps = Steps(4, allowed=4)
    released = threading.Event()
    result = batcher.submit_steps(steps, on_done=released.set).result(10)  # type: ignore[arg-type]
    assert result.value == 1004 and result.batch_size == 2
    assert result.run_seconds >= steps.busy_seconds  # the time its steps took is its run time
    assert released.wait(10) and steps.closed
    assert batcher.pending == 0


def test_a_request_arriving_during_stepwise_work_waits_for_one_step(
    make: Make, recorder: Recorder
) -> None:
    batcher = make(max_wait=60)  # a lone request does not wait for company behind a step
    steps = Steps(40)
    huge = batcher.submit_steps(steps)  # type: ignore[arg-type]
    steps.wait_started(1)
    small = batcher.submit("small", 1)
    steps.allow(1)  # the running step ends; the next one would wait
    assert small.result(10).value == 10
    assert steps.ran == 1  # served after the step it arrived during, not after all 40
    assert not huge.done()
    steps.allow(39)
    assert huge.result(10).value == 1040


def test_cancelling_stepwise_work_drops_its_remaining_steps(make: Make) -> None:
    batcher = make()
    steps = Steps(100)
    released = threading.Event()
    future = batcher.submit_steps(steps, on_done=released.set)  # type: ignore[arg-type]
    steps.wait_started(1)
    assert future.cancel()  # still pending while steps run
    steps.allow(100)  # every step could run now, were any still scheduled
    assert released.wait(10)
    assert batcher.pending == 0
    batcher.close(timeout=10)  # finishes whatever is still queued
    assert steps.ran == 1 and steps.closed


def test_stepwise_work_past_its_deadline_stops_with_deadline_exceeded(make: Make) -> None:
    batcher = make()
    steps = Steps(100)
    deadline = time.time() + 0.5
    future = batcher.submit_steps(steps, deadline=deadline)  # type: ignore[arg-type]
    steps.wait_started(1)
    wait_until(lambda: time.time() > deadline, "the deadline passed")
    steps.allow(100)
    with pytest.raises(DeadlineExceeded):
        future.result(10)
    assert steps.ran == 1 and steps.closed


def test_a_failing_step_fails_only_its_own_work(make: Make) -> None:
    batcher = make()
    broken = batcher.submit_steps(Steps(5, fail_at=2, allowed=5))  # type: ignore[arg-type]
    fine = batcher.submit_steps(Steps(3, allowed=3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="this step fails"):
        broken.result(10)
    assert fine.result(10).value == 1003


def test_two_stepwise_works_take_turns(make: Make) -> None:
    batcher = make()
    log: list[str] = []
    first, second = Steps(3, name="first", log=log), Steps(3, name="second", log=log)
    a = batcher.submit_steps(first)  # type: ignore[arg-type]
    first.wait_started(1)
    b = batcher.submit_steps(second)  # type: ignore[arg-type]
    first.allow(3)
    second.allow(3)
    assert (a.result(10).value, b.result(10).value) == (1003, 1003)
    assert log == ["first", "second"] * 3  # round robin


def test_stepwise_bulk_work_yields_to_interactive_stepwise_work(make: Make) -> None:
    batcher = make()
    log: list[str] = []
    bulk = Steps(10, name="bulk", log=log)
    interactive = Steps(5, name="interactive", log=log)
    done_bulk = batcher.submit_steps(bulk, background=True)  # type: ignore[arg-type]
    bulk.wait_started(1)
    done_interactive = batcher.submit_steps(interactive)  # type: ignore[arg-type]
    bulk.allow(10)
    interactive.allow(5)
    assert done_interactive.result(10).value == 1005
    assert done_bulk.result(10).value == 1010
    # the step running when the interactive work came, then the interactive work first
    assert log == ["bulk"] + ["interactive"] * 5 + ["bulk"] * 9


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
        wait_until(lambda: idle, "the queue ran dry")
        assert idle == [3]  # once, after the last of the three batches
        batcher.submit("k", 9).result(10)
        wait_until(lambda: len(idle) == 2, "the queue ran dry again")
        assert idle == [3, 4]  # and once more after the next, not while nothing ran
    finally:
        batcher.close()
