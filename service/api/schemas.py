"""Response bodies of the API: the OpenAPI schema is generated from these."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, Field

from models.manifest import ModelManifest
from service.api.zips import ZipItemError

__all__ = [
    "DirectionInfo",
    "ErrorBody",
    "ErrorResponse",
    "Health",
    "ModelInfo",
    "ModelList",
    "ModelName",
    "ParameterProblem",
    "ReadinessReport",
]


ModelName = Annotated[
    str, Path(description="a model's name or one of its aliases", examples=["day2night"])
]


class ParameterProblem(BaseModel):
    """One thing wrong with a request's parameters or body (a 422's details)."""

    location: list[str] = Field(
        description="where: `query`, `path` or `body`, then names and indexes",
        examples=[["query", "quality"]],
    )
    message: str = Field(examples=["Input should be less than or equal to 100"])


class ErrorBody(BaseModel):
    code: str = Field(description="stable, machine-readable reason", examples=["model_not_found"])
    message: str = Field(
        description="what went wrong and how to fix it",
        examples=["no model 'horse2zebra' in store model-store (models: demo-day2night)"],
    )
    request_id: str | None = Field(None, description="the X-Request-ID of the request")
    details: list[ParameterProblem | ZipItemError] | None = Field(
        None,
        description="per-parameter problems (422), or, when none of several `files` could be "
        "translated, each file's error (as in a zip's `errors.json`)",
    )


class ErrorResponse(BaseModel):
    error: ErrorBody


class DirectionInfo(BaseModel):
    name: Literal["AtoB", "BtoA"]
    source: str = Field(description="domain of the input images", examples=["day"])
    target: str = Field(description="domain of the output images", examples=["night"])
    precisions: list[str] = Field(description="exported graphs", examples=[["fp32", "fp16"]])
    tiled: bool = Field(description="large images are tiled with shared instance-norm statistics")


class InputInfo(BaseModel):
    multiple: int = Field(description="sides are padded (reflect) up to a multiple of this")
    min_side: int
    max_side: int | None = None


class ModelInfo(BaseModel):
    name: str = Field(examples=["demo-day2night"])
    aliases: list[str] = Field(examples=[["day2night"]])
    domains: dict[str, str] = Field(examples=[{"A": "day", "B": "night"}])
    directions: list[DirectionInfo]
    input: InputInfo
    architecture: dict[str, Any] = Field(examples=[{"generator": "resnet_6blocks", "ngf": 16}])
    metrics: dict[str, Any] | None = Field(
        None, description="evaluation against ground truth at export, when measured"
    )
    parity: dict[str, dict[str, float]] = Field(
        description="measured difference of each exported graph from the PyTorch network"
    )
    training: dict[str, Any]
    created: datetime

    @classmethod
    def from_manifest(cls, manifest: ModelManifest) -> ModelInfo:
        domains: dict[str, str] = {str(k): v for k, v in manifest.domains.items()}
        directions = []
        for name, files in manifest.directions.items():
            source, target = ("A", "B") if name == "AtoB" else ("B", "A")
            precisions = [
                p
                for p, path in (
                    ("fp32", files.onnx),
                    ("fp16", files.onnx_fp16),
                    ("int8", files.onnx_int8),
                )
                if path
            ]
            directions.append(
                DirectionInfo(
                    name=name,
                    source=domains[source],
                    target=domains[target],
                    precisions=precisions,
                    tiled=files.onnx_tiled is not None,
                )
            )
        return cls(
            name=manifest.name,
            aliases=list(manifest.aliases),
            domains=domains,
            directions=directions,
            input=InputInfo(
                multiple=manifest.input.multiple,
                min_side=manifest.input.min_side,
                max_side=manifest.input.max_side,
            ),
            architecture=manifest.architecture.model_dump(),
            metrics=manifest.metrics,
            parity=manifest.parity,
            training=manifest.training,
            created=manifest.created,
        )


class ModelList(BaseModel):
    models: list[ModelInfo]
    problems: list[str] = Field(description="store folders whose manifest cannot be read")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ReadinessReport(BaseModel):
    ready: bool
    mode: Literal["embedded", "distributed"]
    checks: dict[str, Any] = Field(
        examples=[{"broker": "ok", "workers": 2}],
        description="embedded: engines loaded and warmed; distributed: broker and workers",
    )
