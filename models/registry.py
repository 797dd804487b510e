"""Build networks by name, so configs and CLIs can choose an architecture with a string.

Names follow upstream CycleGAN's `--netG` / `--netD` choices, plus 'discogan'.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from torch import nn

from models.discogan import DiscoDiscriminator, DiscoGenerator
from models.init import init_weights
from models.manifest import Architecture
from models.mobile_resnet import MobileResnetGenerator
from models.patchgan import NLayerDiscriminator, PixelDiscriminator
from models.resnet import ResnetGenerator
from models.unet import UnetGenerator


class UnknownModelError(ValueError):
    """An architecture name that is not registered; the message lists the valid ones."""


@dataclass(frozen=True)
class _GeneratorArgs:
    input_nc: int
    output_nc: int
    ngf: int
    norm: str
    use_dropout: bool
    use_bias: bool | None = None  # None: what the norm implies
    upsample: str = "transpose"


@dataclass(frozen=True)
class _DiscriminatorArgs:
    input_nc: int
    ndf: int
    n_layers: int | None  # None: the architecture's own default
    norm: str


A = TypeVar("A")


@dataclass(frozen=True)
class _Entry(Generic[A]):
    build: Callable[[A], nn.Module]
    default_norm: str  # what the architecture's paper uses
    input_multiple: int = 1  # input sides must be a multiple of this (2 ** downsamplings)
    min_side: int = 1  # smallest input side the network runs on


def _resnet(n_blocks: int) -> Callable[[_GeneratorArgs], nn.Module]:
    def build(a: _GeneratorArgs) -> nn.Module:
        return ResnetGenerator(
            a.input_nc,
            a.output_nc,
            ngf=a.ngf,
            norm=a.norm,
            use_dropout=a.use_dropout,
            n_blocks=n_blocks,
            use_bias=a.use_bias,
            upsample=a.upsample,
        )

    return build


def _mobile_resnet(n_blocks: int) -> Callable[[_GeneratorArgs], nn.Module]:
    def build(a: _GeneratorArgs) -> nn.Module:
        _transpose_only("mobile_resnet", a)
        if a.use_dropout:
            raise ValueError("the mobile ResNet generator has no dropout")
        return MobileResnetGenerator(
            a.input_nc, a.output_nc, ngf=a.ngf, norm=a.norm, n_blocks=n_blocks, use_bias=a.use_bias
        )

    return build


def _transpose_only(name: str, a: _GeneratorArgs) -> None:
    if a.upsample != "transpose":
        raise ValueError(f"the {name!r} generator upsamples with transposed convs only")


def _unet(num_downs: int) -> Callable[[_GeneratorArgs], nn.Module]:
    def build(a: _GeneratorArgs) -> nn.Module:
        _transpose_only("unet", a)
        return UnetGenerator(
            a.input_nc,
            a.output_nc,
            num_downs,
            ngf=a.ngf,
            norm=a.norm,
            use_dropout=a.use_dropout,
            use_bias=a.use_bias,
        )

    return build


def _disco_generator(a: _GeneratorArgs) -> nn.Module:
    if a.use_dropout:
        raise ValueError("the 'discogan' generator has no dropout; pass use_dropout=False")
    _transpose_only("discogan", a)
    return DiscoGenerator(a.input_nc, a.output_nc, ngf=a.ngf, norm=a.norm, use_bias=a.use_bias)


def discriminator_depth(name: str, n_layers: int | None) -> int:
    """The number of strided conv layers `name` gets for a requested depth (None: its default)."""
    if name == "basic":
        if n_layers not in (None, 3):
            raise ValueError(
                f"'basic' is the 3-layer (70x70) PatchGAN; got n_layers={n_layers}. "
                "Use the 'n_layers' discriminator to choose the depth."
            )
        return 3
    default = {"n_layers": 3, "discogan": 4}.get(name, 0)
    return default if n_layers is None else n_layers


def discriminator_min_input(name: str, n_layers: int | None = None) -> int:
    """Smallest input side `name` accepts, so a config can refuse a crop before a conv fails."""
    _lookup("discriminator", name, _DISCRIMINATORS)
    depth = discriminator_depth(name, n_layers)
    if name in ("basic", "n_layers"):
        return 3 * 2**depth  # two 4x4 stride-1 convs after the strided ones
    if name == "discogan":
        return 4 * 2**depth  # down to 4x4, then one 4x4 conv
    return 1  # pixel: 1x1 convs


def _basic_d(a: _DiscriminatorArgs) -> nn.Module:
    depth = discriminator_depth("basic", a.n_layers)
    return NLayerDiscriminator(a.input_nc, ndf=a.ndf, n_layers=depth, norm=a.norm)


def _n_layers_d(a: _DiscriminatorArgs) -> nn.Module:
    depth = discriminator_depth("n_layers", a.n_layers)
    return NLayerDiscriminator(a.input_nc, ndf=a.ndf, n_layers=depth, norm=a.norm)


def _pixel_d(a: _DiscriminatorArgs) -> nn.Module:
    return PixelDiscriminator(a.input_nc, ndf=a.ndf, norm=a.norm)


def _disco_d(a: _DiscriminatorArgs) -> nn.Module:
    depth = discriminator_depth("discogan", a.n_layers)
    return DiscoDiscriminator(a.input_nc, ndf=a.ndf, n_layers=depth, norm=a.norm)


_GENERATORS: dict[str, _Entry[_GeneratorArgs]] = {
    # ResNet: reflection padding needs a side >= 2 after the two downsamplings.
    "resnet_9blocks": _Entry(_resnet(9), "instance", input_multiple=4, min_side=8),
    "resnet_6blocks": _Entry(_resnet(6), "instance", input_multiple=4, min_side=8),
    "unet_128": _Entry(_unet(7), "instance", input_multiple=2**7, min_side=2**7),
    "unet_256": _Entry(_unet(8), "instance", input_multiple=2**8, min_side=2**8),
    "discogan": _Entry(_disco_generator, "batch", input_multiple=2**4, min_side=2**4),
}
_DISCRIMINATORS: dict[str, _Entry[_DiscriminatorArgs]] = {
    "basic": _Entry(_basic_d, "instance"),
    "n_layers": _Entry(_n_layers_d, "instance"),
    "pixel": _Entry(_pixel_d, "instance"),
    "discogan": _Entry(_disco_d, "batch"),
}

GENERATORS: tuple[str, ...] = tuple(_GENERATORS)
"""The named generators; `build_generator` also takes resnet_<N>blocks and unet_<side>."""
_RESNET_NAME = re.compile(r"^resnet_(\d{1,3})blocks$")
_UNET_NAME = re.compile(r"^unet_(\d{1,5})$")
_MOBILE_NAME = re.compile(r"^mobile_resnet_(\d{1,3})blocks$")


def _generator_entry(name: str) -> _Entry[_GeneratorArgs]:
    """The named generators, plus ResNets of any depth and U-Nets for any power-of-two side."""
    if name in _GENERATORS:
        return _GENERATORS[name]
    if match := _RESNET_NAME.match(name):
        return _Entry(_resnet(int(match[1])), "instance", input_multiple=4, min_side=8)
    if match := _MOBILE_NAME.match(name):
        return _Entry(_mobile_resnet(int(match[1])), "instance", input_multiple=4, min_side=8)
    side = int(match[1]) if (match := _UNET_NAME.match(name)) else 0
    if side >= 32 and side & (side - 1) == 0:  # U-Net needs >= 5 halvings
        return _Entry(_unet(side.bit_length() - 1), "instance", input_multiple=side, min_side=side)
    raise UnknownModelError(
        f"unknown generator {name!r}; expected one of {', '.join(_GENERATORS)}, "
        "resnet_<N>blocks, mobile_resnet_<N>blocks or unet_<side> (side a power of two >= 32)"
    )


DISCRIMINATORS: tuple[str, ...] = tuple(_DISCRIMINATORS)
"""Valid names for `build_discriminator`."""


def _lookup(kind: str, name: str, table: dict[str, _Entry[A]]) -> _Entry[A]:
    try:
        return table[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown {kind} {name!r}; expected one of {', '.join(table)}"
        ) from None


def build_generator(
    name: str,
    *,
    input_nc: int = 3,
    output_nc: int = 3,
    ngf: int = 64,
    norm: str | None = None,
    use_dropout: bool = False,
    init_type: str | None = "normal",
    init_gain: float = 0.02,
    conv_bias: bool | None = None,
    upsample: str = "transpose",
) -> nn.Module:
    """Build and initialise a generator; `norm=None` picks the architecture's paper default.

    `conv_bias` None: what the norm implies; `upsample` (ResNet only): 'transpose', or a
    'nearest' / 'bilinear' resize then a conv, as some imported weights need. `init_type`
    None: torch's own init, for a network whose weights are loaded next.
    """
    entry = _generator_entry(name)
    norm = entry.default_norm if norm is None else norm
    args = _GeneratorArgs(input_nc, output_nc, ngf, norm, use_dropout, conv_bias, upsample)
    net = entry.build(args)
    if init_type is not None:
        init_weights(net, init_type, init_gain)
    return net


def build_from_architecture(architecture: Architecture) -> nn.Module:
    """The (untrained) generator a manifest's architecture describes; load weights into it."""
    return build_generator(
        architecture.generator,
        init_type=None,  # every caller loads weights next
        input_nc=architecture.input_nc,
        output_nc=architecture.output_nc,
        ngf=architecture.ngf,
        norm=architecture.norm,
        use_dropout=architecture.use_dropout,
        conv_bias=architecture.conv_bias,
        upsample=architecture.upsample,
    )


