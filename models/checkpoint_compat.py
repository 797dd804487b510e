"""Load public and wrapped state dicts into our networks without renaming keys by hand.

Public CycleGAN checkpoints were saved across PyTorch versions and wrappers: some carry
`module.` (DataParallel/DDP) or `_orig_mod.` (torch.compile) prefixes, and those from before
PyTorch 0.4 hold running statistics for InstanceNorm layers that today have none and lack the
BatchNorm step counters that today exist.
"""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from models.layers import BATCH_NORMS, INSTANCE_NORMS

_WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")
_RUNNING_STAT_SUFFIXES: tuple[str, ...] = ("running_mean", "running_var", "num_batches_tracked")
_MAX_LISTED = 5


class IncompatibleCheckpointError(ValueError):
    """A state dict that does not fit the network; says which keys and shapes disagree."""

    def __init__(
        self,
        message: str,
        *,
        missing: tuple[str, ...] = (),
        unexpected: tuple[str, ...] = (),
        mismatched: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched


def _listing(label: str, items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"{len(items)} {label}: {shown}{more}"


def strip_wrapper_prefixes(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove `module.` / `_orig_mod.` prefixes when every key carries them (nesting too)."""
    out: dict[str, Tensor] = OrderedDict(state_dict)
    stripped = True
    while stripped and out:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in out):
                out = OrderedDict((k[len(prefix) :], v) for k, v in out.items())
                stripped = True
    return out


def _drop_instance_norm_stats(net: nn.Module, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop running-stat keys aimed at InstanceNorm layers that keep no running stats."""
    stale = {
        f"{name}.{suffix}"
        for name, m in net.named_modules()
        if isinstance(m, INSTANCE_NORMS) and not m.track_running_stats
        for suffix in _RUNNING_STAT_SUFFIXES
    }
    return OrderedDict((k, v) for k, v in state_dict.items() if k not in stale)


def _fill_batch_counters(net: nn.Module, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Add the BatchNorm step counters that checkpoints from before PyTorch 0.4 lack.

    The counter only matters for momentum=None; 0 is what PyTorch itself assumes for old
    files, but it does so from version metadata that a re-keyed dict no longer carries.
    """
    out = OrderedDict(state_dict)
    for name, m in net.named_modules():
        key = f"{name}.num_batches_tracked"
        covered = f"{name}.running_mean" in out  # only layers the checkpoint does hold
        if isinstance(m, BATCH_NORMS) and m.track_running_stats and covered and key not in out:
            out[key] = torch.tensor(0, dtype=torch.long)
    return out


def load_compatible_state_dict(
    net: nn.Module, state_dict: Mapping[str, Tensor], *, strict: bool = True
) -> None:
    """Load `state_dict` into `net` after undoing wrapper prefixes and old-PyTorch quirks.

    Raises IncompatibleCheckpointError (not torch's RuntimeError) naming the offending keys:
    shape mismatches always, missing/unexpected keys only when `strict`.
    """
    cleaned = _drop_instance_norm_stats(net, strip_wrapper_prefixes(state_dict))
    cleaned = _fill_batch_counters(net, cleaned)
    expected = net.state_dict()
    missing = [k for k in expected if k not in cleaned]
    unexpected = [k for k in cleaned if k not in expected]
    mismatched = [
        f"{k} (checkpoint {tuple(v.shape)}, network {tuple(expected[k].shape)})"
        for k, v in cleaned.items()
        if k in expected and v.shape != expected[k].shape
    ]
    problems = [_listing("shape mismatches", mismatched)] if mismatched else []
    if strict:
        problems += [_listing("missing keys", missing)] if missing else []
        problems += [_listing("unexpected keys", unexpected)] if unexpected else []
    if problems:
        raise IncompatibleCheckpointError(
            f"checkpoint does not fit {type(net).__name__}: " + "; ".join(problems),
            missing=tuple(missing),
            unexpected=tuple(unexpected),
            mismatched=tuple(mismatched),
        )
    try:
        net.load_state_dict(cleaned, strict=strict)
    except RuntimeError as e:  # anything the checks above did not foresee
        raise IncompatibleCheckpointError(
            f"checkpoint does not fit {type(net).__name__}: {e}"
        ) from e


def load_pth_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a `.pth` state dict safely (tensors only, no pickled code) onto the CPU.

    Accepts a bare state dict or one wrapped as `{'state_dict': ...}`.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise IncompatibleCheckpointError(
            f"{os.fspath(path)} holds more than tensors and will not be unpickled: {e}"
        ) from e
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise IncompatibleCheckpointError(
            f"{os.fspath(path)} is not a state dict (a mapping of names to tensors)"
        )
    return OrderedDict(obj)
