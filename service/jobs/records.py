"""What a bulk job is: its immutable spec, its items and chunks, and its status as reported.

Both job stores (Redis in distributed mode, SQLite in embedded mode) keep exactly these
records, so the API, the workers and the CLI see one shape whatever the mode.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "TERMINAL",
    "ChunkOutcome",
    "Item",
    "ItemError",
    "JobSpec",
    "JobState",
    "JobStatus",
    "final_state",
]


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIALLY_FAILED = "partially_failed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset(
    {JobState.SUCCEEDED, JobState.PARTIALLY_FAILED, JobState.FAILED, JobState.CANCELLED}
)


def final_state(total: int, failed: int) -> JobState:
    """Once every item has an outcome: all good, some failed, or all failed."""
    if failed == 0:
        return JobState.SUCCEEDED
    return JobState.FAILED if failed >= total else JobState.PARTIALLY_FAILED


@dataclass(frozen=True)
class Item:
    """One image of a job: where it is read (relative to the job's inputs) and written
    (relative to its outputs). Names are the job's own, so reruns write the same files."""

    name: str
    output: str

    def to_list(self) -> list[str]:
        return [self.name, self.output]

    @classmethod
    def from_list(cls, value: list[str]) -> Item:
        return cls(value[0], value[1])


@dataclass(frozen=True)
class ItemError:
    item: str
    error: str


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """What the job does; fixed at submission."""

    id: str
    model: str
    direction: str
    format: str
    quality: int
    owner: str
    inputs: str  # folder or fsspec URL the items' names are relative to
    outputs: str  # folder or fsspec URL outputs are written under
    source: str | None = None  # the caller's source location, when given
    destination: str | None = None  # the caller's destination, when given
    total: int  # items, including entries refused at intake
    chunks: int
    created_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ChunkOutcome:
    """What one chunk did: items written (name, output) and items that failed."""

    written: list[Item]
    failed: list[ItemError]


@dataclass(frozen=True, kw_only=True)
class JobStatus:
    spec: JobSpec
    state: JobState
    done: int
    failed: int
    started_at: float | None
    finished_at: float | None
    errors: list[ItemError]  # the first `errors_limit` failures, in no particular order
    writing: int = 0  # chunks started and not yet recorded (JobManager fills it in)
    frames: int = 0  # frames of the job's clips translated so far

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    def throughput(self, now: float | None = None) -> float | None:
        """Items per second since the first chunk started."""
        if self.started_at is None:
            return None
        elapsed = (self.finished_at or now or time.time()) - self.started_at
        processed = self.done + self.failed
        return processed / elapsed if elapsed > 0 and processed else None

    def eta_seconds(self, now: float | None = None) -> float | None:
        if self.finished:
            return 0.0
        rate = self.throughput(now)
        remaining = self.spec.total - self.done - self.failed
        return remaining / rate if rate else None
