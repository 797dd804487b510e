"""Response bodies of the API: the OpenAPI schema is generated from these."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, Field

from models.manifest import ModelManifest
from service.api.provenance import (
    DistillationInfo,
    Provenance,
    distillation_of,
    provenance_of,
    without_server_paths,
)
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
    tiled: bool = Field(
        description="true: large images are tiled with shared instance-norm statistics; false: "
        "the model has no tiled graph and large images are tiled plainly (see `tiling`)"
    )
    tiling: Literal["shared_statistics", "overlap_blending"] = Field(
        description="how an image too large to translate in one piece is done: in overlapping, "
        "blended tiles either way. `shared_statistics`: the model has a tiled graph and every "
        "tile is normalised with the instance-norm statistics of a thumbnail of the whole "
        "image, so the tiles agree in tone; `overlap_blending`: the model has no tiled graph "
        "(e.g. an imported ONNX graph), each tile uses its own statistics and only the blended "
        "overlap hides the seams",
        examples=["shared_statistics"],
    )


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
    architecture: dict[str, Any] | None = Field(
        description="the generator network; null for an imported ONNX graph of a network this "
        "project does not define (served by onnxruntime only)",
        examples=[{"generator": "resnet_6blocks", "ngf": 16, "norm": "instance"}],
    )
    description: str | None = Field(
        None,
        description="what the model does, as its publisher wrote it (plain text)",
        examples=["Day photos to night, trained on 2,000 street scenes"],
    )
    license: str | None = Field(
        None, description="the terms of use of the weights", examples=["BSD-3-Clause"]
    )
    provenance: Provenance | None = Field(
        None,
        description="where the model came from: `trained` here (the run, checkpoint, dataset "
        "and evaluation) or `imported` (the source files, their sha256 and what the importer "
        "found); null when the manifest does not say",
    )
    distillation: DistillationInfo | None = Field(
        None,
        description="a student distilled from a teacher (`unpaired distill`): the teacher, the "
        "MACs of both per 256x256 image and their ratio, and per direction how closely the "
        "student follows the teacher (PSNR against the teacher's output, and the identity "
        "baseline); null when the model is not a student",
    )
    metrics: dict[str, Any] | None = Field(
        None, description="evaluation against ground truth at export, when measured"
    )
    parity: dict[str, dict[str, float]] = Field(
        description="measured difference of each exported graph from the PyTorch network"
    )
    training: dict[str, Any] = Field(
        description="the exporter's record of the training run (paths reduced to their last "
        "part); `provenance` is the typed summary"
    )
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
                    tiling="shared_statistics" if files.onnx_tiled else "overlap_blending",
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
            architecture=manifest.architecture.model_dump() if manifest.architecture else None,
            description=manifest.description,
            license=manifest.license,
            provenance=provenance_of(manifest),
            distillation=distillation_of(manifest),
            metrics=without_server_paths(manifest.metrics),
            parity=manifest.parity,
            training=without_server_paths(dict(manifest.training)),
            created=manifest.created,
        )


class ModelList(BaseModel):
    models: list[ModelInfo]
    problems: list[str] = Field(description="store folders whose manifest cannot be read")
    default: str | None = Field(
        None, description="the model to open on (UNPAIRED_DEFAULT_MODEL), if the store has it"
    )


class Example(BaseModel):
    name: str
    title: str
    width: int
    height: int
    url: str = Field(description="the photo itself, PNG")


class ExampleList(BaseModel):
    examples: list[Example] = Field(
        description="real photos that ship with the server's installed packages (scikit-image's "
        "sample data), to try a model on; none where scikit-image is not installed"
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ReadinessReport(BaseModel):
    ready: bool
    mode: Literal["embedded", "distributed"]
    checks: dict[str, Any] = Field(
        examples=[{"broker": "ok", "workers": 2}],
        description="embedded: engines loaded and warmed; distributed: broker and workers",
    )
