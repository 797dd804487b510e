"""The training loop every family runs (CycleGAN/DiscoGAN, CUT, distillation): exact resume,
Ctrl-C/SIGTERM to a checkpoint, a time budget, logging, DDP under torchrun. Which step model
and dataset a config's family trains is :mod:`training.families`' choice.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from . import checkpoint as ckpt
from .config import TrainConfig
from .data import StepSampler
from .ddp import DistInfo, barrier, init_distributed, mean_across_ranks, shutdown
from .ema import GeneratorEMA
from .families import StepModel, build_step_model, training_data
from .optimisation import resolve_device

if TYPE_CHECKING:
    from .distill import TeacherRecord

__all__ = ["LOSS_LOG", "TrainResult", "TrainingInterrupted", "train"]

LOSS_LOG = "losses.jsonl"


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped the run at a step boundary, after saving a checkpoint."""

    def __init__(self, checkpoint: Path | None, step: int) -> None:
        super().__init__(f"interrupted at step {step}")
        self.checkpoint, self.step = checkpoint, step


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path | None
    images_per_second: float


class _StopFlag:
    """Turns Ctrl-C / SIGTERM into a request to stop at the next step boundary; a second
    Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    teacher: TeacherRecord | None = None,
) -> TrainResult:
    """Train (or continue) the run in `cfg.out` until `cfg.max_steps`.

    A distillation (`cfg.model == "distill"`) needs its `teacher` on a new run; a resumed one
    reuses the teacher's outputs cached in the run.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    dist_info = init_distributed(device.type)
    if dist_info.enabled:
        device = resolve_device(cfg.device, dist_info)
    try:
        run_dir = Path(cfg.out)
        if not resume and ckpt.list_checkpoints(run_dir):
            raise ckpt.CheckpointError(
                f"{run_dir} already holds a run; continue it with `unpaired train --resume "
                f"{run_dir}` (or --resume-or-start) or start a new one with another --out"
            )
        dataset = training_data(cfg, dist_info, device, teacher)
        return _train(
            cfg, dataset, device, dist_info, resume=resume, progress=progress, teacher=teacher
        )
    finally:
        shutdown(dist_info)


def _train(
    cfg: TrainConfig,
    dataset: Dataset[Any],
    device: torch.device,
    dist_info: DistInfo,
    *,
    resume: bool,
    progress: bool,
    teacher: TeacherRecord | None = None,
) -> TrainResult:
    run_dir = Path(cfg.out)
    trainer = _start_trainer(
        cfg, device, dist_info, resume=resume, dataset=dataset, teacher=teacher
    )
    start = trainer.step_count
    ema = GeneratorEMA(cfg, trainer.weights()) if cfg.ema_decay > 0 else None
    if ema is not None and resume:
        ema.resume_from(ckpt.latest_checkpoint(run_dir), start)
    main = dist_info.is_main
    loader = _step_loader(cfg, dataset, start, dist_info, device)
    writer = _summary_writer(run_dir) if main else None
    bar = _progress_bar(cfg, start, shown=main and progress)
    images_per_step = cfg.batch_size * dist_info.world_size
    last_checkpoint: Path | None = None
    window_start, window_steps = time.perf_counter(), 0
    rate = 0.0

    def save() -> Path | None:
        if not main:
            return None
        weights = trainer.weights() | (ema.weights() if ema is not None else {})
        return ckpt.save_checkpoint(
            run_dir, cfg, weights, trainer.training_state(), keep=cfg.keep_checkpoints
        )

    deadline = time.monotonic() + cfg.max_minutes * 60 if cfg.max_minutes else None
    with _StopFlag() as stop:
        for batch in loader:
            logs, visuals = trainer.train_step(batch)
            step = trainer.step_count
            if ema is not None:
                ema.update(step)
            window_steps += 1
            out_of_time = deadline is not None and _any_rank(
                time.monotonic() >= deadline, dist_info, device
            )
            if step % cfg.log_every == 0 or step == cfg.max_steps or out_of_time:
                values = mean_across_ranks(
                    {k: v.item() for k, v in logs.items()}, dist_info, device
                )
                now = time.perf_counter()  # .item() above synchronised with the device
                rate = window_steps * images_per_step / (now - window_start)
                window_start, window_steps = now, 0
                lr = trainer.learning_rate()
                if main:
                    _log_scalars(writer, run_dir, step, values, lr, rate)
                    bar.set_postfix(_short(values) | {"img/s": f"{rate:.1f}"}, refresh=False)
            if writer is not None and step % cfg.sample_every == 0:
                writer.add_image("samples", _sample_grid(visuals), step)
            bar.update(1)
            if step % cfg.checkpoint_every == 0 and step != cfg.max_steps:
                last_checkpoint = save() or last_checkpoint
                barrier(dist_info)
            if _any_rank(stop.requested, dist_info, device):
                last_checkpoint = save()
                barrier(dist_info)
                bar.close()
                raise TrainingInterrupted(last_checkpoint, step)
            if out_of_time:  # its last window is logged above; the checkpoint below ends it
                break
    bar.close()
    if trainer.step_count > start or not ckpt.list_checkpoints(run_dir):
        last_checkpoint = save()
    elif main:  # nothing left to train (a resume at max_steps): report the existing one
        last_checkpoint = ckpt.latest_checkpoint(run_dir)
    barrier(dist_info)
    if writer is not None:
        writer.close()
    return TrainResult(run_dir, trainer.step_count, last_checkpoint, rate)


