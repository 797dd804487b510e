"""DiscoGAN networks (Kim et al. 2017), after the SKTBrain reference code for 64x64 images.

At the defaults (n_layers=4, norm='batch') the generator's `main` Sequential has the same
layers and indices as the reference `Generator.main`. Two deliberate departures: the
generator ends in Tanh (this project normalises images to [-1, 1]; the reference used
Sigmoid on [0, 1]) and the discriminator returns logits instead of sigmoid probabilities.
"""

from __future__ import annotations

from itertools import pairwise

from torch import Tensor, nn

from models.layers import conv_bias, get_norm_layer


def _widths(base: int, n_layers: int) -> list[int]:
    """Channel widths per level: base, 2*base, 4*base, 8*base, then capped at 8*base."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    return [base * min(2**i, 8) for i in range(n_layers)]


class DiscoGenerator(nn.Module):
    """Conv encoder to a (8*ngf, H/16, W/16) code, mirrored transposed-conv decoder.

    Fully convolutional: any input whose sides are multiples of 2**n_layers comes back at
    the same size. The reference code's convs have no bias; where a norm other than batch
    norm follows a conv we add one (see `conv_bias`), the unnormalised ends stay bias-free.
    """

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        *,
        ngf: int = 64,
        n_layers: int = 4,
        norm: str = "batch",
        use_bias: bool | None = None,
    ) -> None:
        super().__init__()
        widths = _widths(ngf, n_layers)
        norm_layer = get_norm_layer(norm)
        use_bias = conv_bias(norm, use_bias)

        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, widths[0], 4, stride=2, padding=1, bias=False),
            nn.LeakyReLU(0.2, True),
        ]
        for c_in, c_out in pairwise(widths):
            layers += [
                nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=use_bias),
                norm_layer(c_out),
                nn.LeakyReLU(0.2, True),
            ]
        rev = widths[::-1]
        for c_in, c_out in pairwise(rev):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=use_bias),
                norm_layer(c_out),
                nn.ReLU(True),
            ]
        layers += [
            nn.ConvTranspose2d(widths[0], output_nc, 4, stride=2, padding=1, bias=False),
            nn.Tanh(),
        ]
        self.main = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)  # (B, input_nc, H, W) -> (B, output_nc, H, W), in [-1, 1]


class DiscoDiscriminator(nn.Module):
    """Strided conv stack ending in a 4x4 valid conv: one logit per 64x64 input.

    Larger inputs give a (B, 1, h, w) map of logits; sides must be at least 4 * 2**n_layers.
    """

    def __init__(
        self,
        input_nc: int,
        *,
        ndf: int = 64,
        n_layers: int = 4,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        widths = _widths(ndf, n_layers)
        norm_layer = get_norm_layer(norm)
        use_bias = conv_bias(norm)

        blocks: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(input_nc, widths[0], 4, stride=2, padding=1, bias=False),
                nn.LeakyReLU(0.2, True),
            )
        ]
        blocks += [
            nn.Sequential(
                nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=use_bias),
                norm_layer(c_out),
                nn.LeakyReLU(0.2, True),
            )
            for c_in, c_out in pairwise(widths)
        ]
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(widths[-1], 1, 4, stride=1, padding=0, bias=False)

    def forward_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits plus the activations of every block after the first.

        The reference trains G with a feature-matching term on exactly these activations
        (its relu2..relu4), so the losses can reproduce it without reaching into the net.
        """
        features: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i > 0:
                features.append(x)
        return self.head(x), features

    def forward(self, x: Tensor) -> Tensor:
        logits, _ = self.forward_features(x)
        return logits  # (B, input_nc, H, W) -> (B, 1, h, w); (B, 1, 1, 1) at 64x64
