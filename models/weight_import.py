"""Generators from other CycleGAN code, recognised by the structure of their tensors.

Re-implementations of CycleGAN train the same networks under other names (`block` for
`conv_block`, `G_A2B.`, `generator.`, `netG.` prefixes, Sequentials without a `model`) and with
small differences (affine InstanceNorm, convs without bias, resize-then-conv decoders). Key names
say little; the tensors, in order and in shape, say what the network is. This module reads a
weights file (a pickle of tensors only, or safetensors), finds every group of tensors in it that
is one network, and matches each against the generators of :mod:`models.registry`: the first
convolution gives the width and the channels, the number of convolutions the depth, the tensors
after each convolution the norm. A match maps the file's keys onto ours one by one.

What tensors cannot tell (a network without norm layers looks like non-affine InstanceNorm;
nearest and bilinear resizing have no weights) is decided by documented defaults, reported in the
mapping, and overridden by the caller's choices.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from models.checkpoint_compat import IncompatibleCheckpointError, load_compatible_state_dict
from models.layers import NORM_TYPES
from models.manifest import UPSAMPLINGS, Architecture
from models.registry import UnknownModelError, build_from_architecture, input_multiple

__all__ = ["ImportChoices", "ImportedGenerator", "import_generators", "read_weights"]

_COUNTER = "num_batches_tracked"  # BatchNorm's step counter: not a weight, absent in old files
_STATS = frozenset({"running_mean", "running_var"})
_WRAPPERS = frozenset({"module", "_orig_mod", "state_dict", "model", "models", "net", "nets"})
_MAX_PREFIX_DEPTH = 3
#: Preference where tensors cannot decide: the norm and upsampling public CycleGAN code uses.
_NORM_PREFERENCE = ("instance", "instance_affine", "batch", "none")
_UPSAMPLE_PREFERENCE = ("transpose", "nearest", "bilinear")


@dataclass(frozen=True, kw_only=True)
class ImportChoices:
    """What the user decided where a file is ambiguous; None: inferred from the tensors."""

    arch: str | None = None
    norm: str | None = None
    upsample: str | None = None
    key: str | None = None  # the network to take from a file that holds several

    def __post_init__(self) -> None:
        if self.norm is not None and self.norm not in NORM_TYPES:
            raise IncompatibleCheckpointError(
                f"unknown norm {self.norm!r}; expected one of {', '.join(NORM_TYPES)}"
            )
        if self.upsample is not None and self.upsample not in UPSAMPLINGS[1:]:
            raise IncompatibleCheckpointError(
                f"unknown upsample {self.upsample!r}; expected one of {', '.join(UPSAMPLINGS[1:])}"
            )
        if self.arch is not None:
            try:
                input_multiple(self.arch)
            except UnknownModelError as exc:
                raise IncompatibleCheckpointError(str(exc)) from None


@dataclass(frozen=True)
class ImportedGenerator:
    """One generator found in a file, loaded into our network of the same structure."""

    name: str  # where it sits in the file ('' when the file is the network)
    direction: str | None  # 'AtoB' / 'BtoA' when its name says so
    architecture: Architecture
    net: torch.nn.Module
    key_pairs: tuple[tuple[str, str], ...]  # (file key, our key), in order
    notes: tuple[str, ...] = ()  # what the tensors could not decide, and what was assumed

    def mapping(self) -> dict[str, Any]:
        """What the importer found, for the manifest and the export's printout."""
        arch = self.architecture
        found: dict[str, Any] = {"architecture": arch.generator, "ngf": arch.ngf}
        if blocks := re.match(r"resnet_(\d+)blocks", arch.generator):
            found["blocks"] = int(blocks[1])
        found |= {"norm": arch.norm, "conv_bias": arch.conv_bias, "upsample": arch.upsample}
        found |= {"key": self.name or None, "tensors": len(self.key_pairs)}
        found["first"] = " -> ".join(self.key_pairs[0])
        found["last"] = " -> ".join(self.key_pairs[-1])
        if self.notes:
            found["assumed"] = "; ".join(self.notes)
        return found


# --- reading ---------------------------------------------------------------------------------


