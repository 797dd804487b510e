"""The bulk-job task every ``unpaired worker`` runs: one chunk of a job per message.

A chunk runs through the worker's own translator, behind its interactive requests; what an
attempt records and when it is retried is :func:`service.jobs.attempts.attempt_chunk`, as in
embedded mode, so a chunk that crashes still ends its job. :class:`BulkSlots` keeps a worker
from filling its prefetch slots with chunks.

A chunk can run longer than the visibility timeout (a clip runs for minutes), and Redis then
hands its message to a worker again while the first run goes on. The copy must neither run the
chunk a second time nor count the live run as one whose process died (a clip would soon be
failed as poison): a run holds a lease on its chunk (:mod:`service.distributed.run_claims`),
and the copy waits for it; only a lease that lapses (its holder died) lets the copy run.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from celery import Celery, Task

from service.distributed.messages import BULK_TASK
from service.distributed.run_claims import RunClaims
from service.inference.local_translator import LocalTranslator
from service.jobs.attempts import ChunkPolicy, RetryLater, attempt_chunk
from service.jobs.job_store import JobStore
from service.jobs.records import ChunkOutcome
from service.jobs.video_items import FramesFor

__all__ = ["BulkSlots", "register_bulk_task"]

log = logging.getLogger("unpaired.jobs")


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
    policy: ChunkPolicy,
    claims: RunClaims,
    slots: BulkSlots | None = None,
    frames_for: FramesFor | None = None,
) -> Task:
    """The worker side: run a chunk, retrying a passing failure with Celery's countdown. With
    `slots`, the worker takes no new chunk while it runs as many as they allow."""

    @app.task(
        name=BULK_TASK,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
    )
    def bulk_chunk(self: Task, job_id: str, index: int) -> dict[str, Any]:
        claim = f"chunk:{job_id}:{index}"
        claims.acquire(claim, deadline=math.inf)  # a live run of this chunk: wait for its end
        try:
            with slots.hold(self.request.hostname) if slots else nullcontext():
                result = _until_settled(
                    store, job_id, index, translator, policy, self.request.retries, frames_for
                )
        finally:
            claims.release(claim)
        if result is None:
            return {"skipped": True}
        return {"written": len(result.written), "failed": len(result.failed)}

    return bulk_chunk


def _until_settled(
    store: JobStore,
    job_id: str,
    index: int,
    translator: LocalTranslator,
    policy: ChunkPolicy,
    retries: int,
    frames_for: FramesFor | None,
) -> ChunkOutcome | None:
    """Attempts at the chunk until one is recorded (or it must not run), waiting out each
    retry here: Celery's retry publishes a new message, which fails while Redis is away and
    then drops this one (`Reject(requeue=False)`), losing the chunk. Waiting holds a slot, not
    a CPU; the message stays unacknowledged, so a worker that dies meanwhile hands it back."""
    while True:
        result = attempt_chunk(
            store,
            job_id,
            index,
            translator,
            attempt=retries,
            policy=policy,
            frames_for=frames_for,
        )
        if not isinstance(result, RetryLater):
            return result
        retries += result.counted
        time.sleep(result.delay)  # the backoff itself
