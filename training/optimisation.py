"""What every family's training step shares (CycleGAN/DiscoGAN, CUT, distillation): the
device, Adam with its learning-rate schedule, one AMP-scaled optimiser step, autocast, and a
batch on the device. A home of its own so the families import it and not each other."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from .config import TrainConfig
from .ddp import DistInfo

__all__ = [
    "adam_stepper",
    "autocast_for",
    "backward_and_step",
    "linear_decay",
    "resolve_device",
    "set_requires_grad",
    "to_device",
]


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
