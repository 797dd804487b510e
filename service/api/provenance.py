"""Where a served model came from, for people: trained here (run, step, evaluation) or imported
(the source files, their sha256, what the importer found), read from its manifest; and, for a
distilled student, its teacher, how much less arithmetic it does and how closely it follows.

A manifest records where the exporter read its files; those server paths are cut to their last
part here, so the API never tells its users how the server's disks are laid out.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, Field, ValidationError

from models.manifest import ModelManifest

__all__ = [
    "DirectionMetrics",
    "DistillationFidelity",
    "DistillationInfo",
    "DistillationTeacher",
    "ImportedProvenance",
    "ImportedSourceFile",
    "Provenance",
    "TrainedProvenance",
    "distillation_of",
    "provenance_of",
    "without_server_paths",
]


_ABSOLUTE: Final = re.compile(r"^(/|~|\\\\|[A-Za-z]:[\\/])")
_STEP: Final = re.compile(r"(?:^|_)(\d+)$")


def _base_name(path: str) -> str:
    """The last part of a path, whether written with / or \\."""
    return PureWindowsPath(PurePosixPath(path).name).name or path


def without_server_paths(value: Any) -> Any:
    """`value` with every absolute path (a string) cut down to its last part: a manifest records
    where the exporter read its files, which is no business of the API's users."""
    if isinstance(value, str):
        return _base_name(value) if _ABSOLUTE.match(value) else value
    if isinstance(value, dict):
        return {k: without_server_paths(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_server_paths(v) for v in value]
    return value


class DirectionMetrics(BaseModel):
    """One direction's evaluation against ground truth (the whole report: `ModelInfo.metrics`)."""

    n: int | None = Field(None, description="image pairs scored", examples=[50])
    psnr: float | None = Field(None, description="PSNR of the translations, dB", examples=[21.3])
    ssim: float | None = Field(None, description="SSIM of the translations", examples=[0.71])
    gain_db: float | None = Field(
        None, description="PSNR gain over the untranslated input, dB", examples=[2.4]
    )


class TrainedProvenance(BaseModel):
    """A model trained by this project (`unpaired train`, then `unpaired export RUN_DIR`)."""

    kind: Literal["trained"] = "trained"
    run: str | None = Field(
        None,
        description="the training run's folder name (only the name: not where it lies)",
        examples=["day2night-resnet6"],
    )
    checkpoint: str | None = Field(
        None, description="the checkpoint exported", examples=["step_00020000"]
    )
    step: int | None = Field(None, description="training step of the checkpoint", examples=[20000])
    weights: Literal["ema", "raw"] | None = Field(
        None,
        description="ema: the moving average of the generators' weights; raw: the last step's; "
        "null: not recorded (exported before runs kept an average)",
        examples=["ema"],
    )
    model: str | None = Field(None, description="training method", examples=["cut"])
    dataset: str | None = Field(
        None,
        description="the dataset trained on: its name, or the name of its folder",
        examples=["day2night"],
    )
    size: int | None = Field(None, description="training crop side, pixels", examples=[256])
    config_digest: str | None = Field(
        None, description="digest of the training configuration", examples=["3f2a9c01d4e5"]
    )
    metrics: dict[str, DirectionMetrics] | None = Field(
        None,
        description="per direction, a summary of the evaluation against ground truth at export "
        "(the full report is `ModelInfo.metrics`); null when none was measured",
    )


class ImportedSourceFile(BaseModel):
    """One file an imported model was read from."""

    name: str = Field(description="the file's name", examples=["horse2zebra.pth"])
    sha256: str = Field(
        description="sha256 of the file, to trace the model back to it",
        examples=["9c1f0b6e3d2a4f5e8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a"],
    )
    bytes: int | None = Field(
        None, description="the file's size (null when the exporter did not record it)"
    )
    key: str | None = Field(
        None,
        description="the network taken from a file that holds several (e.g. a checkpoint's "
        "`G_A`); null when the file holds one",
        examples=["G_A"],
    )


class ImportedProvenance(BaseModel):
    """A model imported from files made by other code (`unpaired export --from-pth/--from-onnx`)."""

    kind: Literal["imported"] = "imported"
    format: Literal["pth", "safetensors", "onnx"] = Field(
        description="what the imported files were", examples=["pth"]
    )
    files: dict[Literal["AtoB", "BtoA"], ImportedSourceFile] = Field(
        description="per direction, the file it was imported from"
    )
    mapping: dict[str, Any] = Field(
        default_factory=dict,
        description="what the importer found and assumed, per direction (architecture, ngf, "
        "blocks, norm, the first and last key pairs it matched, value range, ...), so a user "
        "can check it",
        examples=[
            {
                "AtoB": {
                    "architecture": "resnet_9blocks",
                    "ngf": 64,
                    "blocks": 9,
                    "norm": "instance",
                    "key": "netG_A",
                    "tensors": 48,
                    "first": "netG_A.model.1.weight -> model.1.weight",
                    "last": "netG_A.model.26.bias -> model.26.bias",
                }
            }
        ],
    )


Provenance = Annotated[TrainedProvenance | ImportedProvenance, Field(discriminator="kind")]


def _step(recorded: Any, checkpoint: str | None, metrics: dict[str, Any] | None) -> int | None:
    """The training step: recorded, else the evaluation's, else from `step_00020000`."""
    for step in (recorded, (metrics or {}).get("step")):
        if isinstance(step, int) and not isinstance(step, bool):
            return step
    found = _STEP.search(_base_name(checkpoint)) if checkpoint else None
    return int(found.group(1)) if found else None


def _metrics_summary(metrics: dict[str, Any] | None) -> dict[str, DirectionMetrics] | None:
    directions = (metrics or {}).get("directions")
    if not isinstance(directions, dict):
        return None
    summary = {}
    for direction, scores in directions.items():
        if not isinstance(scores, dict):
            continue
        fields = {k: scores.get(k) for k in DirectionMetrics.model_fields}
        with contextlib.suppress(ValidationError):  # not a score: left out
            summary[str(direction)] = DirectionMetrics.model_validate(fields)
    return summary or None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def provenance_of(manifest: ModelManifest) -> TrainedProvenance | ImportedProvenance | None:
    """Where the model came from, as its manifest records it; None when it does not say."""
    if manifest.source is not None:
        return ImportedProvenance(
            format=manifest.source.format,
            files={
                direction: ImportedSourceFile(
                    name=_base_name(file.name),
                    sha256=file.sha256,
                    bytes=file.bytes,
                    key=file.key,
                )
                for direction, file in manifest.source.files.items()
            },
            mapping=without_server_paths(dict(manifest.source.mapping)),
        )
    training = manifest.training
    if training.get("source") == "run":
        checkpoint = _base_name(str(training["checkpoint"])) if training.get("checkpoint") else None
        size = training.get("size")
        return TrainedProvenance(
            run=_base_name(str(training["run_dir"])) if training.get("run_dir") else None,
            checkpoint=checkpoint,
            step=_step(training.get("step"), checkpoint, manifest.metrics),
            weights=training["weights"] if training.get("weights") in ("ema", "raw") else None,
            model=_text(training.get("model")),
            dataset=_base_name(str(training["dataset"])) if training.get("dataset") else None,
            size=size if isinstance(size, int) else None,
            config_digest=_text(training.get("config_digest")),
            metrics=_metrics_summary(manifest.metrics),
        )
    if training.get("source") == "pth" and isinstance(training.get("files"), dict):
        # exported by an older `unpaired export --from-pth`: names and sha256 in `training`
        digests = training.get("sha256") or {}
        return ImportedProvenance(
            format="pth",
            files={
                direction: ImportedSourceFile(
                    name=_base_name(str(name)), sha256=str(digests.get(direction, ""))
                )
                for direction, name in training["files"].items()
                if direction in manifest.directions
            },
        )
    return None


class DistillationTeacher(BaseModel):
    """The network a student was trained to reproduce."""

    name: str | None = Field(
        None,
        description="the teacher: a model's name in the store, or a training run's folder name "
        "(only the name: not where it lies)",
        examples=["horse2zebra"],
    )
    kind: Literal["run", "model"] | None = Field(
        None,
        description="`model`: a model of the store; `run`: a training run's checkpoint",
        examples=["model"],
    )
    sha256: dict[str, str] = Field(
        default_factory=dict,
        description="sha256 of the teacher's graphs (per direction, or per file, as the "
        "distiller recorded them), to tell which teacher exactly",
        examples=[{"AtoB": "9c1f0b6e3d2a4f5e8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a"}],
    )


class DistillationFidelity(BaseModel):
    """How closely the student reproduces its teacher in one direction, on held-out images."""

    psnr_db: float = Field(
        description="PSNR of the student's output against the teacher's, dB (mean over the images)",
        examples=[31.2],
    )
    identity_psnr_db: float = Field(
        description="PSNR of the input itself against the teacher's output, dB: the bar a "
        "student that learnt anything clears",
        examples=[14.8],
    )
    images: int = Field(description="held-out images scored", examples=[100])


class DistillationInfo(BaseModel):
    """A student trained to reproduce a teacher (`unpaired distill`)."""

    teacher: DistillationTeacher
    student: dict[str, Any] = Field(
        description="the student's generator network (as `architecture`)",
        examples=[{"generator": "mobile_resnet_9blocks", "ngf": 16, "norm": "instance"}],
    )
    macs: int = Field(
        description="multiply-accumulates of the student per 256x256 image",
        examples=[2_470_000_000],
    )
    teacher_macs: int | None = Field(
        None,
        description="the same for the teacher; null when its network is not known (e.g. a "
        "foreign ONNX graph)",
        examples=[49_700_000_000],
    )
    macs_ratio: float | None = Field(
        None,
        description="teacher MACs over student MACs: how many times less arithmetic the "
        "student does; null without `teacher_macs`",
        examples=[20.1],
    )
    fidelity: dict[Literal["AtoB", "BtoA"], DistillationFidelity] = Field(
        default_factory=dict,
        description="per direction, the student's output compared with the teacher's",
    )


def _teacher(recorded: dict[str, Any]) -> DistillationTeacher:
    name = recorded.get("name")
    kind = recorded.get("kind")
    digests = recorded.get("sha256")
    if isinstance(digests, str):
        digests = {"graph": digests}
    return DistillationTeacher(
        name=_base_name(str(name)) if name else None,
        kind=kind if kind in ("run", "model") else None,
        sha256={str(k): str(v) for k, v in (digests if isinstance(digests, dict) else {}).items()},
    )


def distillation_of(manifest: ModelManifest) -> DistillationInfo | None:
    """The student's teacher, MACs and fidelity; None when the model is not a student."""
    d = manifest.distillation
    if d is None:
        return None
    ratio = round(d.teacher_macs / d.macs, 2) if d.teacher_macs and d.macs > 0 else None
    return DistillationInfo(
        teacher=_teacher(dict(d.teacher)),
        student=d.student.model_dump(),
        macs=d.macs,
        teacher_macs=d.teacher_macs,
        macs_ratio=ratio,
        fidelity={
            direction: DistillationFidelity(
                psnr_db=f.psnr_db, identity_psnr_db=f.identity_psnr_db, images=f.images
            )
            for direction, f in d.fidelity.items()
        },
    )
