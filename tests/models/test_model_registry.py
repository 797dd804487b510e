"""Building networks by name, paper-default norms, and errors that list the choices."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import (
    DISCRIMINATORS,
    GENERATORS,
    DiscoDiscriminator,
    DiscoGenerator,
    NLayerDiscriminator,
    PixelDiscriminator,
    ResnetBlock,
    ResnetGenerator,
    UnetGenerator,
    UnknownModelError,
    build_discriminator,
    build_generator,
    discriminator_min_input,
    input_multiple,
    min_input_side,
)


def norm_types(net: nn.Module) -> set[type[nn.Module]]:
    return {type(m) for m in net.modules() if isinstance(m, nn.InstanceNorm2d | nn.BatchNorm2d)}


def test_registered_names() -> None:
    assert GENERATORS == ("resnet_9blocks", "resnet_6blocks", "unet_128", "unet_256", "discogan")
    assert DISCRIMINATORS == ("basic", "n_layers", "pixel", "discogan")


def test_every_generator_builds(generator_case: tuple[str, int]) -> None:
    name, _ = generator_case
    net = build_generator(name, ngf=4)
    expected = DiscoGenerator if name == "discogan" else (ResnetGenerator, UnetGenerator)
    assert isinstance(net, expected)
    paper_norm = nn.BatchNorm2d if name == "discogan" else nn.InstanceNorm2d
    assert norm_types(net) == {paper_norm}


def test_every_discriminator_builds(discriminator_case: tuple[str, int, tuple[int, int]]) -> None:
    name, _, _ = discriminator_case
    net = build_discriminator(name, ndf=4)
    expected = {
        "basic": NLayerDiscriminator,
        "n_layers": NLayerDiscriminator,
        "pixel": PixelDiscriminator,
        "discogan": DiscoDiscriminator,
    }[name]
    assert isinstance(net, expected)
    paper_norm = nn.BatchNorm2d if name == "discogan" else nn.InstanceNorm2d
    assert norm_types(net) == {paper_norm}


def test_norm_override() -> None:
    assert norm_types(build_generator("discogan", ngf=4, norm="instance")) == {nn.InstanceNorm2d}
    assert norm_types(build_discriminator("basic", ndf=4, norm="batch")) == {nn.BatchNorm2d}
    assert norm_types(build_generator("unet_128", ngf=4, norm="none")) == set()


def test_resnets_of_any_depth_and_unets_of_any_power_of_two_side() -> None:
    blocks = [
        m for m in build_generator("resnet_12blocks", ngf=4).modules() if isinstance(m, ResnetBlock)
    ]
    assert len(blocks) == 12
    net = build_generator("unet_64", ngf=4)
    assert input_multiple("unet_64") == 64 and min_input_side("unet_64") == 64
    assert net(torch.zeros(1, 3, 64, 128)).shape == (1, 3, 64, 128)


def test_unknown_names_list_valid_ones() -> None:
    for unknown in ("resnet_9", "unet_100", "unet_16", "stylegan2"):
        with pytest.raises(UnknownModelError) as info:
            build_generator(unknown)
        assert all(name in str(info.value) for name in GENERATORS)
        assert "resnet_<N>blocks, mobile_resnet_<N>blocks or unet_<side>" in str(info.value)
    with pytest.raises(UnknownModelError) as info:
        build_discriminator("stylegan")
    assert all(name in str(info.value) for name in DISCRIMINATORS)
    assert issubclass(UnknownModelError, ValueError)


def strided_convs(net: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in net.modules())


def test_n_layers_sets_depth() -> None:
    assert strided_convs(build_discriminator("n_layers", ndf=4)) == 3
    assert strided_convs(build_discriminator("n_layers", ndf=4, n_layers=5)) == 5
    assert strided_convs(build_discriminator("discogan", ndf=4)) == 4
    assert strided_convs(build_discriminator("discogan", ndf=4, n_layers=3)) == 3


def test_basic_is_fixed_at_three_layers() -> None:
    assert strided_convs(build_discriminator("basic", ndf=4, n_layers=3)) == 3
    with pytest.raises(ValueError, match="'n_layers'"):
        build_discriminator("basic", n_layers=5)


def test_discogan_generator_refuses_dropout() -> None:
    with pytest.raises(ValueError, match="no dropout"):
        build_generator("discogan", use_dropout=True)


def test_dropout_reaches_cyclegan_generators() -> None:
    for name in ("resnet_6blocks", "unet_256"):
        net = build_generator(name, ngf=4, use_dropout=True)
        assert any(isinstance(m, nn.Dropout) for m in net.modules())


@pytest.mark.parametrize(
    ("name", "n_layers"), [("basic", None), ("n_layers", 2), ("discogan", None), ("discogan", 3)]
)
def test_discriminator_min_input_is_exactly_the_smallest_that_runs(
    name: str, n_layers: int | None
) -> None:
    smallest = discriminator_min_input(name, n_layers)
    net = build_discriminator(name, ndf=4, n_layers=n_layers).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, smallest, smallest)).numel() >= 1
        # a conv with no room (RuntimeError) or an instance norm over one pixel (ValueError)
        with pytest.raises((RuntimeError, ValueError)):
            net(torch.rand(1, 3, smallest - 1, smallest - 1))
