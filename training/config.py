"""The one training configuration: typed, loadable from YAML and CLI flags, saved with every
checkpoint.

Defaults follow the papers: the field defaults are CycleGAN's, and `model: discogan` swaps in
DiscoGAN's recipe (`MODEL_DEFAULTS`) for every field not given explicitly.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models import DISCRIMINATORS, UnknownModelError, discriminator_min_input, input_multiple
from models.validation import Problem, describe_validation_error

from .losses import GanMode, ReconLoss
from .synthetic import get_pair

ModelKind = Literal["cyclegan", "discogan", "cut", "fastcut", "distill"]
Direction = Literal["AtoB", "BtoA", "both"]


class ConfigError(ValueError):
    """A config file or flag the user can fix."""


# Field defaults below are CycleGAN's (Zhu et al. 2017 and the junyanz reference code).
# Choosing another model swaps in its own recipe for every field the user did not set.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "cyclegan": {},
    # Kim et al. 2017, and the SKTBrain reference implementation: 64x64, batch norm,
    # BCE GAN loss, MSE reconstruction, no image pool, constant LR with weight decay.
    "discogan": {
        "generator": "discogan",
        "discriminator": "discogan",
        "norm": "batch",
        "gan_mode": "vanilla",
        "lambda_cycle": 1.0,
        "lambda_identity": 0.0,
        "pool_size": 0,
        "weight_decay": 1e-5,
        "lr_policy": "constant",
        "batch_size": 64,
        "size": 64,
        "preprocess": "resize",
    },
    # Contrastive Unpaired Translation (Park et al. 2020) and the taesungp reference code: one
    # generator per direction, PatchNCE on its encoder's features, no cycle, no image pool.
    "cut": {
        "lambda_gan": 1.0,
        "lambda_nce": 1.0,
        "nce_idt": True,
        "flip_equivariance": False,
        "pool_size": 0,
    },
    # FastCUT: a stronger NCE weight, no identity NCE, flip-equivariance, a shorter decay
    # (150 + 50 epochs in the paper).
    "fastcut": {
        "lambda_gan": 1.0,
        "lambda_nce": 10.0,
        "nce_idt": False,
        "flip_equivariance": True,
        "pool_size": 0,
        "decay_fraction": 0.25,
    },
    # `unpaired distill`: a student that reproduces a teacher (GAN Compression's mobile ResNet
    # at half the width: 15x fewer MACs than ResNet-9 at width 64); no discriminator trains
    "distill": {
        "generator": "mobile_resnet_9blocks",
        "ngf": 32,
        "pool_size": 0,
        "lambda_identity": 0.0,
        "batch_size": 4,
    },
}

# Fields that decide tensor shapes or the objective: a resumed run must not change them.
ARCHITECTURE_FIELDS = (
    "model",
    "direction",
    "generator",
    "discriminator",
    "ngf",
    "ndf",
    "n_layers_d",
    "norm",
    "dropout",
    "gan_mode",
    "pool_size",
    "nce_layers",
    "nce_units",
)
# Fields a resumed run may change (everything else must match the saved config).
RESUMABLE_OVERRIDES = frozenset(
    {
        "max_steps",
        "max_minutes",
        "checkpoint_every",
        "sample_every",
        "log_every",
        "num_workers",
        "device",
        "out",
    }
)


class TrainConfig(BaseModel):
    """Everything a run needs; the saved YAML reproduces the run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- what to learn ---------------------------------------------------------------------
    model: ModelKind = Field(
        "cyclegan", description="cyclegan, discogan, cut, fastcut or distill recipe"
    )
    direction: Direction = Field(
        "both",
        description="cut/fastcut: the directions to learn (both: a generator, discriminator "
        "and projection head per direction, in one run); distill: the teacher's (one, for a "
        "model that translates one way); cyclegan and discogan learn both",
    )
    dataroot: Path | None = Field(None, description="folder with trainA/ trainB/ (testA/ testB/)")
    dataset: str | None = Field(None, description="built-in synthetic pair, made on the fly")
    n_train: int = Field(4000, ge=1, description="samples per domain for a synthetic pair")
    out: Path = Field(Path("runs/latest"), description="run directory (checkpoints, logs)")

    # --- data ------------------------------------------------------------------------------
    size: int = Field(256, ge=8, description="training crop side")
    load_size: int | None = Field(None, ge=8, description="resize side before the crop")
    preprocess: Literal["resize_and_crop", "resize", "crop", "none"] = Field(
        "resize_and_crop", description="how images become size x size"
    )
    flip: bool = Field(True, description="random horizontal flips")
    pairing: Literal["random", "serial"] = Field("random", description="how A meets B")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")

    # --- networks --------------------------------------------------------------------------
    generator: str = Field("resnet_9blocks", description="generator architecture")
    discriminator: str = Field("basic", description="discriminator architecture")
    ngf: int = Field(64, ge=1, description="generator width")
    ndf: int = Field(64, ge=1, description="discriminator width")
    n_layers_d: int | None = Field(
        None, ge=1, description="depth of the n_layers / discogan D (None: architecture default)"
    )
    norm: Literal["instance", "instance_affine", "batch", "none"] = Field(
        "instance", description="instance_affine: InstanceNorm with a learned scale and shift"
    )
    dropout: bool = Field(False, description="dropout in ResNet/U-Net generators")
    init_type: Literal["normal", "xavier", "kaiming", "orthogonal"] = "normal"
    init_gain: float = 0.02

    # --- objective -------------------------------------------------------------------------
    gan_mode: GanMode = Field("lsgan", description="lsgan | vanilla | wgangp | hinge")
    lambda_cycle: float = Field(10.0, ge=0, description="cycle / reconstruction weight")
    lambda_identity: float = Field(
        0.5, ge=0, description="identity weight as a fraction of lambda_cycle"
    )
    lambda_gp: float = Field(10.0, ge=0, description="WGAN-GP gradient penalty weight")
    recon_loss: ReconLoss = Field("mse", description="DiscoGAN reconstruction distance")
    pool_size: int = Field(50, ge=0, description="image pool of past fakes for D")
    teacher: str | None = Field(
        None, description="distill: the teacher, a run folder or a store model, as given"
    )
    lambda_ssim: float = Field(1.0, ge=0, description="distill: weight of 1 - SSIM beside L1")
    distill_holdout: int = Field(
        50, ge=1, description="distill: held-out images per direction to measure fidelity on"
    )
    distill_crops: int = Field(
        1,
        ge=1,
        description="distill: crops cut from each training image, each at its own random "
        "scale (a few large photos teach as many crops as a folder of small images)",
    )
    distill_colour: float = Field(
        0.0,
        ge=0,
        le=1,
        description="distill: colour variation of the training crops (0: none): each crop's "
        "white balance, saturation and brightness are shifted at random by up to about this "
        "fraction, and the teacher translates the shifted crop, so a few photos (some grey) "
        "cover the colours people bring",
    )
    distill_init: Literal["auto", "teacher", "random"] = Field(
        "auto",
        description="distill: start the student as a pruned copy of the teacher (auto: when "
        "both are ResNet generators and the teacher's weights are at hand)",
    )
    lambda_feature: float = Field(
        0.0,
        ge=0,
        description="distill: weight of matching the teacher's residual-stream features "
        "(ResNet teacher with weights; each tap's error relative to the feature's energy)",
    )
    lambda_gan: float = Field(
        0.0,
        ge=0,
        description="cut/fastcut: the adversarial weight; distill: weight of an adversarial "
        "term against the teacher run's own discriminators, which learn to tell the student's "
        "outputs from the teacher's",
    )
    lambda_nce: float = Field(1.0, ge=0, description="cut/fastcut: PatchNCE weight")
    nce_idt: bool = Field(
        True, description="cut: PatchNCE also between target-domain images and G of them"
    )
    nce_layers: list[int] = Field(
        [0, 4, 8, 12, 16],
        description="cut/fastcut: positions in the generator's layer sequence whose outputs "
        "PatchNCE compares (the paper's for ResNet generators)",
    )
    nce_t: float = Field(0.07, gt=0, description="cut/fastcut: PatchNCE temperature")
    num_patches: int = Field(256, ge=1, description="cut/fastcut: patches sampled per layer")
    nce_units: int = Field(256, ge=1, description="cut/fastcut: projection-head width")
    flip_equivariance: bool = Field(
        False, description="fastcut: translate mirrored inputs half the time, NCE against x"
    )
    ema_decay: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="exponential moving average of the generators' weights (0: off; e.g. "
        "0.999); evaluate and export use it unless --no-ema",
    )
    ema_start: int = Field(
        1000, ge=0, description="steps before the average starts (until then it copies)"
    )

    # --- optimisation ----------------------------------------------------------------------
    lr: float = Field(2e-4, gt=0)
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    lr_policy: Literal["linear", "constant"] = Field(
        "linear",
        description="linear: constant, then linear decay to 0 over the last decay_fraction",
    )
    decay_fraction: float = Field(0.5, ge=0, le=1, description="share of steps spent decaying")
    batch_size: int = Field(1, ge=1)
    max_steps: int = Field(10_000, ge=1, description="optimiser steps to train")
    max_minutes: float | None = Field(
        None,
        gt=0,
        description="also stop (with a checkpoint) after this many minutes of training, for "
        "budgets in time; the learning-rate schedule still follows max_steps",
    )

    # --- execution -------------------------------------------------------------------------
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    amp: Literal["none", "bf16", "fp16"] = Field("none", description="mixed precision")
    channels_last: bool = False
    compile: bool = Field(False, description="torch.compile the networks")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = Field(
        "default", description="torch.compile mode (reduce-overhead uses CUDA graphs)"
    )
    threads: int | None = Field(None, ge=1, description="CPU threads (torch.set_num_threads)")
    seed: int = 0
    checkpoint_every: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(3, ge=1, description="newest checkpoints kept on disk")
    sample_every: int = Field(500, ge=1, description="TensorBoard sample grid interval")
    log_every: int = Field(50, ge=1, description="TensorBoard scalar interval")

    @model_validator(mode="before")
    @classmethod
    def _fill_model_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        model = data.get("model", "cyclegan")
        defaults = MODEL_DEFAULTS.get(model)
        if defaults is None:
            return data  # the Literal check reports the bad model name
        return {**defaults, **{k: v for k, v in data.items() if v is not None}}

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str | None) -> str | None:
        if name is not None:
            get_pair(name)  # raises with the list of built-in pairs
        return name

    @field_validator("generator")
    @classmethod
    def _known_generator(cls, name: str) -> str:
        try:
            input_multiple(name)  # the registry knows the name (or the resnet/unet pattern)
        except UnknownModelError as exc:
            raise ValueError(str(exc)) from None
        return name

    @field_validator("discriminator")
    @classmethod
    def _known_discriminator(cls, name: str) -> str:
        if name not in DISCRIMINATORS:
            choices = ", ".join(DISCRIMINATORS)
            raise ValueError(f"unknown discriminator {name!r}; choose one of {choices}")
        return name

    @model_validator(mode="after")
    def _distill_has_a_teacher(self) -> TrainConfig:
        if (self.model == "distill") != (self.teacher is not None):
            raise ValueError("a teacher is given with model distill, and only then")
        return self

    @model_validator(mode="after")
    def _one_sided_models_only(self) -> TrainConfig:
        if self.direction != "both" and self.model not in ("cut", "fastcut", "distill"):
            raise ValueError(
                f"{self.model} learns both directions; direction is for cut, fastcut and distill"
            )
        return self

    @property
    def directions(self) -> tuple[str, ...]:
        """The directions the run learns: AtoB (G) and/or BtoA (F)."""
        return ("AtoB", "BtoA") if self.direction == "both" else (self.direction,)

    @model_validator(mode="after")
    def _one_data_source(self) -> TrainConfig:
        if (self.dataroot is None) == (self.dataset is None):
            raise ValueError("give exactly one of dataroot (a folder) or dataset (a built-in pair)")
        return self

    @model_validator(mode="after")
    def _discriminator_fits_the_crop(self) -> TrainConfig:
        """Strided discriminators need a minimum input side; say so before a conv fails."""
        smallest = discriminator_min_input(self.discriminator, self.n_layers_d)
        if self.size < smallest:
            raise ValueError(
                f"size {self.size} is too small for the {self.discriminator!r} discriminator "
                f"(depth {self.n_layers_d or 'default'}); it needs size >= {smallest}"
            )
        return self

    @property
    def lambda_identity_weight(self) -> float:
        """The identity term's absolute weight (CycleGAN scales it by lambda_cycle)."""
        return self.lambda_identity * self.lambda_cycle

    @property
    def resolved_load_size(self) -> int:
        if self.load_size is not None:
            return self.load_size
        # CycleGAN's 286 -> 256 jitter, scaled to any size.
        return round(self.size * 286 / 256) if self.preprocess == "resize_and_crop" else self.size

    def digest(self) -> str:
        """sha256 of the architecture-and-objective fields: two runs with equal digests train the
        same kind of model (used to refuse incompatible resumes, and by exported manifests)."""
        payload = {k: getattr(self, k) for k in ARCHITECTURE_FIELDS}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def save(self, path: Path) -> None:
        path.write_text(self.to_yaml())


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """YAML file (optional) + overrides (CLI flags win), validated into a TrainConfig."""
    data = read_config_file(path) if path is not None else {}
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return validate_config(data, source=str(path) if path else "flags")


