"""Distil a trained generator pair (the teacher) into a compact student (`unpaired distill`).

After GAN Compression (Li et al., CVPR 2020): the student learns to reproduce the teacher's
outputs on the source domain's images, per direction, with an L1 term plus a structural one
(1 - SSIM, from pytorch-msssim). The teacher runs once, before training: its outputs on every
training image and on held-out images are cached in the run folder (``teacher/``), so the CPU
spends its steps on the student, a resumed run reuses them, and the export measures the
student's fidelity to the teacher without the teacher at hand.

The teacher is any callable from uint8 RGB images to the translated images (a run's generators,
or a store model through the serving engine, which the CLI builds), so anything the project
can serve can be distilled. A distillation run is a training run: the student is its `G`/`F`
(config `generator`, `ngf`, `norm`), checkpoints, resume, Ctrl-C, TensorBoard, AMP and DDP are
the trainer's own (:func:`training.trainer.train`), and `unpaired export` takes it as it is.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from models import input_multiple
from models.imaging import find_images, image_to_tensor, load_image
from models.manifest import DIRECTIONS, Architecture

from . import checkpoint as ckpt
from .config import TrainConfig
from .ddp import DistInfo
from .evaluate import ImagePair, score
from .networks import build_run_generator
from .synthetic import get_pair
from .trainer import autocast_for, linear_decay, to_device

__all__ = [
    "CACHE_DIR",
    "DistillDataset",
    "Distiller",
    "TeacherRecord",
    "build_teacher_cache",
    "fidelity",
    "teacher_info",
]

CACHE_DIR = "teacher"  # in the run folder: the teacher's outputs, per split and direction
_INFO = "teacher.json"
_SPLITS = ("train", "test")
_CHUNK = 8  # images per teacher call

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
    """The folder's images at the training load side (aspect kept, sides multiples of 4)."""
    assert cfg.dataroot is not None
    side = cfg.resolved_load_size
    for path in find_images(Path(cfg.dataroot) / f"{split}{_source(direction)}")[:n]:
        image = load_image(path)
        scale = side / min(image.size)
        width, height = (max(4, round(s * scale) // 4 * 4) for s in image.size)
        yield np.asarray(image.resize((width, height), Image.Resampling.BICUBIC))


def source_images(cfg: TrainConfig, split: str, direction: str) -> Iterator[np.ndarray]:
    """The source domain's images of a split: training inputs, or held-out ones for fidelity."""
    n = cfg.n_train if split == "train" else cfg.distill_holdout
    if cfg.dataset is not None:
        return _synthetic_images(cfg, split, direction, n)
    return _folder_images(cfg, split, direction, n)


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
    info: dict[str, Any] = {"teacher": teacher.info(), "dataset": cfg.dataset or cfg.dataroot}
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
        for direction in DIRECTIONS:
            folder = partial / split / direction
            folder.mkdir(parents=True)
            index = 0
            for chunk in _chunks(source_images(cfg, split, direction)):
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
    """(input, teacher output) pairs of both directions, cropped and flipped alike.

    Keys follow the trainer's datasets: any non-negative key wraps, and all randomness comes
    from (seed, key), so a resumed run sees the batches the uninterrupted one saw.
    """

    def __init__(self, cache: Path, *, size: int, flip: bool, seed: int) -> None:
        self.pairs = {d: _pairs(cache / "train" / d) for d in DIRECTIONS}
        self.size, self.flip, self.seed = size, flip, seed

    def __len__(self) -> int:
        return max(len(p) for p in self.pairs.values())

    def __getitem__(self, key: int) -> dict[str, Tensor]:
        sample: dict[str, Tensor] = {}
        for k, direction in enumerate(DIRECTIONS):
            pairs = self.pairs[direction]
            source, target = pairs[key % len(pairs)]
            rng = np.random.default_rng([self.seed, key, k])
            x, t = self._augment(load_image(source), load_image(target), rng)
            sample[_source(direction)] = x
            sample[f"{_source(direction)}_teacher"] = t
        return sample

    def _augment(
        self, x: Image.Image, t: Image.Image, rng: np.random.Generator
    ) -> tuple[Tensor, Tensor]:
        width, height = x.size
        side = min(self.size, width, height)
        left = int(rng.integers(0, width - side + 1))
        top = int(rng.integers(0, height - side + 1))
        box = (left, top, left + side, top + side)
        x, t = x.crop(box), t.crop(box)
        if self.flip and rng.random() < 0.5:
            x = x.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            t = t.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image_to_tensor(x), image_to_tensor(t)


# --- the student's update --------------------------------------------------------------------


class StudentPair(nn.Module):
    """Both students in one module, so DDP reduces their gradients together."""

    def __init__(self, G: nn.Module, F: nn.Module) -> None:
        super().__init__()
        self.G, self.F = G, F

    def forward(self, real_x: Tensor, real_y: Tensor) -> tuple[Tensor, Tensor]:
        return self.G(real_x), self.F(real_y)


def _structure_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """1 - SSIM on [0, 1] images (pytorch-msssim; 7x7 windows so 64x64 crops work)."""
    from pytorch_msssim import ssim

    s, t = student.float().add(1).div(2), teacher.float().add(1).div(2)
    return 1 - ssim(s, t, data_range=1.0, size_average=True, win_size=7)


class Distiller:
    """The students, their optimiser and one update; the trainer's loop drives it."""

    def __init__(self, cfg: TrainConfig, device: torch.device, dist_info: DistInfo) -> None:
        self.cfg, self.device, self.dist_info = cfg, device, dist_info
        torch.manual_seed(cfg.seed)
        self.G, self.F = build_run_generator(cfg), build_run_generator(cfg)
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        for net in (self.G, self.F):
            net.to(device).to(memory_format=memory_format)
        self.opt = torch.optim.Adam(
            chain(self.G.parameters(), self.F.parameters()),
            lr=cfg.lr,
            betas=(cfg.beta1, cfg.beta2),
            fused=device.type == "cuda",
        )
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, linear_decay(cfg))
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
        pair: nn.Module = StudentPair(self.G, self.F)
        if cfg.compile:
            pair = torch.compile(pair, mode=cfg.compile_mode)  # type: ignore[assignment]
        if dist_info.enabled:
            ids = [device.index] if device.type == "cuda" else None
            pair = DistributedDataParallel(pair, device_ids=ids)
        self.students = pair
        self.step_count = 0

    def train_step(
        self, batch: Mapping[str, Tensor]
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """One update of both students toward the teacher's outputs."""
        x, tx, y, ty = (
            to_device(batch[key], self.cfg, self.device)
            for key in ("A", "A_teacher", "B", "B_teacher")
        )
        with autocast_for(self.cfg, self.device):
            sx, sy = self.students(x, y)
            logs = {
                "AtoB/l1": nn.functional.l1_loss(sx, tx),
                "BtoA/l1": nn.functional.l1_loss(sy, ty),
                "AtoB/ssim": _structure_loss(sx, tx),
                "BtoA/ssim": _structure_loss(sy, ty),
            }
            loss = logs["AtoB/l1"] + logs["BtoA/l1"]
            loss = loss + self.cfg.lambda_ssim * (logs["AtoB/ssim"] + logs["BtoA/ssim"])
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        self.step_count += 1
        logs["total"] = loss
        visuals = {
            "real_x": x,
            "student_y": sx,
            "teacher_y": tx,
            "real_y": y,
            "student_x": sy,
            "teacher_x": ty,
        }
        return {k: v.detach() for k, v in logs.items()}, visuals

    def learning_rate(self) -> float:
        return float(self.sched.get_last_lr()[0])

    def weights(self) -> dict[str, nn.Module]:
        return {"G": self.G, "F": self.F}  # the names a run's checkpoint (and export) expects

    def training_state(self) -> ckpt.TrainingState:
        tensors, meta = ckpt.optimizer_state("S", self.opt)
        state_meta: dict[str, Any] = {"optim.S": meta, "sched.S": self.sched.state_dict()}
        state_meta["scaler"] = self.scaler.state_dict()
        tensors = {**tensors, **ckpt.rng_state()}
        return ckpt.TrainingState(step=self.step_count, tensors=tensors, meta=state_meta)

    def resume_from(self, path: Path) -> None:
        ckpt.load_weights(path, self.weights())
        state = ckpt.load_state(path)
        ckpt.load_optimizer_state("S", self.opt, state.tensors, state.meta["optim.S"])
        self.sched.load_state_dict(state.meta["sched.S"])
        if state.meta.get("scaler"):
            self.scaler.load_state_dict(state.meta["scaler"])
        ckpt.load_rng_state(state.tensors)
        self.step_count = state.step


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
