"""Bodies of the ``/v1/jobs`` endpoints (the OpenAPI schema is generated from these)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.jobs.records import JobStatus

__all__ = ["DIRECTION_SCHEMA", "JobCreate", "JobList", "JobOptions", "JobOutputs", "JobView"]

StateName = Literal["queued", "running", "succeeded", "partially_failed", "failed", "cancelled"]


#: ``direction`` as the OpenAPI document states it: required (a model with two directions
#: needs it, and a schema cannot tell models apart), though a one-way model takes it left out.
DIRECTION_SCHEMA: Final[dict[str, Any]] = {
    "type": "string",
    "enum": ["AtoB", "BtoA"],
    "description": "AtoB (G: X->Y) or BtoA (F: Y->X); a model with one direction also takes "
    "it left out",
}


def _direction_required(schema: dict[str, Any]) -> None:
    schema["properties"]["direction"] = DIRECTION_SCHEMA
    schema["required"] = [*schema.get("required", []), "direction"]


class JobOptions(BaseModel):
    """What every job names: the model, the direction, the outputs' format and place."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_direction_required)

    model: str = Field(description="model name or alias", examples=["day2night"])
    direction: Literal["AtoB", "BtoA"] | None = Field(
        None, description="optional for one-way models"
    )
    format: Literal["png", "jpeg", "jpg", "webp"] = "png"
    quality: int = Field(95, ge=1, le=100)
    destination: str | None = Field(
        None,
        description="where outputs go (inside UNPAIRED_JOBS_ROOTS); default: the job's folder, "
        "downloadable as a zip",
        examples=["/data/photos/2026-night"],
    )


class JobCreate(JobOptions):
    """A job over images already in storage (JSON body); uploads use multipart instead."""

    source: str = Field(
        min_length=1,
        description="a folder or fsspec URL inside UNPAIRED_JOBS_ROOTS; its images (recursively)",
        examples=["/data/photos/2026"],
    )


class Counts(BaseModel):
    total: int = Field(description="images in the job, including entries refused at intake")
    done: int = Field(description="images translated and written")
    failed: int = Field(description="images that could not be (see errors)")


class ItemErrorView(BaseModel):
    item: str = Field(description="the input's name in the job", examples=["cats/007.png"])
    error: str = Field(examples=["not an image (cannot identify image file)"])


class JobView(BaseModel):
    id: str = Field(examples=["3f0c2b6a9d8e4f1a8b7c6d5e4f3a2b1c"])
    state: StateName
    model: str
    direction: Literal["AtoB", "BtoA"]
    format: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    counts: Counts
    progress: float = Field(description="share of images with an outcome, 0 to 1")
    throughput: float | None = Field(description="images per second since the job started")
    eta_seconds: float | None = Field(description="estimated seconds left at that throughput")
    errors: list[ItemErrorView] = Field(description="failed images and why (at most 1,000)")
    chunks_writing: int = Field(
        description="chunks of images still being translated and written; a cancelled job's "
        "counts and outputs are final once this is 0"
    )
    frames_done: int = Field(
        0,
        description="frames of the job's videos translated so far (a video counts in "
        "`counts` once it is written)",
    )
    source: str | None = None
    destination: str | None = None
    result_url: str = Field(description="GET it once the job has finished")

    @classmethod
    def of(cls, status: JobStatus, with_errors: bool = True) -> JobView:
        spec = status.spec
        now = time.time()
        processed = status.done + status.failed
        return cls(
            id=spec.id,
            state=status.state.value,
            model=spec.model,
            direction=spec.direction,
            format=spec.format,
            created_at=_when(spec.created_at),
            started_at=_when(status.started_at),
            finished_at=_when(status.finished_at),
            counts=Counts(total=spec.total, done=status.done, failed=status.failed),
            progress=round(processed / spec.total, 4) if spec.total else 1.0,
            throughput=_round(status.throughput(now)),
            eta_seconds=_round(status.eta_seconds(now)),
            errors=[ItemErrorView(item=e.item, error=e.error) for e in status.errors]
            if with_errors
            else [],
            chunks_writing=status.writing,
            frames_done=status.frames,
            source=spec.source,
            destination=spec.destination,
            result_url=f"/v1/jobs/{spec.id}/result",
        )


class JobList(BaseModel):
    jobs: list[JobView] = Field(description="newest first; errors left out (see each job)")
    next_before: float | None = Field(
        description="pass as `before` for the next page; null on the last page"
    )


class OutputView(BaseModel):
    item: str
    output: str = Field(description="where the translated image was written")


class JobOutputs(BaseModel):
    id: str
    state: StateName
    outputs: list[OutputView]


def _when(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
