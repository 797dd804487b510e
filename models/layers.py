"""Normalisation and padding factories shared by every architecture.

Networks take the norm as a *name* so it can live in a YAML config; this module is the one
place that turns that name into a layer constructor and decides whether convs need a bias.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import nn

NormLayer = Callable[[int], nn.Module]
"""Builds a norm layer for a given number of channels."""

NORM_TYPES: tuple[str, ...] = ("instance", "instance_affine", "batch", "none")

#: Layer families by torch's public classes (for isinstance checks in init and loading).
CONVOLUTIONS = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)  # fmt: skip
BATCH_NORMS = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
)  # fmt: skip
INSTANCE_NORMS = (
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
)  # fmt: skip
PADDING_TYPES: tuple[str, ...] = ("reflect", "replicate", "zero")


def _identity(num_features: int) -> nn.Module:
    # Identity keeps the slot in nn.Sequential, so indices (and checkpoint keys) do not move.
    del num_features
    return nn.Identity()


def get_norm_layer(norm: str) -> NormLayer:
    """Return a constructor for the named norm, configured as upstream CycleGAN does."""
    if norm == "instance":
        # No affine params and no running stats: this is what the public checkpoints hold.
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm == "instance_affine":
        # A learned scale and shift per channel, as many re-implementations train it.
        return functools.partial(nn.InstanceNorm2d, affine=True, track_running_stats=False)
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "none":
        return _identity
    raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORM_TYPES)}")


def conv_bias(norm: str, override: bool | None = None) -> bool:
    """Whether a conv followed by this norm carries a bias (`override`, when given, decides).

    BatchNorm's learned shift makes a bias redundant, so upstream drops it there. Upstream
    keeps it before InstanceNorm (where it is cancelled, but the public weights contain it),
    and we keep it with no norm at all, where it is the only shift the layer has. Weights from
    other code may differ, so an importer can say what the file holds.
    """
    get_norm_layer(norm)  # validate the name
    return norm != "batch" if override is None else override


def padding_layers(padding_type: str, amount: int) -> tuple[list[nn.Module], int]:
    """Return (explicit padding modules, padding to pass to the conv) for a padding type."""
    if padding_type == "reflect":
        return [nn.ReflectionPad2d(amount)], 0
    if padding_type == "replicate":
        return [nn.ReplicationPad2d(amount)], 0
    if padding_type == "zero":
        return [], amount
    raise ValueError(
        f"unknown padding_type {padding_type!r}; expected one of {', '.join(PADDING_TYPES)}"
    )
