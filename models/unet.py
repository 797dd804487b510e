"""U-Net generator of pix2pix/CycleGAN, built from nested skip-connection blocks.

The nesting (each block's `model` holds the next block) is upstream's, so U-Net checkpoints
from junyanz/pytorch-CycleGAN-and-pix2pix load with their keys unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.layers import NormLayer, conv_bias, get_norm_layer


class UnetSkipConnectionBlock(nn.Module):
    """Downsample, run `submodule`, upsample, and concatenate the input as a skip."""

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        *,
        norm_layer: NormLayer,
        use_bias: bool,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        if outermost and innermost:
            raise ValueError("a block cannot be both outermost and innermost")
        self.outermost = outermost
        if input_nc is None:
            input_nc = outer_nc
        downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=use_bias)
        # In-place, as upstream: the LeakyReLU also rewrites the tensor the skip concatenates.
        # Kept so that public weights reproduce their published outputs.
        downrelu = nn.LeakyReLU(0.2, True)
        uprelu = nn.ReLU(True)

        layers: list[nn.Module]
        if innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=use_bias)
            layers = [downrelu, downconv, uprelu, upconv, norm_layer(outer_nc)]
        elif submodule is None:
            raise ValueError("only the innermost block may have no submodule")
        elif outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            layers = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        else:
            upconv = nn.ConvTranspose2d(
                inner_nc * 2, outer_nc, 4, stride=2, padding=1, bias=use_bias
            )
            layers = [downrelu, downconv, norm_layer(inner_nc), submodule]
            layers += [uprelu, upconv, norm_layer(outer_nc)]
            if use_dropout:
                layers += [nn.Dropout(0.5)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)  # skip connection: (B, C_in + C_out, H, W)


class UnetGenerator(nn.Module):
    """U-Net with `num_downs` halvings: an input side of 2**num_downs reaches 1x1 at the bottom.

    'unet_128' is num_downs=7 and 'unet_256' is num_downs=8; input sides must be multiples of
    2**num_downs.
    """

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        num_downs: int,
        *,
        ngf: int = 64,
        norm: str = "instance",
        use_dropout: bool = False,
        use_bias: bool | None = None,
    ) -> None:
        super().__init__()
        if num_downs < 5:
            # Upstream silently builds 5 levels for anything smaller; refuse instead.
            raise ValueError(f"num_downs must be >= 5, got {num_downs}")
        norm_layer = get_norm_layer(norm)
        use_bias = conv_bias(norm, use_bias)

        def level(outer_nc: int, inner_nc: int, sub: nn.Module, dropout: bool = False) -> nn.Module:
            return UnetSkipConnectionBlock(
                outer_nc,
                inner_nc,
                norm_layer=norm_layer,
                use_bias=use_bias,
                submodule=sub,
                use_dropout=dropout,
            )

        block: nn.Module = UnetSkipConnectionBlock(
            ngf * 8, ngf * 8, norm_layer=norm_layer, use_bias=use_bias, innermost=True
        )
        for _ in range(num_downs - 5):  # extra levels at ngf*8; only these use dropout
            block = level(ngf * 8, ngf * 8, block, use_dropout)
        block = level(ngf * 4, ngf * 8, block)
        block = level(ngf * 2, ngf * 4, block)
        block = level(ngf, ngf * 2, block)
        self.model = UnetSkipConnectionBlock(
            output_nc,
            ngf,
            norm_layer=norm_layer,
            use_bias=use_bias,
            input_nc=input_nc,
            submodule=block,
            outermost=True,
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)  # (B, input_nc, H, W) -> (B, output_nc, H, W), in [-1, 1]
