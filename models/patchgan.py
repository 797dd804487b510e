"""PatchGAN and pixel discriminators of pix2pix/CycleGAN.

Both return a map of raw logits, one per patch (or pixel); the GAN objective lives in the
losses. Module layout mirrors junyanz/pytorch-CycleGAN-and-pix2pix so public D weights load.
"""

from __future__ import annotations

from torch import Tensor, nn

from models.layers import conv_bias, get_norm_layer


class NLayerDiscriminator(nn.Module):
    """Classifies overlapping patches as real or fake; n_layers=3 gives 70x70 patches.

    Each output logit sees a receptive field of 70x70 pixels at n_layers=3 (the paper's
    'basic' D); a 256x256 input gives a (B, 1, 30, 30) map.
    """

    def __init__(
        self,
        input_nc: int,
        *,
        ndf: int = 64,
        n_layers: int = 3,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        norm_layer = get_norm_layer(norm)
        use_bias = conv_bias(norm)
        kw, padw = 4, 1

        # The first layer has no norm: normalising raw pixels would discard their statistics.
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, kw, stride=2, padding=padw),
            nn.LeakyReLU(0.2, True),
        ]
        nf_mult = 1
        for n in range(1, n_layers):
            nf_mult_prev, nf_mult = nf_mult, min(2**n, 8)
            layers += [
                nn.Conv2d(
                    ndf * nf_mult_prev, ndf * nf_mult, kw, stride=2, padding=padw, bias=use_bias
                ),
                norm_layer(ndf * nf_mult),
                nn.LeakyReLU(0.2, True),
            ]
        nf_mult_prev, nf_mult = nf_mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kw, stride=1, padding=padw, bias=use_bias),
            norm_layer(ndf * nf_mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * nf_mult, 1, kw, stride=1, padding=padw),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)  # (B, input_nc, H, W) -> (B, 1, h, w) logits


class PixelDiscriminator(nn.Module):
    """A 1x1 PatchGAN: judges each pixel's colour alone, with no spatial context."""

    def __init__(self, input_nc: int, *, ndf: int = 64, norm: str = "instance") -> None:
        super().__init__()
        norm_layer = get_norm_layer(norm)
        use_bias = conv_bias(norm)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 1, bias=use_bias),
            norm_layer(ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, 1, bias=use_bias),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, input_nc, H, W) -> (B, 1, H, W) logits
