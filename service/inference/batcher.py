"""Dynamic micro-batching: many callers' images, one network call per group.

Callers on any thread :meth:`MicroBatcher.submit` one item with a group key and a deadline and
get a :class:`concurrent.futures.Future`. One dispatcher thread owns the engine: it runs a group
as soon as it holds ``max_batch`` items, or when its oldest item has waited ``max_wait``
seconds. While a batch runs, new requests queue up, so under load batches fill by themselves
and ``max_wait`` only matters when the engine is idle.

The embedded API awaits the future with :func:`asyncio.wrap_future` (no thread per waiting
request, and cancelling the await cancels the item); a Celery worker's task threads block on it.
The queue is bounded: :class:`QueueFull` is raised at submit time, never after the fact.

Background items (bulk-job images) never delay interactive ones: a background group runs only
when no interactive item is waiting, and in batches of at most ``background_batch`` items, so
an interactive request that arrives meanwhile waits for one short batch at most. They are not
counted against ``max_queue`` (their producers, the bulk chunks, are bounded by themselves).

Work that takes many engine calls (a large image's tiles) is submitted as :class:`Stepwise`
with :meth:`MicroBatcher.submit_steps`: the dispatcher runs one step of it at a time and
serves everything that arrived meanwhile before its next step, so a request that comes during a
huge image waits for one step, not for the whole image. Its future stays pending until the
last step, so the caller can still cancel it: the remaining steps are then dropped, as they are
when its deadline passes, and the engine is free again after the step that is running.
``on_done`` callbacks tell the caller when the batcher no longer holds an item (ran, failed or
dropped), which is when the memory it holds is free (see :mod:`service.inference.admission`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from service.errors import BatcherClosed, DeadlineExceeded, QueueFull

__all__ = ["Batched", "MicroBatcher", "Stepwise"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class Stepwise(Protocol[R_co]):
    """Work done in several short engine calls (e.g. a large image's tile batches)."""

    @property
    def done(self) -> bool: ...

    @property
    def tiles_per_step(self) -> int: ...

    def step(self) -> None: ...

    def result(self) -> R_co: ...

    def close(self) -> None:
        """Free what it holds: it was dropped, and no step will follow."""
        ...


@dataclass(frozen=True)
class Batched(Generic[R]):
    """An item's result with how it was served."""

    value: R
    batch_size: int  # items in the network call this one ran in
    queue_seconds: float  # submitted -> its batch started
    run_seconds: float  # the whole batch's run time


@dataclass(eq=False)
class _Item(Generic[T, R]):
    value: T
    deadline: float | None  # time.time()
    future: Future[Batched[R]] = field(default_factory=Future)
    submitted: float = field(default_factory=time.monotonic)
    on_done: Callable[[], None] | None = None
    steps: Stepwise[R] | None = None
    background: bool = False
    turn: float = 0.0  # stepwise: when it last ran a step (its place in the round robin)
    started: float | None = None  # stepwise: when its first step ran
    run_seconds: float = 0.0  # stepwise: engine time of its steps so far

    def finish(self) -> None:
        """The batcher holds this item no more."""
        if self.on_done is not None:
            callback, self.on_done = self.on_done, None
            callback()


class MicroBatcher(Generic[K, T, R]):
    """Groups items by key and runs each group through ``run`` on one dispatcher thread.

    ``run(key, values)`` returns one result per value, in order; a result that is an
    ``Exception`` fails only its own item. If ``run`` itself raises, every item of that batch
    gets the error.
    """

    def __init__(
        self,
        run: Callable[[K, list[T]], Sequence[R | Exception]],
        *,
        max_batch: int,
        max_wait: float,
        max_queue: int,
        background_batch: int | None = None,
        name: str = "micro-batcher",
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait < 0:
            raise ValueError(
                f"need max_batch >= 1, max_queue >= 1, max_wait >= 0; got {max_batch}, "
                f"{max_queue}, {max_wait}"
            )
        self._run = run
        self._on_idle = on_idle  # called on the dispatcher thread when work runs out
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.background_batch = min(background_batch or max_batch, max_batch)
        self._groups: OrderedDict[K, deque[_Item[T, R]]] = OrderedDict()
        self._alone: set[K] = set()  # keys whose items never wait for company
        self._background: set[K] = set()  # keys of background groups
        self._stepping: deque[_Item[T, R]] = deque()  # stepwise items, in round-robin order
        self._pending = 0  # interactive items waiting
        self._background_pending = 0
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Interactive items submitted and not yet handed to the engine."""
        return self._pending

    @property
    def background_pending(self) -> int:
        return self._background_pending

    def submit(
        self,
        key: K,
        value: T,
        *,
        deadline: float | None = None,
        alone: bool = False,
        background: bool = False,
        on_done: Callable[[], None] | None = None,
    ) -> Future[Batched[R]]:
        """Queue one item; ``alone`` items run without waiting for company; ``background``
        ones run when no interactive item waits. A key is either kind."""
        item: _Item[T, R] = _Item(value, deadline, on_done=on_done, background=background)
        with self._cond:
            self._admit(item)
            self._groups.setdefault(key, deque()).append(item)
            if alone:
                self._alone.add(key)
            if background:
                self._background.add(key)
                self._background_pending += 1
            else:
                self._pending += 1
            self._cond.notify()
        return item.future

    def submit_steps(
        self,
        steps: Stepwise[R],
        *,
        deadline: float | None = None,
        background: bool = False,
        on_done: Callable[[], None] | None = None,
    ) -> Future[Batched[R]]:
        """Queue work that runs one step at a time, others' batches served between steps.

        Cancelling the future (it stays pending until the last step) drops the steps left.
        """
        item: _Item[T, R] = _Item(
            None,  # type: ignore[arg-type]  # a stepwise item carries its work in `steps`
            deadline,
            on_done=on_done,
            steps=steps,
            background=background,
        )
        item.turn = item.submitted
        with self._cond:
            self._admit(item)
            self._stepping.append(item)
            if background:
                self._background_pending += 1
            else:
                self._pending += 1
            self._cond.notify()
        return item.future

    def _admit(self, item: _Item[T, R]) -> None:
        """Under the lock: refuse new work when closing or when the queue is full."""
        if self._closed:
            raise BatcherClosed("the server is shutting down")
        if not item.background and self._pending >= self.max_queue:
            raise QueueFull(f"{self._pending} requests are already waiting")

    def close(self, timeout: float | None = None) -> None:
        """Take no new items, finish the queued ones, stop the dispatcher thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    # --- dispatcher thread --------------------------------------------------------------

    def _loop(self) -> None:
        worked = False  # since the last time the queue ran dry
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    batch = self._take_ready(now)
                    if batch is not None:
                        break
                    if self._closed and not self._groups and not self._stepping:
                        return
                    if worked and not self._groups and self._on_idle is not None:
                        break  # nothing queued: tidy up outside the lock, then wait
                    due = self._next_due()
                    self._cond.wait(None if due is None else max(0.0, due - now))
            if batch is None:
                worked = False
                self._idle()
                continue
            worked = True
            if isinstance(batch, _Item):
                self._step(batch)
            else:
                self._execute(*batch)

    def _idle(self) -> None:
        assert self._on_idle is not None
        try:
            self._on_idle()
        except Exception:  # tidying up must never stop the dispatcher
            logging.getLogger(__name__).exception("the batcher's idle hook failed")

    def _limit(self, key: K) -> int:
        return self.background_batch if key in self._background else self.max_batch

    def _is_ready(self, key: K, items: deque[_Item[T, R]], now: float) -> bool:
        if key in self._background and self._pending:
            return False  # interactive items first, even those still waiting for company
        return (
            self._closed
            or key in self._alone
            or bool(self._stepping)  # waiting for company would mean waiting a whole step
            or len(items) >= self._limit(key)
            or now - items[0].submitted >= self.max_wait
        )

    def _next_due(self) -> float | None:
        heads = [  # background groups wait for the interactive ones, which wake us anyway
            items[0].submitted
            for key, items in self._groups.items()
            if items and not (self._pending and key in self._background)
        ]
        return min(heads) + self.max_wait if heads else None

    def _take_ready(self, now: float) -> tuple[K, list[_Item[T, R]]] | _Item[T, R] | None:
        """The ready group whose oldest item waited longest (interactive groups before
        background ones), up to its batch limit of live items; or the stepwise item whose last
        step is longest ago, when that was before every ready group's oldest item came."""
        self._drop_abandoned_steps()
        ready: list[tuple[bool, float, int, K | None]] = [
            (key in self._background, items[0].submitted, 1, key)
            for key, items in self._groups.items()
            if items and self._is_ready(key, items, now)
        ]
        first: dict[bool, _Item[T, R]] = {}  # the round robin's head of each kind
        for item in self._stepping:
            first.setdefault(item.background, item)
        ready += [
            (background, item.turn, 0, None)
            for background, item in first.items()
            if not (background and self._pending)
        ]
        if not ready:
            return None
        background, _, is_group, key = min(ready, key=lambda entry: entry[:3])
        if not is_group:
            return self._next_stepwise(background)
        assert key is not None
        items = self._groups[key]
        taken: list[_Item[T, R]] = []
        wall = time.time()
        while items and len(taken) < self._limit(key):
            item = items.popleft()
            if background:
                self._background_pending -= 1
            else:
                self._pending -= 1
            if not item.future.set_running_or_notify_cancel():
                item.finish()
                continue  # the caller gave up (its deadline passed, or it disconnected)
            if item.deadline is not None and wall > item.deadline:
                item.future.set_exception(DeadlineExceeded("the deadline passed in the queue"))
                item.finish()
                continue
            taken.append(item)
        if not items:
            del self._groups[key]
            self._alone.discard(key)
            self._background.discard(key)
        if not taken:
            return self._take_ready(now)
        return key, taken

    def _next_stepwise(self, background: bool) -> _Item[T, R]:
        """Take the first stepwise item of that kind out of the round robin."""
        for item in self._stepping:
            if item.background == background:
                self._stepping.remove(item)
                return item
        raise AssertionError("no stepwise item of that kind")

    def _drop_abandoned_steps(self) -> None:
        """Stepwise items nobody waits for any more: cancelled, or past their deadline."""
        wall = time.time()
        for item in list(self._stepping):
            if item.future.cancelled():
                error = None
            elif item.deadline is not None and wall > item.deadline:
                error = DeadlineExceeded("the deadline passed before the engine finished")
            else:
                continue
            self._stepping.remove(item)
            self._count_out(item)
            if error is not None and item.future.set_running_or_notify_cancel():
                item.future.set_exception(error)
            self._release_steps(item)
            item.finish()

    @staticmethod
    def _release_steps(item: _Item[T, R]) -> None:
        """Free a dropped item's work before its ``on_done`` says its memory is free."""
        steps, item.steps = item.steps, None
        if steps is not None:
            steps.close()

    def _count_out(self, item: _Item[T, R]) -> None:
        if item.background:
            self._background_pending -= 1
        else:
            self._pending -= 1

    def _step(self, item: _Item[T, R]) -> None:
        """One step of a stepwise item; back into the round robin unless it is finished."""
        assert item.steps is not None
        started = time.monotonic()
        if item.started is None:
            item.started = started
        error: Exception | None = None
        try:
            item.steps.step()
        except Exception as exc:  # its own failure: the other requests go on
            error = exc
        item.run_seconds += time.monotonic() - started
        with self._cond:
            if error is None and not item.steps.done:
                item.turn = time.monotonic()
                self._stepping.append(item)
                return
            self._count_out(item)
        if item.future.set_running_or_notify_cancel():
            if error is not None:
                item.future.set_exception(error)
            else:
                item.future.set_result(
                    Batched(
                        item.steps.result(),
                        item.steps.tiles_per_step,
                        item.started - item.submitted,
                        item.run_seconds,
                    )
                )
        self._release_steps(item)
        item.finish()

    def _execute(self, key: K, items: list[_Item[T, R]]) -> None:
        started = time.monotonic()
        try:
            results = list(self._run(key, [item.value for item in items]))
            if len(results) != len(items):
                raise RuntimeError(f"run returned {len(results)} results for {len(items)} items")
        except Exception as exc:  # the batch failed as a whole: every item learns why
            results = [exc] * len(items)
        seconds = time.monotonic() - started
        for item, result in zip(items, results, strict=True):
            if isinstance(result, Exception):
                item.future.set_exception(result)
            else:
                item.future.set_result(
                    Batched(result, len(items), started - item.submitted, seconds)
                )
            item.finish()
