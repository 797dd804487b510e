"""The mobile ResNet generator of GAN Compression (Li et al., CVPR 2020), a distillation student.

It is the CycleGAN ResNet generator with every 3x3 convolution of the residual blocks replaced by
a depthwise-separable one (a per-channel 3x3 convolution, a norm, then a 1x1 convolution across
channels), where almost all of the teacher's arithmetic is: at width 64 the residual blocks hold
about 44 of ResNet-9's 57 G multiply-accumulates per 256x256 image, and separable convolutions
cut them about 8-fold. The stem, the down- and up-sampling stay as they are, so a student keeps
the teacher's module layout outside the blocks (and its input rules: sides multiples of 4).
"""

from __future__ import annotations

from typing import cast

from torch import Tensor, nn

from models.layers import NormLayer, conv_bias, get_norm_layer
from models.resnet import ResnetBlock, ResnetGenerator


class SeparableConv2d(nn.Module):
    """Depthwise k x k convolution, norm, pointwise 1x1: GAN Compression's `SeparableConv2d`."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, *, norm_layer: NormLayer, use_bias: bool
    ) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, c_in, kernel, groups=c_in, bias=use_bias),
            norm_layer(c_in),
            nn.Conv2d(c_in, c_out, 1, bias=use_bias),
        )

    @property
    def depthwise(self) -> nn.Conv2d:
        return cast(nn.Conv2d, self.conv[0])

    @property
    def pointwise(self) -> nn.Conv2d:
        return cast(nn.Conv2d, self.conv[2])

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class MobileResnetBlock(nn.Module):
    """A residual block of two reflection-padded separable 3x3 convolutions."""

    def __init__(self, dim: int, *, norm_layer: NormLayer, use_bias: bool) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            SeparableConv2d(dim, dim, 3, norm_layer=norm_layer, use_bias=use_bias),
            norm_layer(dim),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            SeparableConv2d(dim, dim, 3, norm_layer=norm_layer, use_bias=use_bias),
            norm_layer(dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


class MobileResnetGenerator(ResnetGenerator):
    """:class:`ResnetGenerator` whose residual blocks are :class:`MobileResnetBlock`."""

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        *,
        ngf: int = 64,
        norm: str = "instance",
        n_blocks: int = 9,
        use_bias: bool | None = None,
    ) -> None:
        super().__init__(
            input_nc, output_nc, ngf=ngf, norm=norm, n_blocks=n_blocks, use_bias=use_bias
        )
        norm_layer, bias = get_norm_layer(norm), conv_bias(norm, use_bias)
        dim = ngf * 4
        for index, layer in enumerate(self.model):  # same slots: the keys around them stay
            if isinstance(layer, ResnetBlock):
                self.model[index] = MobileResnetBlock(dim, norm_layer=norm_layer, use_bias=bias)
