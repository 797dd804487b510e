"""Instance-norm statistics taken from one image and applied to another (tiled inference).

A generator with instance norm normalises every feature map by its own mean and variance, so a
tile cut from a large photo is normalised by *that tile's* statistics: a tile of sky and a tile
of grass come out in different tones, and tiling shows. Thumbnail Instance Normalization (Chen
et al., "Towards Ultra-Resolution Neural Style Transfer via Thumbnail Instance Normalization",
AAAI 2022) fixes this: run the network once on a thumbnail of the whole image, keep every
instance norm's statistics, and normalise every tile with them.

:class:`SharedStatsGenerator` wraps a generator so one graph does both passes::

    y, stats = g(x, stats_in, use_stats)   # x: (N, 3, H, W); stats: (N, S); use_stats: bool

With ``use_stats`` false it is the plain generator (``y == net(x)``) and ``stats`` holds the
statistics it used; with ``use_stats`` true every instance norm uses ``stats_in`` instead.

Statistics are raw feature-map means and variances: a trained network's reach the thousands,
where one float32 step is 1e-4, so they are compared in the units the norm divides by
(:meth:`SharedStatsGenerator.stats_error`), never as absolute numbers beside [-1, 1] outputs.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = ["SharedStatsGenerator", "has_instance_norm", "stats_size"]


class _Context:
    """What the wrapper hands its norm layers for one forward call."""

    def __init__(self) -> None:
        self.stats_in: Tensor | None = None
        self.use_stats: Tensor | None = None
        self.collected: dict[int, Tensor] = {}


class _SharedStatsNorm(nn.Module):
    """Stands in for one InstanceNorm2d: records its own statistics, or uses given ones."""

    def __init__(self, norm: nn.InstanceNorm2d, offset: int, context: _Context) -> None:
        super().__init__()
        if norm.track_running_stats:
            raise ValueError("instance norm with running statistics is not supported")
        self.offset, self.channels, self.eps = offset, norm.num_features, norm.eps
        self.weight, self.bias = norm.weight, norm.bias  # None unless affine
        self._context = [context]  # a list, so nn.Module does not register it

    def forward(self, x: Tensor) -> Tensor:
        context = self._context[0]
        assert context.stats_in is not None and context.use_stats is not None
        mean = x.mean(dim=(2, 3))  # (N, C)
        var = x.var(dim=(2, 3), unbiased=False)  # instance norm uses the biased variance
        given = context.stats_in[:, self.offset : self.offset + 2 * self.channels]
        mean = torch.where(context.use_stats, given[:, : self.channels], mean)
        var = torch.where(context.use_stats, given[:, self.channels :], var)
        context.collected[self.offset] = torch.cat([mean, var], dim=1)
        y = (x - mean[:, :, None, None]) * torch.rsqrt(var[:, :, None, None] + self.eps)
        if self.weight is not None and self.bias is not None:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def _instance_norms(net: nn.Module) -> list[tuple[str, nn.InstanceNorm2d]]:
    return [(n, m) for n, m in net.named_modules() if isinstance(m, nn.InstanceNorm2d)]


def has_instance_norm(net: nn.Module) -> bool:
    return bool(_instance_norms(net))


def stats_size(net: nn.Module) -> int:
    """S: the length of the packed (mean, var) vector of every instance norm."""
    return sum(2 * m.num_features for _, m in _instance_norms(net))


class SharedStatsGenerator(nn.Module):
    """A copy of `net` whose instance norms can use statistics computed on another image."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = copy.deepcopy(net)
        self._context = _Context()
        self._norms: list[tuple[int, int, float]] = []  # (offset, channels, eps) of each norm
        offset = 0
        for name, norm in _instance_norms(self.net):
            parent_name, _, child = name.rpartition(".")
            parent = self.net.get_submodule(parent_name) if parent_name else self.net
            setattr(parent, child, _SharedStatsNorm(norm, offset, self._context))
            self._norms.append((offset, norm.num_features, norm.eps))
            offset += 2 * norm.num_features
        if offset == 0:
            raise ValueError(f"{type(net).__name__} has no instance norm to share statistics of")
        self.size = offset

    def forward(self, x: Tensor, stats_in: Tensor, use_stats: Tensor) -> tuple[Tensor, Tensor]:
        context = self._context
        context.stats_in, context.use_stats, context.collected = stats_in, use_stats, {}
        try:
            y = self.net(x)
            stats = torch.cat([context.collected[k] for k in sorted(context.collected)], dim=1)
        finally:
            context.stats_in = context.use_stats = None
            context.collected = {}
        return y, stats

    def stats_error(self, actual: Tensor, expected: Tensor) -> float:
        """The largest error of packed statistics `actual` against `expected` (N, S) as the
        norms feel it: a mean's error in standard deviations, a variance's as a fraction of it.

        Both are what an error becomes after normalisation ((x - mean) / std): 1e-4 here is
        1e-4 on a normalised activation, whatever the scale the network's features live at."""
        worst = 0.0
        for offset, c, eps in self._norms:
            mean, var = slice(offset, offset + c), slice(offset + c, offset + 2 * c)
            scale = expected[:, var].clamp(min=0) + eps
            mean_error = (actual[:, mean] - expected[:, mean]).abs() / scale.sqrt()
            var_error = (actual[:, var] - expected[:, var]).abs() / scale
            worst = max(worst, float(mean_error.max()), float(var_error.max()))
        return worst

    def example_inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Arguments for tracing: `x`, zero statistics, and the flag off."""
        return x, torch.zeros(x.shape[0], self.size), torch.tensor(False)
