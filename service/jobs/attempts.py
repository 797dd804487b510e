"""One attempt at a chunk, and the rule for what follows it, shared by both runners.

The embedded runner (:mod:`service.jobs.embedded_runner`) and the Celery bulk task
(:mod:`service.distributed.bulk_task`) differ only in how they wait before a retry. Everything
else is decided here, so a job ends the same way in both modes:

- the chunk's outcome is recorded: done (each image written or failed on its own);
- a storage failure that may pass, with attempts left: nothing is recorded, the caller
  retries after :func:`backoff`;
- that failure on the last attempt, or any other exception (a bug): every image of the chunk
  is recorded as failed with the reason, so the job still finishes (``partially_failed`` or
  ``failed``) instead of staying ``running`` for ever;
- the job store (Redis) away: nothing can be recorded, not even a give-up, so the caller
  waits and tries again without counting it as a retry (the chunk is never dropped).
Each attempt is marked begun and ended in the store, so one whose process died is known to
the next (:mod:`service.jobs.poison`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from redis.exceptions import RedisError

from service import failpoints
from service.inference.local_translator import LocalTranslator
from service.jobs.chunks import TransientChunkError, run_chunk
from service.jobs.job_store import JobStore
from service.jobs.poison import run_carefully
from service.jobs.records import ChunkOutcome, ItemError, JobState
from service.jobs.video_items import FramesFor
from service.settings import Settings

__all__ = ["ChunkPolicy", "RetryLater", "attempt_chunk", "backoff"]

log = logging.getLogger("unpaired.jobs")

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class ChunkPolicy:
    """How often a chunk is tried again, and how long is waited in between."""

    retries: int  # a failure that may pass: attempts after the first (UNPAIRED_CHUNK_RETRIES)
    backoff_cap: float  # the longest wait before a retry, seconds
    poison_attempts: int  # deaths of its process an image may cause (UNPAIRED_POISON_ATTEMPTS)

    @classmethod
    def from_settings(cls, settings: Settings, *, backoff_cap: float) -> ChunkPolicy:
        return cls(
            retries=settings.chunk_retries,
            backoff_cap=backoff_cap,
            poison_attempts=settings.poison_attempts,
        )


@dataclass(frozen=True)
class RetryLater:
    """Run the chunk again after `delay` seconds; nothing was recorded. Not `counted` as a
    retry when the job store itself was away (nothing could be recorded, not even a give-up)."""

    delay: float
    reason: Exception
    counted: bool = True


def backoff(attempt: int, cap: float) -> float:
    """Seconds before attempt `attempt + 1`: 1, 2, 4, ... up to `cap`."""
    return float(min(cap, 2**attempt))


def attempt_chunk(
    store: JobStore,
    job_id: str,
    index: int,
    translator: LocalTranslator,
    *,
    attempt: int,
    policy: ChunkPolicy,
    frames_for: FramesFor | None = None,
) -> ChunkOutcome | RetryLater | None:
    """Attempt at one chunk after `attempt` retries. The recorded outcome, a
    :class:`RetryLater`, or None when the chunk must not run (its job is cancelled or gone, or
    it ran already). A chunk whose process died before runs image by image
    (:mod:`service.jobs.poison`)."""
    where = f"chunk {job_id}/{index}"
    try:
        return _attempt(
            store, job_id, index, translator, attempt=attempt, policy=policy, frames_for=frames_for
        )
    except RedisError as exc:  # the job store is away: wait for it, recording nothing
        delay = backoff(policy.retries, policy.backoff_cap)
        log.info("%s waits %.0f s for the job store: %s", where, delay, exc)
        return RetryLater(delay, exc, counted=False)


def _attempt(
    store: JobStore,
    job_id: str,
    index: int,
    translator: LocalTranslator,
    *,
    attempt: int,
    policy: ChunkPolicy,
    frames_for: FramesFor | None,
) -> ChunkOutcome | RetryLater | None:
    where = f"chunk {job_id}/{index}"
    spec = store.start_chunk(job_id, index)
    if spec is None:
        return None
    died = store.begin_attempt(job_id, index)  # earlier attempts that never ended
    try:
        failpoints.hit("chunk", f"{job_id}/{index}", error=TransientChunkError)
        items = store.chunk_items(job_id, index)
        stopped = partial(_stopped, store, job_id)
        progress = partial(_frames, store, job_id)
        if died:
            log.warning("%s: its process died %d time(s); image by image now", where, died)
            outcome = run_carefully(
                store,
                spec,
                index,
                items,
                translator,
                should_stop=stopped,
                poison_attempts=policy.poison_attempts,
                on_frames=progress,
                frames_for=frames_for,
            )
        else:
            outcome = run_chunk(
                spec,
                items,
                translator,
                should_stop=stopped,
                on_frames=progress,
                frames_for=frames_for,
            )
        store.finish_chunk(job_id, index, outcome)
    except TransientChunkError as exc:
        if attempt < policy.retries:
            delay = backoff(attempt, policy.backoff_cap)
            log.info("%s will run again in %.0f s: %s", where, delay, exc)
            return _ended(store, job_id, index, RetryLater(delay, exc))
        log.warning("%s failed for good: %s", where, exc)
        reason = f"gave up after {attempt + 1} attempts: {exc}"
        return _ended(store, job_id, index, _give_up(store, job_id, index, reason))
    except RedisError:
        raise  # the store is away (attempt_chunk waits for it)
    except Exception as exc:  # a bug: record it rather than lose the chunk (and its job)
        log.exception("%s crashed", where)
        reason = f"internal error: {type(exc).__name__}: {exc}"
        return _ended(store, job_id, index, _give_up(store, job_id, index, reason))
    return _ended(store, job_id, index, outcome)


def _ended(store: JobStore, job_id: str, index: int, result: T) -> T:
    """The attempt ended (its process did not die in it): say so, then pass `result` on."""
    store.end_attempt(job_id, index)
    return result


def _frames(store: JobStore, job_id: str, item: str, frames: int) -> None:
    """A clip's progress; a store away for a moment only delays the count (the next batch
    sets it again)."""
    try:
        store.frames_done(job_id, item, frames)
    except RedisError as exc:
        log.info("job %s: frames of %s not counted: %s", job_id, item, exc)


def _stopped(store: JobStore, job_id: str) -> bool:
    """The job was cancelled or deleted while its chunk runs: nobody wants its outputs."""
    try:
        status = store.get(job_id, errors_limit=0)
    except Exception:  # the store is away for a moment: keep working
        return False
    return status is None or status.state is JobState.CANCELLED


def _give_up(store: JobStore, job_id: str, index: int, reason: str) -> ChunkOutcome:
    items = store.chunk_items(job_id, index)
    outcome = ChunkOutcome(written=[], failed=[ItemError(item.name, reason) for item in items])
    store.finish_chunk(job_id, index, outcome)
    return outcome