def _progress_bar(cfg: TrainConfig, start: int, *, shown: bool) -> tqdm[Any]:
    return tqdm(
        total=cfg.max_steps, initial=start, disable=not shown, unit="step", dynamic_ncols=True
    )


def _step_loader(
    cfg: TrainConfig,
    dataset: Dataset[Any],
    start: int,
    dist_info: DistInfo,
    device: torch.device,
) -> DataLoader[Any]:
    """Batches for steps `start`..`max_steps` of this rank, the same whether or not the run
    was resumed (see :class:`StepSampler`)."""
    sampler = StepSampler(
        length=len(dataset),  # type: ignore[arg-type]
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        start_step=start,
        stop_step=cfg.max_steps,
        rank=dist_info.rank,
        world_size=dist_info.world_size,
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
        # its own generator: creating the iterator must not draw from the global RNG, which
        # a resumed run has just restored (dropout and the GP mixing draw from it)
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def _start_trainer(
    cfg: TrainConfig,
    device: torch.device,
    dist_info: DistInfo,
    *,
    resume: bool,
    dataset: Dataset[Any],
    teacher: TeacherRecord | None,
) -> StepModel:
    """The trainer at the step the run starts from (0, or its newest checkpoint's), the same on
    every rank, and the run folder ready for this start."""
    run_dir = Path(cfg.out)
    trainer: StepModel = build_step_model(cfg, device, dist_info, dataset=dataset, teacher=teacher)
    if resume:
        trainer.resume_from(ckpt.latest_checkpoint(run_dir))
    # each process looked at the run folder itself (`--resume-or-start` decides per process)
    if not _same_on_every_rank(trainer.step_count, dist_info, device):
        raise ckpt.CheckpointError(
            f"the processes would start from different steps (rank {dist_info.rank}: step "
            f"{trainer.step_count}): {run_dir} must be the same folder, on a shared volume, "
            "for every node"
        )
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.yaml")
        _truncate_loss_log(run_dir / LOSS_LOG, after_step=trainer.step_count)
    return trainer


def _same_on_every_rank(value: int, info: DistInfo, device: torch.device) -> bool:
    if not info.enabled:
        return True
    packed = torch.tensor([value, -value], dtype=torch.int64, device=device)
    dist.all_reduce(packed, op=dist.ReduceOp.MAX)  # (max, -min)
    return int(packed[0]) == -int(packed[1])


def _any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """A stop on any rank stops every rank at the same step (else the rest hang in a collective)."""
    if not info.enabled:
        return flag
    packed = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(packed)
    return bool(packed.item() > 0)


def _short(values: dict[str, float]) -> dict[str, str]:
    keep = ("G/gan", "F/gan", "cycle/X", "cycle/Y", "D_X", "D_Y", "AtoB/l1", "BtoA/l1",
            "AtoB/gan", "AtoB/nce", "BtoA/gan", "BtoA/nce")  # fmt: skip
    return {k.replace("/", "_"): f"{values[k]:.3f}" for k in keep if k in values}


def _summary_writer(run_dir: Path) -> Any:
    from torch.utils.tensorboard import SummaryWriter  # imported late: tensorboard is slow to load

    return SummaryWriter(log_dir=str(run_dir / "tb"))


def _log_scalars(
    writer: Any, run_dir: Path, step: int, values: dict[str, float], lr: float, rate: float
) -> None:
    for key, value in values.items():
        writer.add_scalar(f"loss/{key}", value, step)
    writer.add_scalar("lr", lr, step)
    writer.add_scalar("images_per_second", rate, step)
    record = {"step": step, "lr": lr, "img_per_s": rate, **values}
    with (run_dir / LOSS_LOG).open("a") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_loss_log(path: Path, *, after_step: int) -> None:
    """On resume, forget losses logged after the checkpoint: the run will log them again."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if json.loads(ln)["step"] <= after_step]
    path.write_text("".join(ln + "\n" for ln in lines))


def _sample_grid(visuals: dict[str, Tensor], n: int = 4) -> Tensor:
    """One row per visual, in the step's order (CycleGAN: real x | G(x) | F(G(x)) | real y |
    F(y) | G(F(y))), up to n images each, in [0, 1]."""
    from torchvision.utils import make_grid

    k = min(n, next(iter(visuals.values())).shape[0])
    tiles = torch.cat([image[:k].detach().float().cpu() for image in visuals.values()])
    return make_grid(tiles.add(1).div(2).clamp(0, 1), nrow=k)
