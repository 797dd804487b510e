"""Pure `torch.nn` networks for CycleGAN and DiscoGAN, a registry to build them by name, and the
conventions every package shares (``models.imaging``, ``models.manifest``).

The networks are imported on first use (PEP 562), not by ``import models``: the manifest and
image modules must stay importable without torch, so that an API process which only forwards
requests (distributed mode) never loads it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.checkpoint_compat import (
        IncompatibleCheckpointError,
        load_compatible_state_dict,
        load_pth_state_dict,
    )
    from models.discogan import DiscoDiscriminator, DiscoGenerator
    from models.init import INIT_TYPES, init_weights
    from models.layers import NORM_TYPES, PADDING_TYPES, get_norm_layer
    from models.patchgan import NLayerDiscriminator, PixelDiscriminator
    from models.registry import (
        DISCRIMINATORS,
        GENERATORS,
        UnknownModelError,
        build_discriminator,
        build_generator,
        count_parameters,
        discriminator_min_input,
        input_multiple,
        min_input_side,
    )
    from models.resnet import ResnetBlock, ResnetGenerator
    from models.unet import UnetGenerator, UnetSkipConnectionBlock

#: Each public name and the module that defines it.
_HOMES = {
    "IncompatibleCheckpointError": "checkpoint_compat",
    "load_compatible_state_dict": "checkpoint_compat",
    "load_pth_state_dict": "checkpoint_compat",
    "DiscoDiscriminator": "discogan",
    "DiscoGenerator": "discogan",
    "INIT_TYPES": "init",
    "init_weights": "init",
    "NORM_TYPES": "layers",
    "PADDING_TYPES": "layers",
    "get_norm_layer": "layers",
    "NLayerDiscriminator": "patchgan",
    "PixelDiscriminator": "patchgan",
    "DISCRIMINATORS": "registry",
    "GENERATORS": "registry",
    "UnknownModelError": "registry",
    "build_discriminator": "registry",
    "build_generator": "registry",
    "count_parameters": "registry",
    "discriminator_min_input": "registry",
    "input_multiple": "registry",
    "min_input_side": "registry",
    "ResnetBlock": "resnet",
    "ResnetGenerator": "resnet",
    "UnetGenerator": "unet",
    "UnetSkipConnectionBlock": "unet",
}

__all__ = [
    "DISCRIMINATORS",
    "GENERATORS",
    "INIT_TYPES",
    "NORM_TYPES",
    "PADDING_TYPES",
    "DiscoDiscriminator",
    "DiscoGenerator",
    "IncompatibleCheckpointError",
    "NLayerDiscriminator",
    "PixelDiscriminator",
    "ResnetBlock",
    "ResnetGenerator",
    "UnetGenerator",
    "UnetSkipConnectionBlock",
    "UnknownModelError",
    "build_discriminator",
    "build_generator",
    "count_parameters",
    "discriminator_min_input",
    "get_norm_layer",
    "init_weights",
    "input_multiple",
    "load_compatible_state_dict",
    "load_pth_state_dict",
    "min_input_side",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"models.{home}"), name)
