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
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from service.errors import BatcherClosed, DeadlineExceeded, QueueFull

__all__ = ["Batched", "MicroBatcher"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


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
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait < 0:
            raise ValueError(
                f"need max_batch >= 1, max_queue >= 1, max_wait >= 0; got {max_batch}, "
                f"{max_queue}, {max_wait}"
            )
        self._run = run
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.background_batch = min(background_batch or max_batch, max_batch)
        self._groups: OrderedDict[K, deque[_Item[T, R]]] = OrderedDict()
        self._alone: set[K] = set()  # keys whose items never wait for company
        self._background: set[K] = set()  # keys of background groups
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
    ) -> Future[Batched[R]]:
        """Queue one item; ``alone`` items (e.g. tiled large images) run without waiting;
        ``background`` ones run when no interactive item waits. A key is either kind."""
        item: _Item[T, R] = _Item(value, deadline)
        with self._cond:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            if not background and self._pending >= self.max_queue:
                raise QueueFull(f"{self._pending} requests are already waiting")
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

    def close(self, timeout: float | None = None) -> None:
        """Take no new items, finish the queued ones, stop the dispatcher thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    # --- dispatcher thread --------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    batch = self._take_ready(now)
                    if batch is not None:
                        break
                    if self._closed and not self._groups:
                        return
                    due = self._next_due()
                    self._cond.wait(None if due is None else max(0.0, due - now))
            self._execute(*batch)

    def _limit(self, key: K) -> int:
        return self.background_batch if key in self._background else self.max_batch

    def _is_ready(self, key: K, items: deque[_Item[T, R]], now: float) -> bool:
        if key in self._background and self._pending:
            return False  # interactive items first, even those still waiting for company
        return (
            self._closed
            or key in self._alone
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

    def _take_ready(self, now: float) -> tuple[K, list[_Item[T, R]]] | None:
        """The ready group whose oldest item waited longest (interactive groups before
        background ones), up to its batch limit of live items."""
        ready = [
            (key in self._background, items[0].submitted, key)
            for key, items in self._groups.items()
            if items and self._is_ready(key, items, now)
        ]
        if not ready:
            return None
        background, _, key = min(ready, key=lambda entry: entry[:2])
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
                continue  # the caller gave up (its deadline passed, or it disconnected)
            if item.deadline is not None and wall > item.deadline:
                item.future.set_exception(DeadlineExceeded("the deadline passed in the queue"))
                continue
            taken.append(item)
        if not items:
            del self._groups[key]
            self._alone.discard(key)
            self._background.discard(key)
        if not taken:
            return self._take_ready(now)
        return key, taken

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