def load_generator(architecture: Architecture, weights: Path) -> nn.Module:
    """The generator a manifest describes, with its safetensors weights loaded (in train mode:
    callers pick eval, device and precision)."""
    from safetensors.torch import load_file

    from models.checkpoint_compat import load_compatible_state_dict

    net = build_from_architecture(architecture)
    load_compatible_state_dict(net, load_file(str(weights)))
    return net


def input_multiple(generator: str) -> int:
    """Side lengths a generator accepts are multiples of this; callers pad (reflect) and crop."""
    return _generator_entry(generator).input_multiple


def min_input_side(generator: str) -> int:
    """Smallest side a generator runs on; smaller images are padded up to it and cropped back."""
    return _generator_entry(generator).min_side


def build_discriminator(
    name: str,
    *,
    input_nc: int = 3,
    ndf: int = 64,
    n_layers: int | None = None,
    norm: str | None = None,
    init_type: str = "normal",
    init_gain: float = 0.02,
) -> nn.Module:
    """Build and initialise a discriminator; None picks the architecture's own default.

    `n_layers` applies to 'n_layers' (default 3) and 'discogan' (default 4); 'basic' is
    fixed at 3 and 'pixel' has no depth.
    """
    entry = _lookup("discriminator", name, _DISCRIMINATORS)
    args = _DiscriminatorArgs(input_nc, ndf, n_layers, entry.default_norm if norm is None else norm)
    net = entry.build(args)
    init_weights(net, init_type, init_gain)
    return net


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements (what upstream prints as 'Total number of parameters')."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
