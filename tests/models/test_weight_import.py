"""Generators from other code, recognised by their tensors: layouts, inference, refusals."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from models import IncompatibleCheckpointError, build_generator
from models.weight_import import ImportChoices, direction_of, import_generators
from tests.models.foreign_generators import PatchDiscriminator, SequentialResnet, randomised


def _same_output(imported: nn.Module, source: nn.Module, side: int = 64) -> None:
    x = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(imported(x), source(x), rtol=0, atol=1e-5)


def test_affine_instance_norm_and_block_names_without_prefix(tmp_path: Path) -> None:
    source = randomised(SequentialResnet(ngf=8, blocks=9, affine=True), seed=0)
    assert next(iter(source.state_dict())) == "1.weight"  # no prefix at all
    torch.save(source.state_dict(), tmp_path / "g.pth")
    (found,) = import_generators(tmp_path / "g.pth")
    arch = found.architecture
    assert (arch.generator, arch.ngf, arch.norm, arch.conv_bias) == (
        "resnet_9blocks", 8, "instance_affine", True,
    )  # fmt: skip
    assert found.mapping()["first"] == "1.weight -> model.1.weight"
    assert found.mapping()["blocks"] == 9 and "assumed" not in found.mapping()
    _same_output(found.net, source)


@pytest.mark.parametrize("blocks", [0, 3, 12])
def test_resnets_of_any_depth(tmp_path: Path, blocks: int) -> None:
    source = randomised(SequentialResnet(ngf=4, blocks=blocks, affine=True), seed=blocks)
    torch.save(source.state_dict(), tmp_path / "g.pth")
    (found,) = import_generators(tmp_path / "g.pth")
    assert found.architecture.generator == f"resnet_{blocks}blocks"
    _same_output(found.net, source, side=32)


def test_resize_convolution_decoder_is_recognised_and_the_resize_is_a_stated_assumption(
    tmp_path: Path,
) -> None:
    for mode, choices in (
        ("nearest", ImportChoices()),
        ("bilinear", ImportChoices(upsample="bilinear")),
    ):
        source = randomised(SequentialResnet(ngf=4, blocks=2, affine=True, resize=mode), seed=3)
        torch.save(source.state_dict(), tmp_path / "g.pth")
        (found,) = import_generators(tmp_path / "g.pth", choices)
        assert found.architecture.upsample == mode
        _same_output(found.net, source, side=32)
    (default,) = import_generators(tmp_path / "g.pth")  # bilinear weights, no flag
    assert "--upsample bilinear" in default.mapping()["assumed"]


def test_batch_norm_without_conv_bias(tmp_path: Path) -> None:
    source = randomised(build_generator("resnet_6blocks", ngf=8, norm="batch"), seed=4)
    torch.save({f"netG.{k}": v for k, v in source.state_dict().items()}, tmp_path / "g.pth")
    (found,) = import_generators(tmp_path / "g.pth")
    assert (found.architecture.norm, found.architecture.conv_bias) == ("batch", False)
    _same_output(found.net, source)


@pytest.mark.parametrize("name", ["unet_128", "unet_256", "discogan"])
def test_unet_and_discogan(tmp_path: Path, name: str) -> None:
    source = randomised(build_generator(name, ngf=4), seed=5)
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, tmp_path / "g.pth")
    (found,) = import_generators(tmp_path / "g.pth")
    assert found.architecture.generator == name
    _same_output(found.net, source, side=256 if name == "unet_256" else 128)


def test_training_checkpoint_gives_both_generators_and_skips_the_rest(tmp_path: Path) -> None:
    a2b = randomised(SequentialResnet(ngf=4, blocks=2), seed=6)
    b2a = randomised(SequentialResnet(ngf=4, blocks=2), seed=7)
    optimizer = torch.optim.Adam(a2b.parameters())
    a2b(torch.zeros(1, 3, 16, 16)).mean().backward()
    optimizer.step()
    checkpoint = {
        "epoch": 12,
        "G_A2B": a2b.state_dict(),
        "G_B2A": b2a.state_dict(),
        "D_A": PatchDiscriminator().state_dict(),
        "D_B": PatchDiscriminator().state_dict(),
        "optimizer_G": optimizer.state_dict(),
    }
    torch.save(checkpoint, tmp_path / "ckpt.pth")
    found = {g.direction: g for g in import_generators(tmp_path / "ckpt.pth")}
    assert set(found) == {"AtoB", "BtoA"}
    assert found["AtoB"].name == "G_A2B"
    _same_output(found["AtoB"].net, a2b.eval(), side=32)
    _same_output(found["BtoA"].net, b2a, side=32)


def test_lightning_state_dict_with_generator_prefix(tmp_path: Path) -> None:
    source = randomised(build_generator("resnet_6blocks", ngf=4), seed=8)
    state = OrderedDict((f"generator.{k}", v) for k, v in source.state_dict().items())
    state |= {f"discriminator.{k}": v for k, v in PatchDiscriminator().state_dict().items()}
    lightning = {
        "epoch": 3,
        "global_step": 900,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": state,
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 2e-4, "params": [0]}]}],
        "hyper_parameters": {"ngf": 4, "lr": 2e-4},
    }
    torch.save(lightning, tmp_path / "last.ckpt")
    (found,) = import_generators(tmp_path / "last.ckpt")
    assert found.name == "state_dict.generator"
    _same_output(found.net, source, side=32)


def test_safetensors_file_in_any_key_order(tmp_path: Path) -> None:
    source = randomised(build_generator("resnet_9blocks", ngf=4), seed=9)
    save_file(source.state_dict(), tmp_path / "g.safetensors")
    (found,) = import_generators(tmp_path / "g.safetensors")
    assert found.architecture.generator == "resnet_9blocks"
    _same_output(found.net, source, side=32)


def test_key_picks_one_network(tmp_path: Path) -> None:
    one, two = (randomised(SequentialResnet(ngf=4, blocks=1), seed=s) for s in (10, 11))
    torch.save({"first": one.state_dict(), "second": two.state_dict()}, tmp_path / "two.pth")
    assert {g.direction for g in import_generators(tmp_path / "two.pth")} == {None}
    (picked,) = import_generators(tmp_path / "two.pth", ImportChoices(key="second"))
    _same_output(picked.net, two, side=32)
    with pytest.raises(IncompatibleCheckpointError, match=r"no network named 'third'.*first"):
        import_generators(tmp_path / "two.pth", ImportChoices(key="third"))


def test_a_file_of_no_known_generator_names_what_did_not_fit(tmp_path: Path) -> None:
    torch.save({"D_A": PatchDiscriminator().state_dict()}, tmp_path / "d.pth")
    with pytest.raises(
        IncompatibleCheckpointError,
        match=r"no generator .* fits.*D_A \(8 tensors\).* 3 convolutions starting with a 4x4",
    ):
        import_generators(tmp_path / "d.pth")


def test_a_norm_the_user_insists_on_that_the_tensors_refute(tmp_path: Path) -> None:
    source = SequentialResnet(ngf=4, blocks=1, affine=True)
    torch.save(source.state_dict(), tmp_path / "g.pth")
    with pytest.raises(
        IncompatibleCheckpointError, match=r"closest: <root> as resnet_1blocks.*norm batch"
    ):
        import_generators(tmp_path / "g.pth", ImportChoices(norm="batch"))


def test_a_pickle_that_needs_code_is_refused(tmp_path: Path) -> None:
    torch.save(SequentialResnet(ngf=4, blocks=1), tmp_path / "whole-module.pth")
    with pytest.raises(IncompatibleCheckpointError, match="needs arbitrary code"):
        import_generators(tmp_path / "whole-module.pth")


def test_garbage_is_not_a_weights_file(tmp_path: Path) -> None:
    (tmp_path / "x.pth").write_bytes(b"not a pickle at all")
    (tmp_path / "x.safetensors").write_bytes(b"\x00" * 16)
    for name in ("x.pth", "x.safetensors"):
        with pytest.raises(IncompatibleCheckpointError, match="not a"):
            import_generators(tmp_path / name)


@pytest.mark.parametrize(
    ("name", "direction"),
    [
        ("G_A2B", "AtoB"), ("G_B2A", "BtoA"), ("netG_A", "AtoB"), ("netG_B", "BtoA"),
        ("state_dict.gen_ab", "AtoB"), ("genBtoA", "BtoA"), ("generator", None), ("G", None),
    ],
)  # fmt: skip
def test_direction_from_the_network_name(name: str, direction: str | None) -> None:
    assert direction_of(name) == direction
