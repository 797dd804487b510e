"""Generators as other CycleGAN code writes them, for the import tests.

Each is the network this project calls resnet / unet / discogan, built the way a
re-implementation builds it: other module names, no `model` Sequential, affine InstanceNorm,
a resize-then-conv decoder. Nothing here imports the project's networks, so an import that
only worked for our own key names would fail on these.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _norm(channels: int, affine: bool) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=affine)


class Residual(nn.Module):
    """A residual block whose convs sit in `block` (not `conv_block`)."""

    def __init__(self, channels: int, affine: bool) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(channels, affine),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(channels, affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class SequentialResnet(nn.Sequential):
    """ResNet generator as one Sequential: keys `0.weight`, `10.block.1.weight`, no prefix."""

    def __init__(
        self, ngf: int = 16, blocks: int = 9, affine: bool = True, resize: str | None = None
    ) -> None:
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), _norm(ngf, affine), nn.ReLU(True),
        ]  # fmt: skip
        for i in range(2):
            c = ngf * 2**i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), _norm(2 * c, affine)]
            layers += [nn.ReLU(True)]
        layers += [Residual(4 * ngf, affine) for _ in range(blocks)]
        for i in range(2):
            c = ngf * 2 ** (2 - i)
            if resize is None:
                layers += [nn.ConvTranspose2d(c, c // 2, 3, 2, padding=1, output_padding=1)]
            else:
                layers += [nn.Upsample(scale_factor=2, mode=resize), nn.Conv2d(c, c // 2, 3, 1, 1)]
            layers += [_norm(c // 2, affine), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        super().__init__(*layers)


class PatchDiscriminator(nn.Module):
    """A 70x70 PatchGAN with its own names, as training checkpoints store beside generators."""

    def __init__(self, ndf: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, 2 * ndf, 4, 2, 1), nn.InstanceNorm2d(2 * ndf, affine=True),
            nn.LeakyReLU(0.2, True), nn.Conv2d(2 * ndf, 1, 4, 1, 1),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def randomised(net: nn.Module, seed: int) -> nn.Module:
    """`net` with every weight (affine norms too) drawn at random, so a wrong mapping shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            elif tensor.is_floating_point():
                spread = 0.5 if name.endswith(("weight", "bias")) and tensor.ndim == 1 else 0.05
                centre = 1.0 if tensor.ndim == 1 and name.endswith("weight") else 0.0
                tensor.copy_(centre + spread * torch.randn(tensor.shape, generator=generator))
    return net.eval()


def at_trained_scale(net: nn.Module, images: Tensor, largest_variance: float = 2000.0) -> nn.Module:
    """`net` with each conv that feeds an instance norm scaled until the largest variance that
    norm sees on `images` is `largest_variance`: a trained generator's feature maps, not a fresh
    initialisation's (vintagify's epoch-33 ResNet-9 peaks at 2286 on two photos).

    An instance norm undoes its input's scale, so each conv's factor changes only its own
    norm's statistics and the network's output stays what it was."""
    pairs, conv = [], None
    for module in net.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            conv = module
        elif isinstance(module, nn.InstanceNorm2d) and conv is not None:
            pairs.append((conv, module))
    seen: dict[nn.Module, float] = {}

    def record(norm: nn.Module, args: tuple[Tensor, ...]) -> None:
        seen[norm] = float(args[0].var(dim=(2, 3), unbiased=False).max())

    hooks = [norm.register_forward_pre_hook(record) for _, norm in pairs]
    with torch.no_grad():
        net(images)
        for handle in hooks:
            handle.remove()
        for conv, norm in pairs:
            factor = (largest_variance / seen[norm]) ** 0.5
            conv.weight.mul_(factor)
            if conv.bias is not None:
                conv.bias.mul_(factor)
    return net
