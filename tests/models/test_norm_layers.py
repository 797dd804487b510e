"""Norm choice decides the norm layers and whether convs carry a bias, as upstream."""

from __future__ import annotations

import pytest
from torch import nn

from models import NLayerDiscriminator, ResnetGenerator, UnetGenerator, get_norm_layer


def test_batch_norm_drops_conv_bias_and_is_affine() -> None:
    net = ResnetGenerator(3, 3, ngf=8, n_blocks=1, norm="batch")
    conv, bn = net.model[1], net.model[2]
    assert isinstance(conv, nn.Conv2d) and conv.bias is None
    assert isinstance(bn, nn.BatchNorm2d)
    assert bn.affine and bn.track_running_stats
    assert bn.weight is not None and bn.bias is not None
    assert net.model[-2].bias is not None  # the output conv keeps its bias, as upstream


def test_instance_norm_keeps_bias_and_has_no_params() -> None:
    net = ResnetGenerator(3, 3, ngf=8, n_blocks=1, norm="instance")
    assert net.model[1].bias is not None
    norm = net.model[2]
    assert isinstance(norm, nn.InstanceNorm2d)
    assert not norm.affine and not norm.track_running_stats
    assert list(norm.parameters()) == []


def test_no_norm_is_identity_and_keeps_bias() -> None:
    net = ResnetGenerator(3, 3, ngf=8, n_blocks=1, norm="none")
    assert isinstance(net.model[2], nn.Identity)
    assert net.model[1].bias is not None
    # Identity keeps its slot, so indices (checkpoint keys) are the same for every norm.
    assert len(net.model) == len(ResnetGenerator(3, 3, ngf=8, n_blocks=1).model)


def test_patchgan_batch_norm_layout() -> None:
    net = NLayerDiscriminator(3, ndf=8, norm="batch")
    assert net.model[0].bias is not None  # first layer is unnormalised, keeps its bias
    assert net.model[2].bias is None
    assert isinstance(net.model[3], nn.BatchNorm2d)


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_unet_accepts_every_norm(norm: str) -> None:
    net = UnetGenerator(3, 3, 5, ngf=4, norm=norm)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all((c.bias is None) == (norm == "batch") for c in convs)


def test_unknown_norm_lists_choices() -> None:
    with pytest.raises(ValueError, match="instance, instance_affine, batch, none"):
        get_norm_layer("group")
    with pytest.raises(ValueError, match="instance, instance_affine, batch, none"):
        ResnetGenerator(3, 3, norm="layer")


def test_unknown_padding_lists_choices() -> None:
    with pytest.raises(ValueError, match="reflect, replicate, zero"):
        ResnetGenerator(3, 3, ngf=8, n_blocks=1, padding_type="circular")


@pytest.mark.parametrize(
    ("padding_type", "pad_module"),
    [("reflect", nn.ReflectionPad2d), ("replicate", nn.ReplicationPad2d), ("zero", None)],
)
def test_padding_types(padding_type: str, pad_module: type[nn.Module] | None) -> None:
    net = ResnetGenerator(3, 3, ngf=8, n_blocks=1, padding_type=padding_type)
    block = net.model[10].conv_block
    if pad_module is None:  # zero padding lives inside the conv, as upstream
        assert isinstance(block[0], nn.Conv2d) and block[0].padding == (1, 1)
    else:
        assert isinstance(block[0], pad_module)
