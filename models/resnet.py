"""ResNet generator of CycleGAN (Zhu et al. 2017), after Johnson et al.'s style-transfer net.

The module tree mirrors junyanz/pytorch-CycleGAN-and-pix2pix (`model` Sequential, `conv_block`
inside each block, same indices) so its public `.pth` files load without renaming keys.
"""

from __future__ import annotations

from torch import Tensor, nn

from models.layers import NormLayer, conv_bias, get_norm_layer, padding_layers
from models.manifest import UPSAMPLINGS


class ResnetBlock(nn.Module):
    """Two 3x3 convs with a residual connection; spatial size and channels are preserved."""

    def __init__(
        self,
        dim: int,
        *,
        norm_layer: NormLayer,
        use_bias: bool,
        use_dropout: bool = False,
        padding_type: str = "reflect",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        pad, p = padding_layers(padding_type, 1)
        layers += [*pad, nn.Conv2d(dim, dim, 3, padding=p, bias=use_bias), norm_layer(dim)]
        layers += [nn.ReLU(True)]
        if use_dropout:
            layers += [nn.Dropout(0.5)]  # shifts later indices by one, exactly as upstream
        pad, p = padding_layers(padding_type, 1)
        layers += [*pad, nn.Conv2d(dim, dim, 3, padding=p, bias=use_bias), norm_layer(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


def _upsampling(c_in: int, c_out: int, mode: str, use_bias: bool) -> list[nn.Module]:
    """Double the side: a transposed conv (the paper), or a resize then a 3x3 conv, which
    re-implementations use against checkerboard artifacts (Odena et al. 2016)."""
    if mode == "transpose":
        return [
            nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=use_bias)
        ]
    return [
        nn.Upsample(scale_factor=2, mode=mode),
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=use_bias),
    ]


class ResnetGenerator(nn.Module):
    """c7s1-64, d128, d256, n_blocks x R256, u128, u64, c7s1-3 (the paper's notation).

    Fully convolutional; input sides must be multiples of 4 to come back at the same size.
    `use_bias` None: what the norm implies; `upsample`: 'transpose' (the paper), or 'nearest' /
    'bilinear' resize then conv.
    """

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        *,
        ngf: int = 64,
        norm: str = "instance",
        use_dropout: bool = False,
        n_blocks: int = 9,
        padding_type: str = "reflect",
        use_bias: bool | None = None,
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        if upsample not in UPSAMPLINGS:
            raise ValueError(f"unknown upsample {upsample!r}; expected one of {UPSAMPLINGS}")
        norm_layer = get_norm_layer(norm)
        use_bias = conv_bias(norm, use_bias)
        padding_layers(padding_type, 1)  # fail fast on a bad name, even with n_blocks == 0

        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, 7, bias=use_bias),
            norm_layer(ngf),
            nn.ReLU(True),
        ]
        n_downsampling = 2
        for i in range(n_downsampling):
            ch = ngf * 2**i
            layers += [
                nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1, bias=use_bias),
                norm_layer(ch * 2),
                nn.ReLU(True),
            ]
        dim = ngf * 2**n_downsampling
        layers += [
            ResnetBlock(
                dim,
                norm_layer=norm_layer,
                use_bias=use_bias,
                use_dropout=use_dropout,
                padding_type=padding_type,
            )
            for _ in range(n_blocks)
        ]
        for i in range(n_downsampling):
            ch = ngf * 2 ** (n_downsampling - i)
            layers += [*_upsampling(ch, ch // 2, upsample, use_bias), norm_layer(ch // 2)]
            layers += [nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)  # (B, input_nc, H, W) -> (B, output_nc, H, W), in [-1, 1]
