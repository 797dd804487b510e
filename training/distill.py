"""Distil a trained generator pair (the teacher) into a compact student (`unpaired distill`).

After GAN Compression (Li et al., CVPR 2020): the student learns to reproduce the teacher's
outputs on the source domain's images, per direction, with an L1 term plus a structural one
(1 - SSIM, from pytorch-msssim). Where the teacher's own weights are at hand (a run, or a store
model exported with them) and both are ResNet generators, the student starts as a pruned copy
of the teacher (`models.weight_transfer`), and can match the teacher's residual-stream features
through learned 1x1 adapters (`lambda_feature`); a run's discriminators can add an adversarial
term (`lambda_gan`). The teacher's outputs are computed once, before training, on every
training image and on held-out images, and cached in the run folder (``teacher/``), so the CPU
spends its steps on the student, a resumed run reuses them, and the export measures the
student's fidelity to the teacher without the teacher at hand.

The teacher is any callable from uint8 RGB images to the translated images (a run's generators,
or a store model through the serving engine, which the CLI builds), so anything the project
can serve can be distilled. A distillation run is a training run: the student is its `G`/`F`
(config `generator`, `ngf`, `norm`), checkpoints, resume, Ctrl-C, TensorBoard, AMP and DDP are
the trainer's own (:func:`training.runner.train`), and `unpaired export` takes it as it is.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from models import input_multiple
from models.feature_taps import forward_with_taps, residual_taps, tap_widths
from models.imaging import find_images, image_to_tensor, load_image
from models.manifest import DIRECTIONS, Architecture
from models.resnet import ResnetGenerator
from models.weight_transfer import TransferError, calibrate_separable, transfer_weights

from . import checkpoint as ckpt
from . import losses
from .config import TrainConfig
from .ddp import DistInfo
from .evaluate import ImagePair, score
from .networks import build_run_generator
from .optimisation import (
    adam_stepper,
    autocast_for,
    backward_and_step,
    set_requires_grad,
    to_device,
)
from .synthetic import get_pair

__all__ = [
    "CACHE_DIR",
    "DistillDataset",
    "DistillError",
    "Distiller",
    "TeacherRecord",
    "build_teacher_cache",
    "fidelity",
    "teacher_info",
    "teacher_parts",
]

CACHE_DIR = "teacher"  # in the run folder: the teacher's outputs, per split and direction
_INFO = "teacher.json"
_SPLITS = ("train", "test")
_CHUNK = 8  # images per teacher call


class DistillError(ValueError):
    """A distillation the user asked for that this teacher cannot give."""


Teacher = Callable[[Sequence[np.ndarray]], list[np.ndarray]]
"""uint8 (H, W, 3) images -> the teacher's translations, the same sizes."""


@dataclass(frozen=True)
class TeacherRecord:
    """A teacher as the run records it, and how to run it (per direction)."""

    name: str
    kind: Literal["run", "model"]
    sha256: Mapping[str, str]  # what identifies it: its graphs' or its checkpoint's digests
    architecture: Architecture | None  # None: a network this project does not define
    translate: Mapping[str, Teacher] = field(repr=False, default_factory=dict)
    # the teacher's own torch generators per direction, where its weights are at hand (a run,
    # or a store model with weights): what the student is pruned from and whose features it
    # matches. Empty for an imported ONNX graph, which only its outputs can teach.
    networks: Mapping[str, nn.Module] = field(repr=False, default_factory=dict)
    # a run's discriminators per direction (D_Y judges AtoB outputs), for the adversarial term
    discriminators: Mapping[str, nn.Module] = field(repr=False, default_factory=dict)

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name, "kind": self.kind, "sha256": dict(self.sha256)}
        if self.architecture is not None:
            info["architecture"] = self.architecture.model_dump()
        return info


# --- the teacher's outputs, cached -----------------------------------------------------------


def _source(direction: str) -> str:
    return "A" if direction == "AtoB" else "B"


def _synthetic_images(cfg: TrainConfig, split: str, direction: str, n: int) -> Iterator[np.ndarray]:
    assert cfg.dataset is not None
    pair, domain = get_pair(cfg.dataset), _source(direction)
    for index in range(n):
        scene = pair.scene(seed=cfg.seed, split=split, domain=domain, index=index, size=cfg.size)
        yield pair.render(scene, domain)


