"""Pure `torch.nn` networks for CycleGAN and DiscoGAN, and a registry to build them by name."""

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
