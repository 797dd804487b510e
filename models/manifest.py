"""The `manifest.json` schema of an exported model, shared by the exporter and the model store.

It lives in ``models`` because ``training.export`` writes it and ``service.store.model_store``
reads it, and neither package may import the other. A manifest describes everything a server
needs to run a model without the training code: which file holds which direction, the
architecture (to rebuild the PyTorch network for the torch backend), the input rules and the
value mapping, and a sha256 for every file so a tampered or truncated model is refused at load
time.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.validation import describe_validation_error

__all__ = [
    "DIRECTIONS",
    "MANIFEST_FILE",
    "UPSAMPLINGS",
    "Architecture",
    "DirectionFidelity",
    "DirectionFiles",
    "DirectionRequiredError",
    "Distillation",
    "FileRecord",
    "ImportSource",
    "InputRules",
    "ManifestError",
    "ModelManifest",
    "Normalisation",
    "SourceFile",
    "UnknownDirectionError",
    "parse_manifest",
    "sha256_file",
]

MANIFEST_FILE: Final = "manifest.json"

# Graph IO names: the contract between the exporter and every runtime.
INPUT_NAME: Final = "input"  # float32 (batch, 3, height, width) in [-1, 1]
OUTPUT_NAME: Final = "output"  # same shape
STATS_IN: Final = "stats_in"  # tiled graph: float32 (batch, S) instance-norm statistics
USE_STATS: Final = "use_stats"  # tiled graph: bool scalar, use stats_in instead of own stats
STATS_OUT: Final = "stats"  # tiled graph: the statistics the network used
FORMAT_VERSION: Final = 1
DIRECTIONS: Final = ("AtoB", "BtoA")
Direction = Literal["AtoB", "BtoA"]
Upsampling = Literal["transpose", "nearest", "bilinear"]
#: How a ResNet decoder doubles its side: transposed conv, or a resize then a 3x3 conv.
UPSAMPLINGS: Final = ("transpose", "nearest", "bilinear")

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
NAME_RULE: Final = "lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"
Name = Annotated[str, Field(pattern=_NAME.pattern)]


class ManifestError(ValueError):
    """A manifest that is missing, unreadable or does not match the schema."""


class UnknownDirectionError(ManifestError, LookupError):
    """The model has no such direction; the message names the ones it has."""


class DirectionRequiredError(ManifestError):
    """A two-way model was asked to translate without saying which way."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FileRecord(_Frozen):
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    bytes: Annotated[int, Field(ge=0)]


class DirectionFiles(_Frozen):
    """Files of one direction, relative to the model folder."""

    onnx: str
    onnx_fp16: str | None = None
    onnx_tiled: str | None = None  # shares instance-norm statistics across tiles (norm_stats)
    onnx_int8: str | None = None  # statically quantized, for CPU serving
    # safetensors state dict of the generator, for the torch backend; None for an imported
    # ONNX graph, which only onnxruntime can run
    weights: str | None = None


class Architecture(_Frozen):
    """Arguments of `models.build_generator`, so the torch backend can rebuild the network
    (:func:`models.registry.build_from_architecture`; the manifest itself needs no torch)."""

    generator: str
    ngf: int
    norm: str
    use_dropout: bool = False
    input_nc: int = 3
    output_nc: int = 3
    conv_bias: bool | None = None  # None: what the norm implies (models.layers.conv_bias)
    upsample: Upsampling = "transpose"  # ResNet decoder: transposed conv, or resize then conv


class SourceFile(_Frozen):
    """One file an imported model was read from, as the user gave it."""

    name: str
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    bytes: Annotated[int, Field(ge=0)]
    key: str | None = None  # the network's name inside a file that holds several


class ImportSource(_Frozen):
    """Where an imported model came from, so people can trace a served model to its file."""

    format: Literal["pth", "safetensors", "onnx"]
    files: dict[Direction, SourceFile]
    mapping: dict[str, Any] = Field(default_factory=dict)  # what the importer found and assumed


class InputRules(_Frozen):
    """Sides are padded (reflect) up to a multiple of `multiple` and at least `min_side`."""

    multiple: Annotated[int, Field(ge=1)]
    min_side: Annotated[int, Field(ge=1)]
    max_side: Annotated[int, Field(ge=1)] | None = None  # None: any size (tiled when large)
    channels: Literal["RGB"] = "RGB"