def _folder_images(cfg: TrainConfig, split: str, direction: str, n: int) -> Iterator[np.ndarray]:
    """The folder's images: training ones as they are (crops are cut from them), held-out ones
    at the training load side (aspect kept, sides multiples of 4)."""
    assert cfg.dataroot is not None
    side = cfg.resolved_load_size
    for path in find_images(Path(cfg.dataroot) / f"{split}{_source(direction)}")[:n]:
        image = load_image(path)
        if split == "train":
            yield np.asarray(image)
            continue
        scale = side / min(image.size)
        width, height = (max(4, round(s * scale) // 4 * 4) for s in image.size)
        yield np.asarray(image.resize((width, height), Image.Resampling.BICUBIC))


def source_images(cfg: TrainConfig, split: str, direction: str) -> Iterator[np.ndarray]:
    """The source domain's images of a split: training inputs, or held-out ones for fidelity."""
    n = cfg.n_train if split == "train" else cfg.distill_holdout
    if cfg.dataset is not None:
        return _synthetic_images(cfg, split, direction, n)
    return _folder_images(cfg, split, direction, n)


def training_inputs(cfg: TrainConfig, direction: str) -> Iterator[np.ndarray]:
    """What the student trains on: each training image at a random scale between the training
    crop and its own size (the range of sizes the domain comes in), a random size x size crop
    of it, with `distill_colour` under another light (:func:`_recoloured`), and (with `flip`)
    that crop mirrored too; `distill_crops` such crops per image.

    The teacher is run on exactly these inputs. Cropping or mirroring its output instead would
    be wrong: instance norm sees the whole input, padding sees its border, and a transposed
    convolution's output is not mirror-symmetric, so the teacher's output on a crop or a
    mirror image differs in detail from the crop or mirror of its output. Trained on such
    targets, a student averages the two and stalls (measured: 22 / 26 dB against 29.5 / 30
    dB with the teacher's own outputs, on day2night after 1,700 steps).
    """
    for index, image in enumerate(source_images(cfg, "train", direction)):
        for crop_index in range(cfg.distill_crops):
            key = [cfg.seed, index, DIRECTIONS.index(direction)]
            rng = np.random.default_rng([*key, crop_index] if crop_index else key)  # 1st: as ever
            crop = _random_crop(image, cfg.size, rng)
            if cfg.distill_colour > 0:
                crop = _recoloured(crop, cfg.distill_colour, rng)
            yield crop
            if cfg.flip:
                yield np.ascontiguousarray(crop[:, ::-1])


def _random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    short = min(height, width)
    target = int(rng.integers(min(size, short), max(size, short) + 1))
    if target != short:
        scale = target / short
        shape = (max(size, round(width * scale)), max(size, round(height * scale)))
        image = np.asarray(Image.fromarray(image).resize(shape, Image.Resampling.BICUBIC))
        height, width = image.shape[:2]
    side_h, side_w = min(size, height), min(size, width)
    top = int(rng.integers(0, height - side_h + 1))
    left = int(rng.integers(0, width - side_w + 1))
    return image[top : top + side_h, left : left + side_w]


def _recoloured(crop: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """The crop under another light and camera: a white-balance gain per channel (tints grey
    photos too), a saturation change and a brightness change, each at most ~`strength`.

    A colour transform's student sees only the colours its photos hold; trained on twelve
    photos, half of them grey, it got a warm photo's tones wrong (coffee, 21.6 dB). The
    teacher translates the recoloured crop, so targets stay the teacher's own outputs."""
    x = crop.astype(np.float32) / 255
    gains = np.exp(rng.uniform(-strength, strength, 3) / 2).astype(np.float32)
    x = x * gains / gains.mean()
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * np.float32(1 + rng.uniform(-strength, strength))
    x = x * np.float32(1 + rng.uniform(-strength, strength) / 2)
    return np.ascontiguousarray(np.clip(np.round(x * 255), 0, 255).astype(np.uint8))


def _chunks(images: Iterator[np.ndarray]) -> Iterator[list[np.ndarray]]:
    chunk: list[np.ndarray] = []
    for image in images:
        if chunk and (len(chunk) == _CHUNK or chunk[0].shape != image.shape):
            yield chunk
            chunk = []
        chunk.append(image)
    if chunk:
        yield chunk


def build_teacher_cache(cfg: TrainConfig, teacher: TeacherRecord, run_dir: Path) -> Path:
    """Run the teacher on every training and held-out image once; returns the cache folder.

    A cache made by the same teacher is reused (a resumed run); one of another teacher is
    refused. The folder appears complete or not at all (written aside, then renamed).
    """
    cache = run_dir / CACHE_DIR
    info: dict[str, Any] = {
        "teacher": teacher.info(),
        "dataset": cfg.dataset or cfg.dataroot,
        "training_inputs": {
            "size": cfg.size,
            "flip": cfg.flip,
            "seed": cfg.seed,
            "crops": cfg.distill_crops,
            "colour": cfg.distill_colour,
        },
    }
    if (cache / _INFO).exists():
        recorded = json.loads((cache / _INFO).read_text())
        if recorded.get("teacher", {}).get("sha256") != info["teacher"]["sha256"]:
            raise ckpt.CheckpointError(
                f"{cache} holds the outputs of another teacher ({recorded['teacher']['name']}); "
                "distil into a new --out"
            )
        return cache
    partial = run_dir / f".{CACHE_DIR}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    counts: dict[str, int] = {}
    for split in _SPLITS:
        for direction in cfg.directions:
            folder = partial / split / direction
            folder.mkdir(parents=True)
            index = 0
            images = (
                training_inputs(cfg, direction)
                if split == "train"
                else source_images(cfg, split, direction)
            )
            for chunk in _chunks(images):
                for image, out in zip(chunk, teacher.translate[direction](chunk), strict=True):
                    Image.fromarray(image).save(folder / f"{index:05d}.in.png")
                    Image.fromarray(out).save(folder / f"{index:05d}.teacher.png")
                    index += 1
            if index == 0:
                raise ckpt.CheckpointError(f"no {split} images of domain {_source(direction)}")
            counts[f"{split}/{direction}"] = index
    record = {**info, "dataset": str(info["dataset"]), "images": counts}
    (partial / _INFO).write_text(json.dumps(record, indent=2) + "\n")
    os.replace(partial, cache)
    return cache


def teacher_info(run_dir: Path) -> dict[str, Any]:
    """What the run's cache records about its teacher (for the export's manifest)."""
    return dict(json.loads((run_dir / CACHE_DIR / _INFO).read_text()))


def _pairs(folder: Path) -> list[tuple[Path, Path]]:
    inputs = sorted(folder.glob("*.in.png"))
    return [(p, p.with_name(p.name.replace(".in.png", ".teacher.png"))) for p in inputs]


# --- training data ---------------------------------------------------------------------------


class DistillDataset(Dataset[dict[str, Tensor]]):
    """(input, teacher output) pairs of both directions, as cached: the crops and mirror images
    are made before the teacher runs (:func:`training_inputs`), so nothing is done to them here.

    Keys follow the trainer's datasets: any non-negative key wraps, so directions with fewer
    pairs repeat, and a resumed run sees the batches the uninterrupted one saw.
    """

    def __init__(self, cache: Path, directions: Sequence[str] = DIRECTIONS) -> None:
        self.pairs = {d: _pairs(cache / "train" / d) for d in directions}

    def __len__(self) -> int:
        return max(len(p) for p in self.pairs.values())

    def __getitem__(self, key: int) -> dict[str, Tensor]:
        sample: dict[str, Tensor] = {}
        for direction, pairs in self.pairs.items():
            source, target = pairs[key % len(pairs)]
            sample[_source(direction)] = image_to_tensor(load_image(source))
            sample[f"{_source(direction)}_teacher"] = image_to_tensor(load_image(target))
        return sample


# --- the student's update --------------------------------------------------------------------


class StudentPair(nn.Module):
    """Both students, and their feature adapters when features are matched, in one module, so
    DDP reduces all of their gradients together.

    An adapter is GAN Compression's learned 1x1 convolution from the student's narrower
    residual stream to the teacher's, one per tap.
    """

    def __init__(
        self, students: Mapping[str, nn.Module], adapters: Mapping[str, nn.ModuleList]
    ) -> None:
        super().__init__()
        self.students = nn.ModuleDict(dict(students))
        self.adapters = nn.ModuleDict(dict(adapters))

    def forward(
        self, inputs: dict[str, Tensor], taps: dict[str, list[int]]
    ) -> dict[str, tuple[Tensor, list[Tensor]]]:
        out: dict[str, tuple[Tensor, list[Tensor]]] = {}
        for direction, x in inputs.items():
            student = self.students[direction]
            if direction not in self.adapters:
                out[direction] = (student(x), [])
                continue
            y, features = forward_with_taps(student, x, taps[direction])
            adapters = cast(nn.ModuleList, self.adapters[direction])
            out[direction] = (y, [a(f) for a, f in zip(adapters, features, strict=True)])
        return out


def _structure_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """1 - SSIM on [0, 1] images (pytorch-msssim; 7x7 windows so 64x64 crops work)."""
    from pytorch_msssim import ssim

    s, t = student.float().add(1).div(2), teacher.float().add(1).div(2)
    return 1 - ssim(s, t, data_range=1.0, size_average=True, win_size=7)


def _feature_loss(student: list[Tensor], teacher: list[Tensor]) -> Tensor:
    """Mean over taps of the squared error relative to the teacher feature's energy, so that
    taps deep in the stream (larger values) weigh no more than shallow ones."""
    terms = [
        (s.float() - t.float()).pow(2).mean() / t.float().pow(2).mean().clamp_min(1e-8)
        for s, t in zip(student, teacher, strict=True)
    ]
    return torch.stack(terms).mean()


_DISCRIMINATOR = {"AtoB": "D_Y", "BtoA": "D_X"}  # who judges each direction's outputs
_CALIBRATION_IMAGES = 16


class Distiller(ckpt.ResumesFromSteppers):
    """The students, their optimiser and one update; the trainer's loop drives it.

    Loss per direction: L1 + lambda_ssim (1 - SSIM) against the teacher's output, plus
    lambda_feature x the feature error at the residual-stream taps, plus lambda_gan x LSGAN
    against the teacher run's discriminator, which keeps training on teacher (real) vs
    student (fake) outputs.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        device: torch.device,
        dist_info: DistInfo,
        *,
        teacher: TeacherRecord | None,
        dataset: DistillDataset,
    ) -> None:
        self.cfg, self.device, self.dist_info = cfg, device, dist_info
        torch.manual_seed(cfg.seed)
        self.directions = cfg.directions  # the teacher's: one, for a model that maps one way
        self.nets = {d: build_run_generator(cfg) for d in self.directions}  # G: AtoB, F: BtoA
        self.teachers, self.discriminators = teacher_parts(cfg, teacher)
        for net in self.teachers.values():
            net.to(device).eval().requires_grad_(False)
        for judge in self.discriminators.values():
            judge.to(device).train()
        self.init_report = _initialise(cfg, self.nets, self.teachers, dataset)
        # as many taps as the shallower of the two networks has places for (at most 4)
        n_taps = {d: min(len(residual_taps(self.nets[d])), len(residual_taps(t)))
                  for d, t in self.teachers.items()}  # fmt: skip
        self.taps = {d: residual_taps(self.nets[d], n) for d, n in n_taps.items()}
        self.teacher_taps = {d: residual_taps(self.teachers[d], n) for d, n in n_taps.items()}
        adapters = (
            {d: _adapters(self.nets[d], t, self.taps[d], self.teacher_taps[d])
             for d, t in self.teachers.items()}
            if cfg.lambda_feature > 0 else {}
        )  # fmt: skip
        self.adapters = adapters
        pair = StudentPair(self.nets, adapters)
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        pair.to(device).to(memory_format=memory_format)
        self.opt, self.sched = adam_stepper(cfg, device, pair.parameters())
        self.opt_D = self.sched_D = None
        if self.discriminators:
            judged = chain(*(d.parameters() for d in self.discriminators.values()))
            self.opt_D, self.sched_D = adam_stepper(cfg, device, judged)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
        module: nn.Module = pair
        if cfg.compile:
            module = torch.compile(pair, mode=cfg.compile_mode)  # type: ignore[assignment]
        if dist_info.enabled:
            ids = [device.index] if device.type == "cuda" else None
            module = DistributedDataParallel(module, device_ids=ids)
        self.students = module
        self.step_count = 0

    def train_step(
        self, batch: Mapping[str, Tensor]
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """One update of both students toward the teacher's outputs (and features)."""
        cfg = self.cfg
        inputs, targets = {}, {}
        for d in self.directions:
            inputs[d] = to_device(batch[_source(d)], cfg, self.device)
            targets[d] = to_device(batch[f"{_source(d)}_teacher"], cfg, self.device)
        if self.discriminators:
            set_requires_grad(list(self.discriminators.values()), False)
        logs: dict[str, Tensor] = {}
        with autocast_for(cfg, self.device):
            out = self.students(inputs, self.taps)
            loss = torch.zeros((), device=self.device)
            for d in self.directions:
                student, features = out[d]
                logs[f"{d}/l1"] = nn.functional.l1_loss(student, targets[d])
                logs[f"{d}/ssim"] = _structure_loss(student, targets[d])
                loss = loss + logs[f"{d}/l1"] + cfg.lambda_ssim * logs[f"{d}/ssim"]
                if features:
                    wanted = self._teacher_features(d, inputs[d])
                    logs[f"{d}/feature"] = _feature_loss(features, wanted)
                    loss = loss + cfg.lambda_feature * logs[f"{d}/feature"]
                if self.discriminators:
                    verdict = self.discriminators[d](student)
                    logs[f"{d}/gan"] = losses.generator_adversarial_loss(cfg.gan_mode, verdict)
                    loss = loss + cfg.lambda_gan * logs[f"{d}/gan"]
        backward_and_step(self.scaler, self.opt, loss)
        if self.discriminators:
            students = {d: out[d][0].detach() for d in self.directions}
            logs |= self._discriminator_step(students, targets)
        self.scaler.update()
        self.sched.step()
        if self.sched_D is not None:
            self.sched_D.step()
        self.step_count += 1
        logs["total"] = loss
        names = {"AtoB": ("real_x", "student_y", "teacher_y"),
                 "BtoA": ("real_y", "student_x", "teacher_x")}  # fmt: skip
        visuals = {
            name: image
            for d in self.directions
            for name, image in zip(names[d], (inputs[d], out[d][0], targets[d]), strict=True)
        }
        return {k: v.detach() for k, v in logs.items()}, visuals

    @torch.no_grad()
    def _teacher_features(self, direction: str, x: Tensor) -> list[Tensor]:
        return forward_with_taps(self.teachers[direction], x, self.teacher_taps[direction])[1]

    def _discriminator_step(
        self, students: dict[str, Tensor], teachers: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """The teacher run's discriminators learn teacher outputs (real) from the students'."""
        assert self.opt_D is not None
        set_requires_grad(list(self.discriminators.values()), True)
        logs = {}
        with autocast_for(self.cfg, self.device):
            for d, judge in self.discriminators.items():
                real, fake = judge(teachers[d]), judge(students[d])
                logs[f"{d}/D"] = losses.discriminator_loss(self.cfg.gan_mode, real, fake)
        backward_and_step(self.scaler, self.opt_D, torch.stack(list(logs.values())).sum())
        return logs

    def learning_rate(self) -> float:
        return float(self.sched.get_last_lr()[0])

    def weights(self) -> dict[str, nn.Module]:
        """G and F are the names a run's checkpoint (and export) expects; the adapters and
        discriminators train along and resume with them."""
        names = {"AtoB": "G", "BtoA": "F"}
        nets: dict[str, nn.Module] = {names[d]: net for d, net in self.nets.items()}
        nets |= {f"adapters_{d}": a for d, a in self.adapters.items()}
        nets |= {_DISCRIMINATOR[d]: judge for d, judge in self.discriminators.items()}
        return nets

    def _steppers(self) -> dict[str, ckpt.Stepper]:
        """The student's optimiser, and the discriminators' when there is a GAN term."""
        steppers: dict[str, ckpt.Stepper] = {"S": (self.opt, self.sched)}
        if self.opt_D is not None and self.sched_D is not None:
            steppers["D"] = (self.opt_D, self.sched_D)
        return steppers


def teacher_parts(
    cfg: TrainConfig, teacher: TeacherRecord | None
) -> tuple[dict[str, nn.Module], dict[str, nn.Module]]:
    """The teacher's generators the run needs (to start the student from, or to match features
    with) and its discriminators (for the adversarial term), by direction; or why this teacher
    cannot give what the config asks for. Checked before the teacher's outputs are cached."""
    nets = dict(teacher.networks) if teacher is not None else {}
    needs_nets = cfg.lambda_feature > 0 or cfg.distill_init == "teacher"
    if needs_nets and not nets:
        raise DistillError(
            "lambda_feature and distill_init=teacher need the teacher's weights (a run, or a "
            "store model exported with them); an imported ONNX graph teaches by its outputs only"
        )
    usable = {d: n for d, n in nets.items() if isinstance(n, ResnetGenerator)}
    if needs_nets and len(usable) < len(nets):
        raise DistillError(
            "a pruned start and feature matching need a ResNet teacher; distil this one with "
            "--set distill_init=random (and lambda_feature 0)"
        )
    if cfg.distill_init == "random" and cfg.lambda_feature == 0:
        usable = {}
    judges: dict[str, nn.Module] = {}
    if cfg.lambda_gan > 0:
        if teacher is None or not set(cfg.directions) <= set(teacher.discriminators):
            raise DistillError("lambda_gan needs a training run as teacher (its discriminators)")
        judges = {d: teacher.discriminators[d] for d in cfg.directions}
    return dict(usable), judges


def _initialise(
    cfg: TrainConfig,
    students: Mapping[str, nn.Module],
    teachers: Mapping[str, nn.Module],
    dataset: DistillDataset,
) -> dict[str, str]:
    """Each student as a pruned copy of its teacher (GAN Compression's start), calibrated on
    the first training inputs; or as initialised, where that cannot or should not be done.
    A resumed run loads its checkpoint over this."""
    report: dict[str, str] = {}
    for d, student in students.items():
        teacher = teachers.get(d)
        if cfg.distill_init == "random" or teacher is None:
            report[d] = "random"
            continue
        try:
            transfer_weights(teacher, student)
        except TransferError as exc:
            if cfg.distill_init == "teacher":
                raise DistillError(f"cannot start the student from the teacher: {exc}") from None
            report[d] = f"random ({exc})"
            continue
        images = torch.stack([dataset[k][_source(d)] for k in range(_CALIBRATION_IMAGES)])
        calibrate_separable(student, images)
        report[d] = "teacher"
    return report


def _adapters(
    student: nn.Module, teacher: nn.Module, taps: list[int], teacher_taps: list[int]
) -> nn.ModuleList:
    """1x1 convolutions from the student's features at each tap to the teacher's channels."""
    widths = zip(tap_widths(student, taps), tap_widths(teacher, teacher_taps), strict=True)
    return nn.ModuleList(nn.Conv2d(s, t, 1) for s, t in widths)


# --- fidelity --------------------------------------------------------------------------------


def _held_out(cache: Path, direction: str) -> Iterator[ImagePair]:
    for source, target in _pairs(cache / "test" / direction):
        yield load_image(source), load_image(target)


def fidelity(
    run_dir: Path, nets: Mapping[str, nn.Module], generator: str
) -> dict[str, dict[str, Any]]:
    """PSNR of each student against its teacher on the cached held-out images, next to the
    identity mapping's (the input itself), the bar a student must beat."""
    cache = run_dir / CACHE_DIR
    result = {}
    for direction, net in nets.items():
        scored = score(
            _held_out(cache, direction), net, input_multiple(generator), torch.device("cpu")
        )
        result[direction] = {
            "psnr_db": round(scored.psnr, 3),
            "identity_psnr_db": round(scored.baseline_psnr, 3),
            "images": scored.n,
        }
    return result
