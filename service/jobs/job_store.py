"""Where job state lives: the contract both job stores keep.

:class:`~service.jobs.sqlite_job_store.SqliteJobStore` (embedded mode, one server process) and
:class:`~service.jobs.redis_job_store.RedisJobStore` (distributed mode, any number of API
processes and workers) behave the same, and one test suite checks both. The rules:

- recording a chunk's outcome is idempotent: a chunk that runs twice (a worker died after
  writing, the message came back) counts its items once;
- a cancelled job starts no new chunk; chunks already finished keep their outputs;
- the job's final state is set by the chunk that completes it, atomically with its counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from service.jobs.records import ChunkOutcome, Item, ItemError, JobSpec, JobStatus

__all__ = ["ERRORS_LIMIT", "JobStore"]

#: Failures listed in a job's status (the counts are always complete).
ERRORS_LIMIT = 1000


class JobStore(Protocol):
    def create(
        self, spec: JobSpec, chunks: Sequence[Sequence[Item]], refused: Sequence[ItemError]
    ) -> JobStatus:
        """Record a new job; `refused` are entries that failed at intake (bad archive members)."""
        ...

    def get(self, job_id: str, errors_limit: int = ERRORS_LIMIT) -> JobStatus | None: ...

    def page(self, owner: str | None, limit: int, before: float | None) -> list[JobStatus]:
        """Newest first, created before `before`; only `owner`'s unless None. No errors."""
        ...

    def chunk_items(self, job_id: str, index: int) -> list[Item]: ...

    def start_chunk(self, job_id: str, index: int) -> JobSpec | None:
        """The spec if the chunk should run now (marks the job running); None when the job is
        gone or cancelled or this chunk's outcome is already recorded."""
        ...

    def finish_chunk(self, job_id: str, index: int, outcome: ChunkOutcome) -> None: ...

    def cancel(self, job_id: str) -> JobStatus | None: ...

    def written(self, job_id: str) -> list[Item]:
        """Items with an output, sorted by output name."""
        ...

    def running_chunks(self, job_id: str) -> int:
        """Chunks started and not yet recorded (a cancelled job's last ones may still run)."""
        ...

    def unfinished_chunks(self, job_id: str) -> list[int]: ...

    def expired(self, finished_before: float) -> list[str]:
        """Jobs that finished before this time (their files and records can go)."""
        ...

    def delete(self, job_id: str) -> None: ...

    def mark_dispatched(self, job_id: str) -> None:
        """Every chunk of the job has been handed to the runner or the queue."""
        ...

    def undispatched(self, created_before: float) -> list[str]:
        """Jobs created before this time whose chunks were never all handed over (the API
        stopped in between): the sweep hands them over again, harmlessly if twice."""
        ...

    # processes that died translating a chunk (service.jobs.poison)

    def begin_attempt(self, job_id: str, index: int) -> int:
        """An attempt at the chunk begins; how many earlier attempts began and never ended
        (their process died), this one's predecessor included."""
        ...

    def end_attempt(self, job_id: str, index: int) -> None:
        """The attempt ended (recorded, or to be retried): its process did not die in it."""
        ...

    def begin_careful(self, job_id: str, index: int) -> dict[str, int]:
        """An image-by-image attempt at the chunk begins: the image the last such attempt was
        translating when its process died is charged with that death. Each charged image's
        deaths."""
        ...

    def translating(self, job_id: str, index: int, item: str | None) -> None:
        """The image an image-by-image attempt translates now (None: none)."""
        ...

    def frames_done(self, job_id: str, item: str, frames: int) -> None:
        """A clip of the job has `frames` frames translated so far (set, not added: an
        attempt that runs the clip again counts from its start). Ignored for a job that is
        gone."""
        ...
