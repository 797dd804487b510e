"""Bulk jobs as the API sees them: submit, inspect, list, cancel, collect, clean up.

One :class:`JobManager` serves both modes; only its store (SQLite or Redis) and its
:class:`Dispatcher` (the in-process runner, or Celery's bulk queue) differ. Calls are blocking
(file and Redis I/O): the API runs them in its thread pool.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from service.errors import IntakeError, JobNotFinished, JobNotFound
from service.inference.requests import OutputSpec
from service.jobs.intake import Intake
from service.jobs.job_store import JobStore
from service.jobs.records import JobSpec, JobState, JobStatus
from service.jobs.storage import JobFiles, Storage
from service.settings import Settings

__all__ = ["Dispatcher", "JobManager", "JobRequest"]

log = logging.getLogger("unpaired.jobs")

#: A submission still queueing its chunks after this long has died half-way.
DISPATCH_GRACE_S = 60.0


class Dispatcher(Protocol):
    """Hands a job's chunks to whoever runs them (the embedded runner, or the bulk queue)."""

    def dispatch(self, job_id: str, chunks: Sequence[int]) -> None: ...


@dataclass(frozen=True, kw_only=True)
class JobRequest:
    model: str  # canonical name
    direction: str
    output: OutputSpec
    owner: str
    source: str | None = None
    destination: str | None = None


class JobManager:
    def __init__(
        self,
        store: JobStore,
        files: JobFiles,
        dispatcher: Dispatcher,
        *,
        chunk_size: int,
        max_items: int,
        retention_s: float,
        video_suffix: str = ".mp4",
    ) -> None:
        self.store = store
        self.files = files
        self.dispatcher = dispatcher
        self.chunk_size = chunk_size
        self.max_items = max_items
        self.retention_s = retention_s
        self.video_suffix = video_suffix

    @classmethod
    def from_settings(
        cls, settings: Settings, store: JobStore, files: JobFiles, dispatcher: Dispatcher
    ) -> JobManager:
        return cls(
            store,
            files,
            dispatcher,
            chunk_size=settings.chunk_size,
            max_items=settings.max_job_items,
            retention_s=settings.job_retention_s,
            video_suffix="." + settings.video_container,
        )

    def submit(
        self, request: JobRequest, add_inputs: Callable[[Intake], None] | None = None
    ) -> JobStatus:
        """Create the job and queue its chunks. Uploads are written by `add_inputs`; with
        a `source` the images are read in place. Raises LocationError, IntakeError,
        ArchiveError for a submission that cannot become a job (nothing is left behind)."""
        job_id = uuid.uuid4().hex
        if request.source is not None:
            inputs = self.files.allowed(request.source, must_exist=True)
        else:
            inputs = self.files.inputs_url(job_id)
        outputs = (
            self.files.allowed(request.destination, must_exist=False)
            if request.destination is not None
            else self.files.outputs_url(job_id)
        )
        intake = Intake(
            Storage(inputs), request.output.suffix, self.max_items, video_suffix=self.video_suffix
        )
        try:
            if request.source is not None:
                intake.add_existing(Storage(inputs).images())
            elif add_inputs is not None:
                add_inputs(intake)
            if intake.total == 0:
                raise IntakeError(
                    "nothing to convert: the submission holds no files (an empty archive, or a "
                    "source folder without images)"
                )
            chunks = list(intake.chunks(self.chunk_size))
            spec = JobSpec(
                id=job_id,
                model=request.model,
                direction=request.direction,
                format=request.output.format,
                quality=request.output.quality,
                owner=request.owner,
                inputs=inputs,
                outputs=outputs,
                source=request.source,
                destination=request.destination,
                total=intake.total,
                chunks=len(chunks),
            )
            status = self.store.create(spec, chunks, intake.refused)
        except BaseException:
            self.files.remove_job(job_id)
            raise
        if chunks:
            self.dispatcher.dispatch(job_id, range(len(chunks)))
            self.store.mark_dispatched(job_id)
        log.info(
            "job %s: %d image(s) in %d chunk(s), %d refused",
            job_id,
            len(intake.items),
            len(chunks),
            len(intake.refused),
            extra={"job": job_id, "model": request.model, "direction": request.direction},
        )
        return status

    def get(self, job_id: str, owner: str | None) -> JobStatus:
        status = self.store.get(job_id) if _plausible(job_id) else None
        if status is None or (owner is not None and status.spec.owner != owner):
            raise JobNotFound(f"no job {job_id!r}")
        return self._with_writing(status)

    def page(self, owner: str | None, limit: int, before: float | None) -> list[JobStatus]:
        return [self._with_writing(s) for s in self.store.page(owner, limit, before)]

    def _with_writing(self, status: JobStatus) -> JobStatus:
        """The status with its chunks still writing: a cancelled job's counts and outputs are
        final once none is."""
        if status.state not in (JobState.RUNNING, JobState.CANCELLED):
            return status  # nothing started yet, or every chunk recorded
        return replace(status, writing=self.store.running_chunks(status.spec.id))

    def finished(self, job_id: str, owner: str | None) -> JobStatus:
        """The job, once it has ended; :class:`JobNotFinished` while it is queued or running."""
        status = self.get(job_id, owner)
        if not status.finished:
            raise JobNotFinished(
                f"job {job_id} is {status.state.value}; wait until it ends (or cancel it)"
            )
        return status

    def cancel(self, job_id: str, owner: str | None) -> JobStatus:
        """No new chunk starts; images already converted stay. A finished job is unchanged."""
        self.get(job_id, owner)
        status = self.store.cancel(job_id)
        if status is None:
            raise JobNotFound(f"no job {job_id!r}")
        return self._with_writing(status)

    def delete(self, job_id: str, owner: str | None) -> None:
        """Forget a finished job with its uploaded inputs and its outputs (those written to a
        caller's `destination`, and a `source`, stay where they are). A cancelled job whose
        last chunks are still running is not finished with its files yet: refused until then."""
        self.finished(job_id, owner)
        if self.store.running_chunks(job_id):
            raise JobNotFinished(
                f"job {job_id} is cancelled, but its last images are still being written; "
                "retry in a moment"
            )
        self.files.remove_job(job_id)
        self.store.delete(job_id)
        log.info("job %s deleted", job_id, extra={"job": job_id})

    def sweep(self, now: float | None = None) -> int:
        """Hand over the chunks of jobs whose submission stopped half-way (the API died
        between recording and queueing them); forget jobs finished longer than the retention
        period ago, with their files (outputs in a caller's destination stay)."""
        now = now or time.time()
        for job_id in self.store.undispatched(now - DISPATCH_GRACE_S):
            log.warning("job %s: queueing chunks its submission did not", job_id)
            self.dispatcher.dispatch(job_id, self.store.unfinished_chunks(job_id))
            self.store.mark_dispatched(job_id)
        expired = self.store.expired(now - self.retention_s)
        for job_id in expired:
            self.files.remove_job(job_id)
            self.store.delete(job_id)
        if expired:
            log.info("removed %d expired job(s)", len(expired))
        return len(expired)


def _plausible(job_id: str) -> bool:
    return len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)
