"""Which step model and dataset a config's family trains: CycleGAN/DiscoGAN's
:class:`~training.trainer.Trainer`, CUT/FastCUT's :class:`~training.cut.CutTrainer`, or a
distillation's :class:`~training.distill.Distiller` over its teacher's cached outputs. The one
place that knows every family, so the families never import the loop and the loop never
imports a family."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from . import checkpoint as ckpt
from .config import TrainConfig
from .cut import CutTrainer
from .data import build_train_dataset
from .ddp import DistInfo, barrier
from .distill import (
    CACHE_DIR,
    DistillDataset,
    Distiller,
    TeacherRecord,
    build_teacher_cache,
    teacher_parts,
)
from .trainer import Trainer

__all__ = ["StepModel", "build_step_model", "training_data"]


class StepModel(Protocol):
    """What the loop trains: the CycleGAN/DiscoGAN :class:`Trainer`, or a distillation's
    students (:class:`training.distill.Distiller`)."""

    step_count: int

    def train_step(
        self, batch: dict[str, Tensor]
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]: ...

    def learning_rate(self) -> float: ...

    def weights(self) -> dict[str, nn.Module]: ...

    def training_state(self) -> ckpt.TrainingState: ...

    def resume_from(self, path: Path) -> None: ...


def training_data(
    cfg: TrainConfig, dist_info: DistInfo, device: torch.device, teacher: TeacherRecord | None
) -> Dataset[Any]:
    """The run's dataset; for a distillation, the teacher's outputs are cached first (once, by
    the main process, while the others wait)."""
    if cfg.model != "distill":
        return build_train_dataset(cfg)
    teacher_parts(cfg, teacher)  # what the config asks of the teacher, before it runs
    cache = Path(cfg.out) / CACHE_DIR
    if dist_info.is_main and teacher is not None:
        build_teacher_cache(cfg, teacher, Path(cfg.out))
    barrier(dist_info)
    if not cache.exists():
        raise ckpt.CheckpointError(
            f"{cfg.out} has no cached teacher outputs: start the distillation with its teacher"
        )
    return DistillDataset(cache, cfg.directions)


def build_step_model(
    cfg: TrainConfig,
    device: torch.device,
    dist_info: DistInfo,
    *,
    dataset: Dataset[Any],
    teacher: TeacherRecord | None,
) -> StepModel:
    """The family's step model at step 0 (the loop restores a checkpoint into it)."""
    if cfg.model == "distill":
        assert isinstance(dataset, DistillDataset)
        return Distiller(cfg, device, dist_info, teacher=teacher, dataset=dataset)
    if cfg.model in ("cut", "fastcut"):
        return CutTrainer(cfg, device, dist_info)
    return Trainer(cfg, device, dist_info)
