"""Each init scheme leaves the weight statistics upstream CycleGAN would."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from models import build_generator, init_weights

FAN = 256 * 3 * 3  # fan_in == fan_out of the conv below


def make_net() -> nn.Sequential:
    # Big enough that sample statistics are tight; biases start non-zero to see them reset.
    net = nn.Sequential(nn.Conv2d(256, 256, 3), nn.BatchNorm2d(8192), nn.Linear(64, 64))
    for m in net:
        nn.init.ones_(m.bias)
    return net


@pytest.mark.parametrize(
    ("init_type", "gain", "expected_std"),
    [
        ("normal", 0.02, 0.02),
        ("normal", 0.1, 0.1),
        ("xavier", 0.02, 0.02 * math.sqrt(2 / (FAN + FAN))),
        ("kaiming", 0.02, math.sqrt(2 / FAN)),  # gain unused, as upstream
        ("orthogonal", 0.02, 0.02 / math.sqrt(FAN)),
    ],
)
def test_conv_weight_statistics(init_type: str, gain: float, expected_std: float) -> None:
    torch.manual_seed(0)
    net = make_net()
    init_weights(net, init_type, gain)
    w = net[0].weight.detach()
    assert w.std().item() == pytest.approx(expected_std, rel=0.03)
    assert w.mean().abs().item() < 0.05 * expected_std + 1e-6
    assert torch.count_nonzero(net[0].bias) == 0
    assert torch.count_nonzero(net[2].bias) == 0


def test_orthogonal_rows_are_orthogonal() -> None:
    net = make_net()
    init_weights(net, "orthogonal", 0.5)
    w = net[0].weight.detach().flatten(1)  # (256, 2304): rows orthogonal, norm = gain
    torch.testing.assert_close(w @ w.T, 0.25 * torch.eye(256), atol=1e-5, rtol=0)


def test_batch_norm_scale_and_shift() -> None:
    torch.manual_seed(0)
    net = make_net()
    init_weights(net, "xavier", 0.02)
    bn = net[1]
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=0.002)
    assert bn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.count_nonzero(bn.bias) == 0


def test_registry_builds_initialised_networks() -> None:
    net = build_generator("resnet_6blocks", ngf=8)
    conv = net.model[1]
    assert torch.count_nonzero(conv.bias) == 0
    # Default PyTorch init would give a std of about 1/sqrt(3 * fan_in) = 0.024 here.
    assert (
        build_generator("resnet_6blocks", ngf=8, init_type="kaiming").model[4].weight.std() > 0.05
    )


def test_unknown_scheme_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="normal, xavier, kaiming, orthogonal"):
        init_weights(nn.Conv2d(1, 1, 1), "uniform")
    with pytest.raises(ValueError, match="normal, xavier"):
        build_generator("resnet_6blocks", ngf=4, init_type="he")
