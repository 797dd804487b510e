"""The training loop: CycleGAN's objective (DiscoGAN is the same loop with its own losses and
defaults), mixed precision, channels_last, torch.compile, DDP under torchrun, exact resume.

Key: G (X→Y), F (Y→X), D_Y, D_X. One `Trainer.step` is one optimiser step of G and F, then
of D_X and D_Y, as in the reference implementation. The benchmark drives the same `step`.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from . import checkpoint as ckpt
from . import losses
from .config import TrainConfig
from .data import StepSampler, build_train_dataset
from .ddp import DistInfo, barrier, init_distributed, mean_across_ranks, shutdown
from .ema import GeneratorEMA
from .image_pool import ImagePool
from .networks import DiscriminatorPair, GeneratorPair, Networks, build_networks

if TYPE_CHECKING:
    from .distill import TeacherRecord

LOSS_LOG = "losses.jsonl"


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


def resolve_device(name: str, dist_info: DistInfo | None = None) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist_info.local_rank if dist_info else 0)
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but this machine has no CUDA GPU")
    return device


def backward_and_step(
    scaler: torch.amp.GradScaler, optimiser: torch.optim.Optimizer, loss: Tensor
) -> None:
    """One optimiser's step on `loss` through the AMP scaler (a pass-through unless fp16); the
    caller updates the scaler once every optimiser of its training step has stepped."""
    optimiser.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimiser)


def set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def linear_decay(cfg: TrainConfig) -> Callable[[int], float]:
    """LR factor: 1 for the first (1 - decay_fraction) of steps, then linearly down to 0."""
    if cfg.lr_policy == "constant" or cfg.decay_fraction == 0:
        return lambda step: 1.0
    decay_start = cfg.max_steps * (1 - cfg.decay_fraction)
    span = cfg.max_steps - decay_start
    return lambda step: min(1.0, max(0.0, (cfg.max_steps - step) / span))


def adam_stepper(
    cfg: TrainConfig, device: torch.device, params: Iterator[nn.Parameter]
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LambdaLR]:
    """The optimiser every family trains with (Adam at the config's step, betas and weight
    decay; fused, one kernel for all parameters, on CUDA) and its learning-rate schedule."""
    optimiser = torch.optim.Adam(
        params,
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        weight_decay=cfg.weight_decay,
        fused=device.type == "cuda",
    )
    return optimiser, torch.optim.lr_scheduler.LambdaLR(optimiser, linear_decay(cfg))


def autocast_for(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The mixed-precision context the config asks for (none: a no-op)."""
    if cfg.amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def to_device(images: Tensor, cfg: TrainConfig, device: torch.device) -> Tensor:
    """A batch on the training device, channels_last when the config asks for it."""
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if cfg.channels_last else images


