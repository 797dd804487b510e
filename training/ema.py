"""An exponential moving average of the generators' weights, for every model family.

GAN generators oscillate around a good solution from step to step; the average of their recent
weights (Karras et al., Progressive GAN / StyleGAN's ``G_ema``) is a smoother and usually better
generator, at the cost of one copy of each. Until `ema_start` steps the average just follows
the weights (it copies them), so the early, fast-changing ones do not linger in it. The loop
updates it after each step and saves it beside the generators as ``G_ema`` / ``F_ema``;
`unpaired evaluate` and `unpaired export` use it when a checkpoint has one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from . import checkpoint as ckpt
from .config import TrainConfig

__all__ = ["EMA_SUFFIX", "GeneratorEMA"]

EMA_SUFFIX = "_ema"
GENERATORS = ("G", "F")  # the checkpoint names of the generators a run may have


class GeneratorEMA:
    """The averaged copies of a run's generators (those of `weights` named G and F)."""

    def __init__(self, cfg: TrainConfig, weights: Mapping[str, nn.Module]) -> None:
        self.decay, self.start = cfg.ema_decay, cfg.ema_start
        self.step = 0
        self.averaged = {
            name: AveragedModel(net, multi_avg_fn=self._blend, use_buffers=True)
            for name, net in weights.items()
            if name in GENERATORS
        }
        self.sources = {name: weights[name] for name in self.averaged}

    @torch.no_grad()
    def _blend(
        self, averaged: Sequence[Tensor], current: Sequence[Tensor], n_averaged: Tensor | int
    ) -> None:
        if not averaged[0].is_floating_point():  # counters (batch norm's): the latest value
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)
            return
        weight = 1.0 if self.step <= self.start else 1.0 - self.decay
        for a, c in zip(averaged, current, strict=True):
            a.lerp_(c, weight)

    def update(self, step: int) -> None:
        """Fold in the weights after optimiser step `step` (1-based)."""
        self.step = step
        for name, average in self.averaged.items():
            average.update_parameters(self.sources[name])

    def weights(self) -> dict[str, nn.Module]:
        """The averaged generators under their checkpoint names (``G_ema``, ``F_ema``)."""
        return {name + EMA_SUFFIX: average.module for name, average in self.averaged.items()}

    def resume_from(self, path: Path, step: int) -> None:
        ckpt.load_weights(path, self.weights())
        self.step = step
        for average in self.averaged.values():
            average.n_averaged.fill_(max(step, 1))  # averaged already: blend, do not copy