def read_config_file(path: Path) -> dict[str, Any]:
    """The raw option: value mapping of a YAML config file (validated later)."""
    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} cannot be read as YAML: {exc}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    return dict(loaded or {})


def validate_config(data: dict[str, Any], *, source: str) -> TrainConfig:
    try:
        return TrainConfig(**data)
    except ValidationError as exc:
        problems = describe_validation_error(exc, root="config", explain=_unknown_option)
        raise ConfigError(f"invalid training config ({source}): {problems}") from None


def _unknown_option(problem: Problem) -> str | None:
    if problem.kind != "extra_forbidden":
        return None
    where = ".".join(problem.location)
    return f"unknown option {where!r} (valid options: {', '.join(TrainConfig.model_fields)})"


def parse_set_options(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values parsed as YAML scalars (10, 1e-4, true, null, text)."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        parsed[key.strip()] = yaml.safe_load(raw) if raw else ""
    return parsed


def check_resume_compatible(saved: TrainConfig, requested: dict[str, Any]) -> TrainConfig:
    """The saved config with the overrides a resume may change; anything else that differs is
    an error, because the checkpoint's tensors and optimiser state belong to the saved run."""
    conflicts = {
        key: (getattr(saved, key), value)
        for key, value in requested.items()
        if value is not None
        and key not in RESUMABLE_OVERRIDES
        and key in TrainConfig.model_fields
        and _normalise(getattr(saved, key)) != _normalise(value)
    }
    unknown = [k for k in requested if k not in TrainConfig.model_fields]
    if unknown:
        raise ConfigError(
            f"unknown option(s) {unknown} (valid: {', '.join(TrainConfig.model_fields)})"
        )
    if conflicts:
        detail = ", ".join(
            f"{k}: run has {a!r}, asked for {b!r}" for k, (a, b) in conflicts.items()
        )
        raise ConfigError(
            f"cannot resume with a different configuration ({detail}); "
            f"only {', '.join(sorted(RESUMABLE_OVERRIDES))} may change on resume"
        )
    allowed = {k: v for k, v in requested.items() if v is not None and k in RESUMABLE_OVERRIDES}
    return validate_config({**saved.model_dump(), **allowed}, source="resume")


def _normalise(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value
