"""Parameter counts that must equal upstream CycleGAN's printed totals."""

from __future__ import annotations

import math

import pytest

from models import build_discriminator, build_generator, count_parameters


@pytest.mark.parametrize(
    ("name", "expected"),
    [("resnet_9blocks", 11_378_179), ("resnet_6blocks", 7_837_699)],
)
def test_resnet_generator_parameter_count(name: str, expected: int) -> None:
    assert count_parameters(build_generator(name)) == expected


def test_basic_patchgan_parameter_count() -> None:
    assert count_parameters(build_discriminator("basic")) == 2_764_737


def test_six_blocks_is_nine_blocks_minus_three_residual_blocks() -> None:
    per_block = 2 * (256 * 256 * 3 * 3 + 256)  # two 3x3 convs with bias at 256 channels
    assert 11_378_179 - 3 * per_block == 7_837_699


def test_unet_256_batch_norm_matches_pix2pix_total() -> None:
    # pix2pix prints 54.414 M for its default unet_256 with batch norm.
    assert count_parameters(build_generator("unet_256", norm="batch")) == 54_413_955


def test_count_parameters_trainable_only() -> None:
    net = build_discriminator("pixel", ndf=4)
    total = count_parameters(net)
    net.net[0].requires_grad_(False)
    frozen = sum(math.prod(p.shape) for p in net.net[0].parameters())
    assert count_parameters(net, trainable_only=True) == total - frozen
    assert count_parameters(net) == total
