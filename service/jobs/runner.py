"""Who runs the chunks: threads in the server (embedded) or Celery workers (distributed).

Embedded: :class:`EmbeddedRunner` claims chunks from the SQLite store in the ``unpaired
serve`` process, with the server's own translator; chunks a stopped server left running are
queued again at start. Distributed: :class:`CeleryDispatcher` publishes one task per chunk on
the bulk queue, and :func:`register_bulk_task` is what every ``unpaired worker`` runs. Both
retry a chunk that failed for a passing reason with backoff and, after the last attempt,
record its images as failed, so a job always finishes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, Final, Protocol

from celery import Celery, Task
from redis.exceptions import RedisError

from ..threads import lower_thread_priority
from ..translation import LocalTranslator
from .chunks import TransientChunkError, run_chunk
from .records import ChunkOutcome, Item, ItemError
from .sqlite_store import SqliteJobStore
from .store import JobStore

__all__ = [
    "BULK_TASK",
    "BulkSlots",
    "CeleryDispatcher",
    "Dispatcher",
    "EmbeddedRunner",
    "register_bulk_task",
]

log = logging.getLogger("unpaired.jobs")

BULK_TASK: Final = "unpaired.bulk_chunk"


class Dispatcher(Protocol):
    def dispatch(self, job_id: str, chunks: Sequence[int]) -> None: ...


def backoff(attempt: int, cap: float) -> float:
    """Seconds before attempt `attempt + 1`: 1, 2, 4, ... up to `cap`."""
    return float(min(cap, 2**attempt))


def gave_up(items: Sequence[Item], attempts: int, exc: BaseException) -> ChunkOutcome:
    reason = f"gave up after {attempts} attempts: {exc}"
    return ChunkOutcome(written=[], failed=[ItemError(item.name, reason) for item in items])


def execute(
    store: JobStore, job_id: str, index: int, translator: LocalTranslator
) -> ChunkOutcome | None:
    """Run one chunk and record its outcome; None when it must not run (cancelled, done).
    Raises TransientChunkError (or a Redis error) for the caller to retry."""
    spec = store.start_chunk(job_id, index)
    if spec is None:
        return None
    items = store.chunk_items(job_id, index)
    outcome = run_chunk(spec, items, translator)
    store.finish_chunk(job_id, index, outcome)
    return outcome


class EmbeddedRunner:
    """Chunk threads inside ``unpaired serve`` (two, so one chunk reads and decodes while
    another's images are in the engine)."""

    def __init__(
        self,
        store: SqliteJobStore,
        translator: LocalTranslator,
        *,
        retries: int,
        threads: int = 2,
        backoff_cap: float = 30.0,
    ) -> None:
        self.store = store
        self.translator = translator
        self.retries = retries
        self.backoff_cap = backoff_cap
        self._wake = threading.Condition()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"job-runner-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        resumed = self.store.requeue_running()
        if resumed:
            log.info("resuming %d chunk(s) left running by the previous server", resumed)
        for thread in self._threads:
            thread.start()

    def dispatch(self, job_id: str, chunks: Sequence[int]) -> None:
        with self._wake:
            self._wake.notify_all()

    def close(self, timeout: float | None = None) -> None:
        """Start no new chunk; wait for the running ones (their outcome is recorded)."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self) -> None:
        lower_thread_priority()  # these threads only ever run bulk work
        while True:
            with self._wake:
                if self._stopping:
                    return
            claim = self.store.claim_chunk()
            if claim is None:
                due = self.store.next_due()
                with self._wake:
                    if not self._stopping:
                        wait = 5.0 if due is None else max(0.05, min(5.0, due - time.time()))
                        self._wake.wait(wait)
                continue
            self._run(*claim)

    def _run(self, job_id: str, index: int, attempts: int) -> None:
        try:
            execute(self.store, job_id, index, self.translator)
        except TransientChunkError as exc:
            if attempts >= self.retries:
                log.warning("chunk %s/%d failed for good: %s", job_id, index, exc)
                items = self.store.chunk_items(job_id, index)
                self.store.finish_chunk(job_id, index, gave_up(items, attempts + 1, exc))
            else:
                delay = backoff(attempts, self.backoff_cap)
                log.info("chunk %s/%d will run again in %.0f s: %s", job_id, index, delay, exc)
                self.store.retry_chunk(job_id, index, time.time() + delay)
        except Exception:  # a bug: record it rather than lose the chunk or the thread
            log.exception("chunk %s/%d crashed", job_id, index)
            items = self.store.chunk_items(job_id, index)
            self.store.finish_chunk(
                job_id, index, gave_up(items, attempts + 1, RuntimeError("internal error"))
            )


class CeleryDispatcher:
    """The API side of distributed mode: one bulk-queue task per chunk."""

    def __init__(self, app: Celery, queue: str) -> None:
        self.app = app
        self.queue = queue

    def dispatch(self, job_id: str, chunks: Sequence[int]) -> None:
        with self.app.producer_or_acquire() as producer:
            for index in chunks:
                self.app.send_task(
                    BULK_TASK, args=[job_id, index], queue=self.queue, producer=producer
                )


class BulkSlots:
    """At most `slots` chunks running at a time in one worker, and few more held.

    Every chunk a worker holds takes one of its prefetch slots for the whole chunk, and a
    worker whose slots are all chunks takes no interactive message until one ends. So a worker
    holding `slots` chunks stops consuming the bulk queue (Celery's ``cancel_consumer``, sent
    to itself) and consumes it again when it holds fewer (``add_consumer``): the rest of the
    bulk queue waits in Redis for any worker with room, and interactive requests always find
    free slots here. Messages taken before a pause arrived wait for a running slot (a thread,
    no CPU). Control messages are sent under the lock, so they arrive in order.
    """

    def __init__(self, app: Celery, queue: str, slots: int) -> None:
        self.app = app
        self.queue = queue
        self.slots = slots
        self.held = 0
        self._running = threading.Semaphore(slots)
        self._paused = False
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, hostname: str) -> Iterator[None]:
        with self._lock:
            self.held += 1
            if self.held >= self.slots and not self._paused:
                self._paused = self._send("cancel_consumer", hostname)
        try:
            with self._running:
                yield
        finally:
            self._release(hostname)

    def _release(self, hostname: str) -> None:
        with self._lock:
            self.held -= 1
        self._resume(hostname)

    def _resume(self, hostname: str) -> None:
        """Consume the bulk queue again if paused with room; never stay deaf to it: when the
        control message cannot be sent, try again shortly."""
        with self._lock:
            if not (self._paused and self.held < self.slots):
                return
            self._paused = not self._send("add_consumer", hostname)
            if self._paused:
                timer = threading.Timer(1.0, self._resume, args=(hostname,))
                timer.daemon = True
                timer.start()

    def _send(self, command: str, hostname: str) -> bool:
        try:
            getattr(self.app.control, command)(self.queue, destination=[hostname])
        except Exception as exc:  # Redis away: the chunk itself will notice and retry
            log.warning("could not %s %s on %s: %s", command, self.queue, hostname, exc)
            return False
        return True


def register_bulk_task(
    app: Celery,
    store: JobStore,
    translator: LocalTranslator,
    *,
    retries: int,
    backoff_cap: float,
    slots: BulkSlots | None = None,
) -> Task:
    """The worker side: run a chunk; retry a passing failure with backoff, then give up on
    its images (recorded as failed) so the job still finishes. With `slots`, the worker
    takes no new chunk while it runs as many as they allow."""

    @app.task(
        name=BULK_TASK,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        max_retries=retries,
    )
    def bulk_chunk(self: Task, job_id: str, index: int) -> dict[str, Any]:
        try:
            with slots.hold(self.request.hostname) if slots else nullcontext():
                outcome = execute(store, job_id, index, translator)
        except (TransientChunkError, RedisError) as exc:
            attempts = self.request.retries
            if attempts >= retries:
                items = store.chunk_items(job_id, index)
                store.finish_chunk(job_id, index, gave_up(items, attempts + 1, exc))
                return {"gave_up": str(exc)}
            raise self.retry(exc=exc, countdown=backoff(attempts, backoff_cap)) from exc
        if outcome is None:
            return {"skipped": True}
        return {"written": len(outcome.written), "failed": len(outcome.failed)}

    return bulk_chunk