class Normalisation(_Frozen):
    """The value mapping `models.imaging.array_to_tensor` applies: x / 127.5 - 1."""

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    range: tuple[float, float] = (-1.0, 1.0)


class DirectionFidelity(_Frozen):
    """How closely a distilled student reproduces its teacher, on held-out images."""

    psnr_db: float  # student output against the teacher's, mean over the images
    identity_psnr_db: float  # the input itself against the teacher's output: the bar to beat
    images: int


class Distillation(_Frozen):
    """A student trained to reproduce a teacher (`unpaired distill`)."""

    teacher: dict[str, Any]  # name, kind ('run' | 'model'), and the sha256 of its graphs
    student: Architecture
    macs: int  # multiply-accumulates of the student per 256x256 image
    teacher_macs: int | None = None  # the same for the teacher, when its network is known
    fidelity: dict[Direction, DirectionFidelity] = Field(default_factory=dict)


def _default_domains() -> dict[Literal["A", "B"], str]:
    return {"A": "A", "B": "B"}


class ModelManifest(_Frozen):
    format_version: Literal[1] = FORMAT_VERSION
    name: Name
    aliases: tuple[Name, ...] = ()
    domains: dict[Literal["A", "B"], str] = Field(default_factory=_default_domains)
    directions: dict[Direction, DirectionFiles]
    # None: an imported ONNX graph of a network this project does not define
    architecture: Architecture | None
    input: InputRules
    normalisation: Normalisation = Normalisation()
    training: dict[str, Any] = Field(default_factory=dict)  # trained here: run, step, config
    source: ImportSource | None = None  # imported: the files and the importer's mapping
    distillation: Distillation | None = None  # a student: its teacher, MACs and fidelity
    description: str | None = None
    license: str | None = None
    metrics: dict[str, Any] | None = None  # evaluation against ground truth, when measured
    parity: dict[str, dict[str, float]] = Field(default_factory=dict)  # direction -> max |diff|
    exporter: dict[str, str] = Field(default_factory=dict)  # package versions, opset
    created: datetime
    files: dict[str, FileRecord]

    @field_validator("directions")
    @classmethod
    def _some_direction(cls, value: dict[str, DirectionFiles]) -> dict[str, DirectionFiles]:
        if not value:
            raise ValueError("a model needs at least one direction")
        return value

    @model_validator(mode="after")
    def _files_are_recorded(self) -> ModelManifest:
        for direction, files in self.directions.items():
            paths = (files.onnx, files.onnx_fp16, files.onnx_tiled, files.onnx_int8, files.weights)
            for path in paths:
                if path is not None and path not in self.files:
                    raise ValueError(f"{direction} names {path!r}, which has no sha256 in 'files'")
            if files.weights is not None and self.architecture is None:
                raise ValueError(f"{direction} has weights but the model has no architecture")
        for path in self.files:
            if Path(path).is_absolute() or ".." in Path(path).parts or "/" in path:
                raise ValueError(f"file {path!r} must be a plain name inside the model folder")
        return self

    def direction(self, direction: str) -> DirectionFiles:
        """The files of `direction`; the error names the directions this model has."""
        if direction not in self.directions:
            have = ", ".join(self.directions)
            raise UnknownDirectionError(
                f"model {self.name!r} has no direction {direction!r}; it has: {have}"
            )
        return self.directions[direction]

    def resolve_direction(self, direction: str | None) -> str:
        """`direction` checked against the model; may be left out when the model has only one."""
        if direction is None:
            if len(self.directions) != 1:
                raise DirectionRequiredError(
                    f"model {self.name!r} translates both ways; give a direction "
                    f"({' or '.join(self.directions)})"
                )
            return next(iter(self.directions))
        self.direction(direction)
        return direction

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def parse_manifest(text: str | bytes, *, source: str) -> ModelManifest:
    """Validate manifest JSON; errors name the source and every bad field."""
    try:
        return ModelManifest.model_validate_json(text)
    except ValidationError as exc:
        problems = describe_validation_error(exc)
        raise ManifestError(f"invalid manifest {source}: {problems}") from None


def sha256_file(path: str | os.PathLike[str], *, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def is_valid_name(name: str) -> bool:
    return bool(_NAME.match(name))
