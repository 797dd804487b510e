"""A ResNet generator's residual stream at a few depths, for intermediate-feature distillation.

GAN Compression (Li et al., CVPR 2020) makes the student match the teacher's features, not only
its output, at the same places of a ResNet-9 (``model.9/12/15/18``: the stream entering the
first block, then after every third block). A student of another depth is tapped at the same
fractions of its depth. Features are taken by running the generator's ``model`` sequence step by
step, not by hooks, so the call also works compiled and under DDP.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.mobile_resnet import MobileResnetBlock
from models.resnet import ResnetBlock, ResnetGenerator

__all__ = [
    "FeatureTapError",
    "forward_with_taps",
    "residual_taps",
    "spread_blocks",
    "tap_widths",
]


class FeatureTapError(ValueError):
    """The network has no residual stream to tap (not a ResNet generator, or no blocks)."""


def spread_blocks(n_of: int, n_kept: int) -> list[int]:
    """`n_kept` evenly spaced indices among `n_of` blocks, the last one included."""
    if n_kept > n_of:
        raise FeatureTapError(f"cannot keep {n_kept} of {n_of} blocks")
    return [round((k + 1) * n_of / n_kept) - 1 for k in range(n_kept)]


def residual_taps(net: nn.Module, n_taps: int = 4) -> list[int]:
    """Positions in ``net.model`` whose outputs are the residual stream: the activation that
    enters the first block, then block outputs at evenly spaced depths, the last block's
    included (``[9, 12, 15, 18]`` for ResNet-9)."""
    if not isinstance(net, ResnetGenerator):
        raise FeatureTapError("feature taps are defined for ResNet generators only")
    blocks = [i for i, m in enumerate(net.model) if isinstance(m, ResnetBlock | MobileResnetBlock)]
    if not blocks or n_taps < 2:
        raise FeatureTapError("a generator without residual blocks has no feature taps")
    chosen = spread_blocks(len(blocks), min(n_taps - 1, len(blocks)))
    return [blocks[0] - 1, *(blocks[i] for i in chosen)]


def forward_with_taps(
    net: nn.Module, x: Tensor, taps: list[int], *, encode_only: bool = False
) -> tuple[Tensor, list[Tensor]]:
    """`net(x)` and the outputs of ``net.model[i]`` for every i in `taps`, in order. With
    `encode_only` the pass stops at the last tap (CUT encodes images that way)."""
    wanted, features, last = set(taps), [], max(taps)
    for index, layer in enumerate(net.model):  # type: ignore[arg-type]
        x = layer(x)
        if index in wanted:
            features.append(x)
        if encode_only and index == last:
            break
    return x, features


def tap_widths(net: nn.Module, taps: list[int], input_nc: int = 3) -> list[int]:
    """The channels of each tapped output, from one pass over a small image in eval mode (so
    the probe moves no batch-norm statistics and draws no dropout)."""
    parameter = next(net.parameters())
    probe = torch.zeros(1, input_nc, 32, 32, device=parameter.device, dtype=parameter.dtype)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            _, features = forward_with_taps(net, probe, taps, encode_only=True)
    finally:
        net.train(was_training)
    return [f.shape[1] for f in features]
