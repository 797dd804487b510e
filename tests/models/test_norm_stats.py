"""Shared instance-norm statistics: the plain network, or a thumbnail's stats for every tile."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import build_generator
from models.norm_stats import SharedStatsGenerator, has_instance_norm, stats_size


@pytest.mark.parametrize(("name", "side"), [("resnet_6blocks", 32), ("unet_128", 256)])
def test_own_statistics_reproduce_the_network(name: str, side: int) -> None:
    torch.manual_seed(0)
    net = build_generator(name, ngf=4).eval()
    shared = SharedStatsGenerator(net).eval()
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        expected = net(x)
        own, stats = shared(*shared.example_inputs(x))
        again, used = shared(x, stats, torch.tensor(True))
    assert stats.shape == (2, stats_size(net)) == (2, shared.size)
    assert torch.allclose(own, expected, atol=1e-5)
    assert torch.allclose(again, expected, atol=1e-5)  # its own stats handed back in
    assert torch.equal(used, stats)


def test_given_statistics_replace_each_images_own() -> None:
    torch.manual_seed(0)
    net = build_generator("resnet_6blocks", ngf=4).eval()
    shared = SharedStatsGenerator(net).eval()
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        _, stats = shared(*shared.example_inputs(x))
        first_for_both, used = shared(x, stats[:1].expand(2, -1), torch.tensor(True))
        alone = net(x[:1])
    assert torch.allclose(first_for_both[0], alone[0], atol=1e-5)
    assert not torch.allclose(first_for_both[1], net(x[1:])[0], atol=1e-2)
    assert torch.equal(used[1], stats[0])


def test_affine_instance_norm_keeps_its_parameters() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.InstanceNorm2d(5, affine=True)).eval()
    nn.init.normal_(net[1].weight)
    nn.init.normal_(net[1].bias)
    shared = SharedStatsGenerator(net)
    x = torch.randn(1, 3, 9, 9)
    with torch.no_grad():
        assert torch.allclose(shared(*shared.example_inputs(x))[0], net(x), atol=1e-5)


def test_networks_without_instance_norm_are_refused() -> None:
    net = build_generator("discogan", ngf=4)
    assert not has_instance_norm(net)
    with pytest.raises(ValueError, match="no instance norm"):
        SharedStatsGenerator(net)


def test_the_wrapped_network_is_a_copy() -> None:
    net = build_generator("resnet_6blocks", ngf=4)
    SharedStatsGenerator(net)
    assert has_instance_norm(net)  # the original still has its InstanceNorm2d layers