def read_weights(path: str | os.PathLike[str]) -> Any:
    """The file's contents, tensors on the CPU; never runs code from the file.

    `.safetensors` holds tensors only. Anything else is read with ``torch.load(weights_only=True)``,
    which refuses a pickle that would need arbitrary code (a pickled nn.Module, a custom class).
    """
    location = os.fspath(path)
    if Path(location).suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(location)
        except (SafetensorError, OSError) as exc:
            raise IncompatibleCheckpointError(f"{location}: not a safetensors file: {exc}") from exc
        # safetensors keeps no order: put "model.10" after "model.9", as the network had them
        return OrderedDict(sorted(tensors.items(), key=lambda kv: _natural(kv[0])))
    try:
        return torch.load(location, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        needs = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if needs is None:
            raise IncompatibleCheckpointError(
                f"{location}: not a PyTorch weights file (it does not unpickle)"
            ) from exc
        raise IncompatibleCheckpointError(
            f"{location} needs arbitrary code to load (it pickles {needs[1]}, not just tensors) "
            "and will not be loaded; save the network's state_dict() instead"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise IncompatibleCheckpointError(f"{location}: not a PyTorch weights file: {exc}") from exc


def _natural(key: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in key.split("."))


# --- tensor groups ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Group:
    """A run of tensors that may be one network: its path in the file and its tensors."""

    name: str
    tensors: Mapping[str, Tensor]
    depth: int = 0  # key components split off (0: a mapping in the file as it is)


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _tensor_groups(obj: Any, path: str = "") -> Iterator[_Group]:
    """Every mapping of tensors in `obj`, whole and split by its leading key components.

    A flat dict may hold several networks (Lightning: ``generator.*``, ``discriminator.*``), so
    each prefix up to three components deep is a candidate too; int-keyed mappings (optimizer
    state) are skipped.
    """
    if not isinstance(obj, Mapping):
        return
    tensors = OrderedDict(
        (k, v) for k, v in obj.items() if isinstance(k, str) and isinstance(v, Tensor)
    )
    if tensors:
        yield _Group(path, tensors)
        for depth in range(1, _MAX_PREFIX_DEPTH + 1):
            split: dict[str, OrderedDict[str, Tensor]] = {}
            for key, value in tensors.items():
                parts = key.split(".")
                if len(parts) > depth:
                    prefix = ".".join(parts[:depth])
                    split.setdefault(prefix, OrderedDict())[".".join(parts[depth:])] = value
            if len(split) > 1:
                yield from (_Group(_join(path, p), t, depth) for p, t in split.items())
    for key, value in obj.items():
        if isinstance(key, str) and isinstance(value, Mapping):
            yield from _tensor_groups(value, _join(path, key))


# --- signatures ------------------------------------------------------------------------------

_Layer = tuple[str, dict[str, tuple[int, ...]]]  # module path, {attribute: shape}


def _layers(keys_and_shapes: Sequence[tuple[str, tuple[int, ...]]]) -> list[_Layer]:
    """Tensors grouped by the module that owns them, in first-seen order (counters dropped)."""
    layers: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in keys_and_shapes:
        module, _, attribute = key.rpartition(".")
        if attribute != _COUNTER:
            layers.setdefault(module, {})[attribute] = shape
    return list(layers.items())


def _signature(layers: Sequence[_Layer]) -> list[tuple[tuple[str, tuple[int, ...]], ...]]:
    return [tuple(sorted(attrs.items())) for _, attrs in layers]


@functools.lru_cache(maxsize=256)
def _network_layers(architecture: Architecture) -> tuple[_Layer, ...]:
    """Our network's layers for `architecture`, built on the meta device (no memory, no time)."""
    with torch.device("meta"):
        net = build_from_architecture(architecture)
    return tuple(_layers([(k, tuple(v.shape)) for k, v in net.state_dict().items()]))


def _candidates(layers: Sequence[_Layer], choices: ImportChoices) -> Iterator[Architecture]:
    """Architectures the file's first and last convolutions and its conv count allow."""
    convs = [attrs["weight"] for _, attrs in layers if len(attrs.get("weight", ())) == 4]
    if len(convs) < 6:
        return
    first, last = convs[0], convs[-1]
    ngf, input_nc, kernel = first[0], first[1], first[2]
    names: list[str] = []
    if kernel == 7 and len(convs) % 2 == 0:
        names.append(f"resnet_{(len(convs) - 6) // 2}blocks")
    if kernel == 4 and len(convs) % 2 == 0:
        names += [f"unet_{2 ** (len(convs) // 2)}", *(["discogan"] if len(convs) == 8 else [])]
    if choices.arch:  # what the user said, even where the tensors suggest otherwise
        names = [choices.arch]
    norms = [choices.norm] if choices.norm else list(_NORM_PREFERENCE)
    for name in names:
        output_nc = last[0] if name.startswith("resnet") else last[1]  # conv vs transposed conv
        try:
            input_multiple(name)  # e.g. unet_16: too shallow to be a U-Net we build
        except UnknownModelError:
            continue
        ups = ["transpose", choices.upsample or "nearest", "bilinear"]
        for norm in norms:
            for bias in (True, False):
                for upsample in dict.fromkeys(ups if name.startswith("resnet") else ["transpose"]):
                    yield Architecture(
                        generator=name,
                        ngf=ngf,
                        norm=norm,
                        input_nc=input_nc,
                        output_nc=output_nc,
                        conv_bias=bias,
                        upsample=upsample,
                    )


def _without_stale_stats(layers: Sequence[_Layer]) -> list[_Layer]:
    """Layers minus InstanceNorm running stats that PyTorch < 0.4 saved (no weight beside them)."""
    return [(m, a) for m, a in layers if not set(a) <= _STATS]


@dataclass
class _Fit:
    architecture: Architecture
    pairs: list[tuple[str, str]] = field(default_factory=list)


def _fit(
    group_layers: Sequence[_Layer], architecture: Architecture
) -> tuple[_Fit | None, tuple[int, str]]:
    """The key mapping when the layers are those of `architecture`; else how far they agreed."""
    ours = _network_layers(architecture)
    theirs = list(group_layers)
    if architecture.norm in ("instance", "none"):
        theirs = _without_stale_stats(theirs)
    mine, other = _signature(ours), _signature(theirs)
    agree = next((i for i, (a, b) in enumerate(zip(mine, other, strict=False)) if a != b), None)
    if agree is None and len(mine) == len(other):
        fit = _Fit(architecture)
        for (their_module, _), (our_module, attrs) in zip(theirs, ours, strict=True):
            for attribute in attrs:  # our order: weight, bias, running stats
                fit.pairs.append((_join(their_module, attribute), _join(our_module, attribute)))
        return fit, (len(mine), "")
    at = min(len(mine), len(other)) if agree is None else agree
    if at < min(len(mine), len(other)):
        problem = (
            f"layer {at + 1} ({theirs[at][0] or '<root>'}) holds {dict(theirs[at][1])}, "
            f"where {architecture.generator} expects {dict(ours[at][1])}"
        )
    else:
        problem = f"the file has {len(other)} layers, {architecture.generator} has {len(mine)}"
    return None, (at, problem)


def _describe(architecture: Architecture) -> str:
    a = architecture
    return f"{a.generator} (ngf {a.ngf}, norm {a.norm}, conv bias {a.conv_bias}, {a.upsample})"


# --- choosing --------------------------------------------------------------------------------


def _preference(fit: _Fit) -> tuple[int, int, int]:
    a = fit.architecture
    return (
        _NORM_PREFERENCE.index(a.norm),
        _UPSAMPLE_PREFERENCE.index(a.upsample),
        0 if a.conv_bias else 1,
    )


def _notes(chosen: _Fit, fits: Sequence[_Fit]) -> tuple[str, ...]:
    """The alternatives that fit the tensors as well, and the flag that picks them."""
    notes: list[str] = []
    a = chosen.architecture
    if any(f.architecture.norm != a.norm for f in fits):
        others = sorted({f.architecture.norm for f in fits} - {a.norm})
        notes.append(
            f"norm {a.norm}: no norm tensors tell it from {', '.join(others)} "
            f"(--norm {others[0]} if the network has that)"
        )
    if any(f.architecture.upsample != a.upsample for f in fits):
        others = sorted({f.architecture.upsample for f in fits} - {a.upsample})
        notes.append(
            f"upsample {a.upsample}: a resize has no weights (--upsample {others[0]} if the "
            "network resizes that way)"
        )
    return tuple(notes)


def _match_group(
    group: _Group, choices: ImportChoices, order_by_name: bool
) -> tuple[_Fit | None, tuple[_Fit, ...], tuple[int, str, Architecture] | None]:
    """The best fit of one group, every fit, and (when none fits) the closest miss."""
    items = list(group.tensors.items())
    if order_by_name:
        items.sort(key=lambda kv: _natural(kv[0]))
    layers = _layers([(k, tuple(v.shape)) for k, v in items])
    fits: list[_Fit] = []
    closest: tuple[int, str, Architecture] | None = None
    for architecture in _candidates(layers, choices):
        fit, (agreed, problem) = _fit(layers, architecture)
        if fit is not None:
            fits.append(fit)
        elif closest is None or agreed > closest[0]:
            closest = (agreed, problem, architecture)
    if not fits:
        return None, (), closest
    fits.sort(key=_preference)
    return fits[0], tuple(fits), None


def direction_of(name: str) -> str | None:
    """'AtoB' / 'BtoA' when a network's name says which way it maps (G_A2B, netG_B, gen_ba)."""
    last = re.split(r"[./]", name)[-1] if name else ""
    low = last.lower()
    if re.search(r"a_?(2|to)_?b|(^|_)ab$", low):
        return "AtoB"
    if re.search(r"b_?(2|to)_?a|(^|_)ba$", low):
        return "BtoA"
    if re.search(r"(^|[^a-z])(g|gen|generator|netg)_?a$", low):
        return "AtoB"  # the reference code's netG_A maps A to B
    if re.search(r"(^|[^a-z])(g|gen|generator|netg)_?b$", low):
        return "BtoA"
    return None


def _display(name: str) -> str:
    return ".".join(p for p in name.split(".") if p not in _WRAPPERS) or name


def _load(group: _Group, fit: _Fit, notes: tuple[str, ...]) -> ImportedGenerator:
    net = build_from_architecture(fit.architecture)
    state = OrderedDict((ours, group.tensors[theirs]) for theirs, ours in fit.pairs)
    load_compatible_state_dict(net, state)
    return ImportedGenerator(
        name=group.name,
        direction=direction_of(_display(group.name)),
        architecture=fit.architecture,
        net=net.eval(),
        key_pairs=tuple(fit.pairs),
        notes=notes,
    )


def _refuse(path: str, groups: Sequence[_Group], misses: Sequence[tuple[str, Any]]) -> None:
    groups = [g for g in groups if g.depth <= 1]  # the networks, not their layers
    listed = ", ".join(f"{g.name or '<root>'} ({len(g.tensors)} tensors)" for g in groups[:6])
    more = f" (+{len(groups) - 6} more)" if len(groups) > 6 else ""
    if not groups:
        raise IncompatibleCheckpointError(f"{path} holds no tensors")
    largest = max(groups, key=lambda g: len(g.tensors))
    convs = [tuple(t.shape) for t in largest.tensors.values() if t.ndim == 4]
    detail = (
        f"; the largest, {largest.name or '<root>'}, has {len(convs)} convolutions"
        + (f" starting with a {convs[0][2]}x{convs[0][3]} one" if convs else "")
        + " (a ResNet generator starts with a 7x7 conv, U-Net and DiscoGAN with a 4x4 one; "
        "each has at least 6)"
    )
    if misses:
        name, (_, problem, architecture) = max(misses, key=lambda m: m[1][0])
        detail = f"; closest: {name or '<root>'} as {_describe(architecture)}: {problem}"
    raise IncompatibleCheckpointError(
        f"{path}: no generator this project knows fits the tensors (ResNet with any number of "
        f"blocks, U-Net, DiscoGAN); networks in the file: {listed}{more}{detail}. A network of "
        "another design can be served as an ONNX graph: unpaired export --from-onnx"
    )


def _outermost(found: list[tuple[_Group, _Fit, tuple[_Fit, ...]]]) -> list[Any]:
    """One entry per network: a network found whole and again under a prefix is one."""
    keys = [frozenset(id(t) for t in g.tensors.values()) for g, _, _ in found]

    def covered(i: int) -> bool:
        return any(
            j != i and keys[i] <= keys[j] and (keys[i] != keys[j] or j < i)
            for j in range(len(found))
        )

    return [entry for i, entry in enumerate(found) if not covered(i)]


def import_generators(
    path: str | os.PathLike[str], choices: ImportChoices = ImportChoices()
) -> list[ImportedGenerator]:
    """Every generator in the file (or the one `choices.key` names), loaded and mapped."""
    location = os.fspath(path)
    groups = list(_tensor_groups(read_weights(location)))
    if choices.key is not None:
        wanted = [g for g in groups if choices.key in (g.name, _display(g.name))]
        if not wanted:
            names = sorted({_display(g.name) for g in groups if g.name})
            raise IncompatibleCheckpointError(
                f"{location} has no network named {choices.key!r}; it has: {', '.join(names[:12])}"
            )
        groups = wanted
    found: list[tuple[_Group, _Fit, tuple[_Fit, ...]]] = []
    misses: list[tuple[str, Any]] = []
    for group in groups:
        fit, fits, closest = _match_group(group, choices, order_by_name=False)
        if fit is None:  # tensors saved out of order (safetensors, some exporters)
            fit, fits, _ = _match_group(group, choices, order_by_name=True)
        if fit is not None:
            found.append((group, fit, fits))
        elif closest is not None:
            misses.append((group.name, closest))
    unique = _outermost(found)
    if not unique:
        _refuse(location, groups, misses)
    return [_load(group, fit, _notes(fit, fits)) for group, fit, fits in unique]
