"""Loading public-style checkpoints: wrapper prefixes, stale InstanceNorm stats, clear errors."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from models import (
    IncompatibleCheckpointError,
    build_generator,
    load_compatible_state_dict,
    load_pth_state_dict,
)

ReferenceCase = tuple[nn.Module, dict[str, tuple[int, ...]], int]


def random_state_dict(keys: dict[str, tuple[int, ...]]) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    return OrderedDict((k, torch.randn(shape, generator=g)) for k, shape in keys.items())


def with_stale_instance_norm_stats(net: nn.Module, sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """What pre-0.4 PyTorch saved: running stats for every InstanceNorm layer."""
    out = OrderedDict(sd)
    for name, m in net.named_modules():
        if isinstance(m, nn.InstanceNorm2d):
            out[f"{name}.running_mean"] = torch.zeros(m.num_features)
            out[f"{name}.running_var"] = torch.ones(m.num_features)
            out[f"{name}.num_batches_tracked"] = torch.tensor(0)
    return out


@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod."])
def test_loads_public_style_checkpoint(reference_case: ReferenceCase, prefix: str) -> None:
    net, keys, n_instance_norms = reference_case
    weights = random_state_dict(keys)
    checkpoint = with_stale_instance_norm_stats(net, weights)
    assert len(checkpoint) == len(weights) + 3 * n_instance_norms
    checkpoint = OrderedDict((prefix + k, v) for k, v in checkpoint.items())

    load_compatible_state_dict(net, checkpoint)

    loaded = net.state_dict()
    for k, v in weights.items():
        torch.testing.assert_close(loaded[k], v, rtol=0, atol=0)


def test_known_stale_key_positions_are_dropped() -> None:
    net = build_generator("resnet_9blocks", ngf=8)
    sd = net.state_dict()
    sd["model.2.running_mean"] = torch.zeros(8)
    sd["model.10.conv_block.2.running_var"] = torch.ones(32)
    sd["model.10.conv_block.2.num_batches_tracked"] = torch.tensor(3)
    load_compatible_state_dict(net, sd)  # strict, and no error


def test_batch_norm_checkpoint_without_step_counters_loads() -> None:
    net = build_generator("unet_128", ngf=4, norm="batch")
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    load_compatible_state_dict(net, sd)  # strict, and no error


def test_running_stats_for_a_non_norm_layer_are_not_dropped() -> None:
    net = build_generator("resnet_6blocks", ngf=8)
    sd = net.state_dict()
    sd["model.3.running_mean"] = torch.zeros(8)  # model.3 is a ReLU: a genuinely foreign key
    with pytest.raises(
        IncompatibleCheckpointError, match=r"unexpected keys: model\.3\.running_mean"
    ):
        load_compatible_state_dict(net, sd)


def test_wrong_shape_names_key_and_both_shapes() -> None:
    net = build_generator("resnet_6blocks", ngf=8)
    sd = net.state_dict()
    sd["model.1.weight"] = torch.zeros(16, 3, 7, 7)
    with pytest.raises(IncompatibleCheckpointError) as info:
        load_compatible_state_dict(net, sd)
    msg = str(info.value)
    assert "model.1.weight" in msg and "(16, 3, 7, 7)" in msg and "(8, 3, 7, 7)" in msg
    assert isinstance(info.value, ValueError)
    assert len(info.value.mismatched) == 1


def test_wrong_shape_fails_even_when_not_strict() -> None:
    net = build_generator("resnet_6blocks", ngf=8)
    sd = net.state_dict()
    sd["model.1.bias"] = torch.zeros(16)
    with pytest.raises(IncompatibleCheckpointError, match="shape mismatches"):
        load_compatible_state_dict(net, sd, strict=False)


def test_missing_keys_are_listed_briefly_and_allowed_when_not_strict() -> None:
    net = build_generator("resnet_6blocks", ngf=8)
    sd = {"model.1.weight": torch.full((8, 3, 7, 7), 0.5)}
    with pytest.raises(IncompatibleCheckpointError) as info:
        load_compatible_state_dict(net, sd)
    assert "missing keys" in str(info.value) and "more)" in str(info.value)
    assert len(str(info.value)) < 600  # a readable message, not every key

    load_compatible_state_dict(net, sd, strict=False)
    assert torch.equal(net.state_dict()["model.1.weight"], sd["model.1.weight"])


def test_round_trip_through_a_wrapped_pth_file_reproduces_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_generator("resnet_6blocks", ngf=8).eval()
    path = tmp_path / "latest_net_G_A.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)

    target = build_generator("resnet_6blocks", ngf=8).eval()
    load_compatible_state_dict(target, load_pth_state_dict(path))

    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))


def test_pth_unwraps_state_dict_key(tmp_path: Path) -> None:
    sd = {"a.weight": torch.ones(2), "a.bias": torch.zeros(2)}
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": sd, "epoch": 3}, path)
    loaded = load_pth_state_dict(path)
    assert list(loaded) == list(sd)
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)


class _NotATensor:
    """A custom class: loading it would mean running arbitrary unpickling code."""


def test_pth_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"w": _NotATensor()}, path)
    with pytest.raises(IncompatibleCheckpointError, match="will not be unpickled"):
        load_pth_state_dict(path)


def test_pth_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.ones(1)], path)
    with pytest.raises(IncompatibleCheckpointError, match="not a state dict"):
        load_pth_state_dict(path)