@dataclass
class Trainer:
    """Networks, optimisers and the per-step update; knows nothing about files or loops."""

    cfg: TrainConfig
    device: torch.device
    dist_info: DistInfo = field(default_factory=DistInfo)

    def __post_init__(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.nets: Networks = build_networks(cfg)
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        for _, net in self.nets.items():
            net.to(self.device).to(memory_format=memory_format)
        # rank-specific stream for dropout and WGAN-GP mixing (DDP syncs weights, not noise)
        torch.manual_seed(cfg.seed + 1_000 * self.dist_info.rank)

        n = self.nets
        self.opt_G, self.sched_G = adam_stepper(
            cfg, self.device, chain(n.G.parameters(), n.F.parameters())
        )
        self.opt_D, self.sched_D = adam_stepper(
            cfg, self.device, chain(n.D_X.parameters(), n.D_Y.parameters())
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        pool_seed = cfg.seed * 7919 + self.dist_info.rank
        self.pool_X = ImagePool(cfg.pool_size, seed=pool_seed)  # past F(y) for D_X
        self.pool_Y = ImagePool(cfg.pool_size, seed=pool_seed + 1)  # past G(x) for D_Y

        def compile_(net: nn.Module) -> nn.Module:
            return torch.compile(net, mode=cfg.compile_mode) if cfg.compile else net  # type: ignore[return-value]

        self.D_X, self.D_Y = compile_(n.D_X), compile_(n.D_Y)
        self.generators: nn.Module = GeneratorPair(compile_(n.G), compile_(n.F))
        self.discriminators: nn.Module = DiscriminatorPair(self.D_X, self.D_Y)
        if self.dist_info.enabled:
            if cfg.gan_mode == "wgangp":
                raise ValueError("gan_mode wgangp is not supported under DDP (double backward)")
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.generators = DistributedDataParallel(self.generators, device_ids=ids)
            self.discriminators = DistributedDataParallel(self.discriminators, device_ids=ids)

        if cfg.model == "cyclegan":
            self.cycle_distance: Callable[[Tensor, Tensor], Tensor] = losses.cycle_loss
        else:
            self.cycle_distance = partial(losses.reconstruction_loss, kind=cfg.recon_loss)
        self.step_count = 0

    # --- one optimisation step --------------------------------------------------------------

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast_for(self.cfg, self.device)

    def to_device(self, images: Tensor) -> Tensor:
        return to_device(images, self.cfg, self.device)

    def step(self, real_x: Tensor, real_y: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """One update of G, F then D_X, D_Y. Returns detached losses and the step's images."""
        cfg, mode = self.cfg, self.cfg.gan_mode
        real_x, real_y = self.to_device(real_x), self.to_device(real_y)
        use_identity = cfg.lambda_identity_weight > 0

        # G and F: fool D_Y and D_X, reconstruct, and (CycleGAN) map each domain onto itself.
        set_requires_grad([self.nets.D_X, self.nets.D_Y], False)
        with self.autocast():
            out = self.generators(real_x, real_y, use_identity)
            loss_gan_G = losses.generator_adversarial_loss(mode, self.D_Y(out["fake_y"]))
            loss_gan_F = losses.generator_adversarial_loss(mode, self.D_X(out["fake_x"]))
            loss_cycle_X = self.cycle_distance(out["rec_x"], real_x)
            loss_cycle_Y = self.cycle_distance(out["rec_y"], real_y)
            loss_G = loss_gan_G + loss_gan_F + cfg.lambda_cycle * (loss_cycle_X + loss_cycle_Y)
            logs = {
                "G/gan": loss_gan_G,
                "F/gan": loss_gan_F,
                "cycle/X": loss_cycle_X,
                "cycle/Y": loss_cycle_Y,
            }
            if use_identity:
                loss_idt = losses.identity_loss(out["idt_y"], real_y) + losses.identity_loss(
                    out["idt_x"], real_x
                )
                loss_G = loss_G + cfg.lambda_identity_weight * loss_idt
                logs["identity"] = loss_idt
        backward_and_step(self.scaler, self.opt_G, loss_G)

        # D_X and D_Y: real vs. a mix of current and past fakes (the image pool).
        set_requires_grad([self.nets.D_X, self.nets.D_Y], True)
        fake_x = self.pool_X.query(out["fake_x"].detach())
        fake_y = self.pool_Y.query(out["fake_y"].detach())
        with self.autocast():
            logits = self.discriminators(real_x, real_y, fake_x, fake_y)
            loss_D_X = losses.discriminator_loss(mode, logits["real_x"], logits["fake_x"])
            loss_D_Y = losses.discriminator_loss(mode, logits["real_y"], logits["fake_y"])
        loss_D = loss_D_X + loss_D_Y
        if mode == "wgangp":
            penalty = losses.gradient_penalty(self.D_X, real_x, fake_x) + losses.gradient_penalty(
                self.D_Y, real_y, fake_y
            )
            loss_D = loss_D + cfg.lambda_gp * penalty
            logs["D/gp"] = penalty
        backward_and_step(self.scaler, self.opt_D, loss_D)
        self.scaler.update()
        self.sched_G.step()
        self.sched_D.step()
        self.step_count += 1

        logs.update({"D_X": loss_D_X, "D_Y": loss_D_Y, "G/total": loss_G})
        visuals = {
            "real_x": real_x,
            "fake_y": out["fake_y"],
            "rec_x": out["rec_x"],
            "real_y": real_y,
            "fake_x": out["fake_x"],
            "rec_y": out["rec_y"],
        }
        return {k: v.detach() for k, v in logs.items()}, visuals

    def train_step(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """:meth:`step` on a batch of the training dataset (what the loop calls)."""
        return self.step(batch["A"], batch["B"])

    def learning_rate(self) -> float:
        return float(self.sched_G.get_last_lr()[0])

    # --- state for checkpoints --------------------------------------------------------------

    def _steppers(self) -> dict[str, ckpt.Stepper]:
        return {"G": (self.opt_G, self.sched_G), "D": (self.opt_D, self.sched_D)}

    def training_state(self) -> ckpt.TrainingState:
        tensors, meta = ckpt.optimisation_state(self._steppers(), self.scaler)
        tensors.update(self.pool_X.state_tensors("pool.X"))
        tensors.update(self.pool_Y.state_tensors("pool.Y"))
        tensors.update(ckpt.rng_state())
        return ckpt.TrainingState(step=self.step_count, tensors=tensors, meta=meta)

    def load_training_state(self, state: ckpt.TrainingState) -> None:
        ckpt.load_optimisation_state(state, self._steppers(), self.scaler)
        self.pool_X.load_state_tensors("pool.X", state.tensors, self.device)
        self.pool_Y.load_state_tensors("pool.Y", state.tensors, self.device)
        ckpt.load_rng_state(state.tensors)
        self.step_count = state.step

    def weights(self) -> dict[str, nn.Module]:
        return dict(self.nets.items())

    def resume_from(self, path: Path) -> None:
        ckpt.load_weights(path, self.weights())
        self.load_training_state(ckpt.load_state(path))


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
        dataset = _training_data(cfg, dist_info, device, teacher)
        return _train(
            cfg, dataset, device, dist_info, resume=resume, progress=progress, teacher=teacher
        )
    finally:
        shutdown(dist_info)


def _training_data(
    cfg: TrainConfig, dist_info: DistInfo, device: torch.device, teacher: TeacherRecord | None
) -> Dataset[Any]:
    """The run's dataset; for a distillation, the teacher's outputs are cached first (once, by
    the main process, while the others wait)."""
    if cfg.model != "distill":
        return build_train_dataset(cfg)
    from .distill import CACHE_DIR, DistillDataset, build_teacher_cache, teacher_parts

    teacher_parts(cfg, teacher)  # what the config asks of the teacher, before it runs
    cache = Path(cfg.out) / CACHE_DIR
    if dist_info.is_main and teacher is not None:
        build_teacher_cache(cfg, teacher, Path(cfg.out))
    barrier(dist_info)
    if not cache.exists():
        raise ckpt.CheckpointError(
            f"{cfg.out} has no cached teacher outputs: start the distillation with its teacher"
        )
    return DistillDataset(cache)


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
    trainer: StepModel
    if cfg.model == "distill":
        from .distill import DistillDataset, Distiller

        assert isinstance(dataset, DistillDataset)
        trainer = Distiller(cfg, device, dist_info, teacher=teacher, dataset=dataset)
    elif cfg.model in ("cut", "fastcut"):
        from .cut import CutTrainer

        trainer = CutTrainer(cfg, device, dist_info)
    else:
        trainer = Trainer(cfg, device, dist_info)
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
