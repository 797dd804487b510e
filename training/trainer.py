"""CycleGAN's training step (DiscoGAN is the same step with its own losses and defaults),
mixed precision, channels_last, torch.compile, DDP under torchrun. The loop that drives it, and
CUT's and distillation's steps, is :mod:`training.runner`.

Key: G (X→Y), F (Y→X), D_Y, D_X. One `Trainer.step` is one optimiser step of G and F, then
of D_X and D_Y, as in the reference implementation. The benchmark drives the same `step`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from . import checkpoint as ckpt
from . import losses
from .config import TrainConfig
from .ddp import DistInfo
from .image_pool import ImagePool
from .networks import DiscriminatorPair, GeneratorPair, Networks, build_networks
from .optimisation import (
    adam_stepper,
    autocast_for,
    backward_and_step,
    set_requires_grad,
    to_device,
)

__all__ = ["Trainer"]


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
