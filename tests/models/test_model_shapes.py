"""Input/output shapes, output range and receptive fields a caller relies on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import (
    GENERATORS,
    DiscoDiscriminator,
    DiscoGenerator,
    NLayerDiscriminator,
    build_discriminator,
    build_generator,
    input_multiple,
    min_input_side,
)


def test_generator_keeps_size_and_range(generator_case: tuple[str, int]) -> None:
    name, size = generator_case
    net = build_generator(name, ngf=8)  # width does not change shapes; keeps the test cheap
    x = torch.randn(1, 3, size, size)
    y = net(x)
    assert y.shape == (1, 3, size, size)
    assert y.min() >= -1 and y.max() <= 1


def test_generator_changes_channel_count(generator_case: tuple[str, int]) -> None:
    name, size = generator_case
    net = build_generator(name, input_nc=1, output_nc=2, ngf=4)
    assert net(torch.randn(1, 1, size, size)).shape == (1, 2, size, size)


def test_discriminator_returns_logit_map(
    discriminator_case: tuple[str, int, tuple[int, int]],
) -> None:
    name, size, (h, w) = discriminator_case
    net = build_discriminator(name, ndf=8)
    y = net(torch.randn(1, 3, size, size))
    assert y.shape == (1, 1, h, w)
    # Raw logits, not probabilities: the losses apply the objective.
    assert not any(isinstance(m, nn.Sigmoid) for m in net.modules())


def test_basic_patchgan_sees_70x70_patches() -> None:
    # No norm: InstanceNorm would couple every pixel and hide the local receptive field.
    net = NLayerDiscriminator(1, ndf=4, n_layers=3, norm="none")
    x = torch.randn(1, 1, 128, 128, requires_grad=True)
    y = net(x)
    y[0, 0, y.shape[2] // 2, y.shape[3] // 2].backward()
    assert x.grad is not None
    rows = torch.nonzero(x.grad[0, 0].abs().sum(dim=1)).flatten()
    cols = torch.nonzero(x.grad[0, 0].abs().sum(dim=0)).flatten()
    assert int(rows.max() - rows.min()) + 1 == 70
    assert int(cols.max() - cols.min()) + 1 == 70


def test_discogan_is_fully_convolutional() -> None:
    g = DiscoGenerator(3, 3, ngf=4)
    d = DiscoDiscriminator(3, ndf=4)
    x = torch.randn(1, 3, 128, 96)  # any multiple of 2**n_layers
    assert g(x).shape == (1, 3, 128, 96)
    assert d(x).shape == (1, 1, 5, 3)


def test_discogan_encoder_reaches_4x4_at_64() -> None:
    g = DiscoGenerator(3, 3, ngf=4)
    code = g.main[:11](torch.randn(1, 3, 64, 64))  # through the encoder's last LeakyReLU
    assert code.shape == (1, 32, 4, 4)


def test_discogan_features_for_feature_matching() -> None:
    d = DiscoDiscriminator(3, ndf=4)
    logits, features = d.forward_features(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 1, 1, 1)
    assert [tuple(f.shape) for f in features] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4)]
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(d.eval()(x), d.forward_features(x)[0])


def test_generator_trains(generator_case: tuple[str, int]) -> None:
    # In-place activations (kept from upstream) must not break autograd.
    name, size = generator_case
    net = build_generator(name, ngf=4, use_dropout=name != "discogan")
    net(torch.randn(2, 3, size, size)).mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_discriminator_trains(discriminator_case: tuple[str, int, tuple[int, int]]) -> None:
    name, size, _ = discriminator_case
    net = build_discriminator(name, ndf=4)
    net(torch.randn(2, 3, size, size)).mean().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("name", GENERATORS)
def test_generator_runs_at_its_stated_minimum_and_multiple(name: str) -> None:
    """Export and the engine pad inputs up to `min_input_side` / `input_multiple`; both must run."""
    net = build_generator(name, ngf=4).eval()
    side, multiple = min_input_side(name), input_multiple(name)
    assert side % multiple == 0
    with torch.no_grad():
        assert net(torch.zeros(1, 3, side, side)).shape == (1, 3, side, side)
        wide = (1, 3, side, side + multiple)
        assert net(torch.zeros(wide)).shape == wide
