"""Bring your own model: generator files from other CycleGAN code, imported with no flags.

Each case writes a file the way other code saves it, imports it with `unpaired export
--from-pth` (no --arch, --norm or --key) and checks that `unpaired translate` gives the source
network's own output on a real photo, to within one level per channel.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from skimage import data
from torch import nn
from typer.testing import CliRunner

from cli.main import app
from models import build_generator
from models.imaging import array_to_tensor, tensor_to_array
from tests.models.foreign_generators import PatchDiscriminator, SequentialResnet, randomised

# name -> writes the file into a folder and returns (file, {direction: source network})
Layout = Callable[[Path], tuple[Path, dict[str, nn.Module]]]


def unpaired(*args: str | Path) -> tuple[int, str, str]:
    """The `unpaired` command in this process (each export spends its time in torch.onnx, not
    in starting Python): exit code, stdout, stderr."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def _with_stale_stats(net: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """What PyTorch < 0.4 saved for the public checkpoints: InstanceNorm running stats."""
    state = OrderedDict((prefix + k, v) for k, v in net.state_dict().items())
    for name, module in net.named_modules():
        if isinstance(module, nn.InstanceNorm2d):
            state[f"{prefix}{name}.running_mean"] = torch.zeros(module.num_features)
            state[f"{prefix}{name}.running_var"] = torch.ones(module.num_features)
    return state


def reference_resnet9_dataparallel(folder: Path) -> tuple[Path, dict[str, nn.Module]]:
    net = randomised(build_generator("resnet_9blocks", ngf=8), seed=0)
    torch.save(_with_stale_stats(net, "module."), folder / "horse2zebra.pth")
    return folder / "horse2zebra.pth", {"AtoB": net}


def reference_resnet6(folder: Path) -> tuple[Path, dict[str, nn.Module]]:
    net = randomised(build_generator("resnet_6blocks", ngf=8), seed=1)
    torch.save(net.state_dict(), folder / "latest_net_G.pth")
    return folder / "latest_net_G.pth", {"AtoB": net}


def reference_unet256_dataparallel(folder: Path) -> tuple[Path, dict[str, nn.Module]]:
    net = randomised(build_generator("unet_256", ngf=4), seed=2)
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, folder / "unet.pth")
    return folder / "unet.pth", {"AtoB": net}


def affine_block_named_no_prefix(folder: Path) -> tuple[Path, dict[str, nn.Module]]:
    net = randomised(SequentialResnet(ngf=8, blocks=9, affine=True), seed=3)
    torch.save(net.state_dict(), folder / "generator.pth")
    return folder / "generator.pth", {"AtoB": net}


def training_checkpoint(folder: Path) -> tuple[Path, dict[str, nn.Module]]:
    nets = {
        d: randomised(SequentialResnet(ngf=8, blocks=6), seed=s)
        for d, s in [("AtoB", 4), ("BtoA", 5)]
    }
    checkpoint = {
        "epoch": 200,
        "G_A2B": nets["AtoB"].state_dict(),
        "G_B2A": nets["BtoA"].state_dict(),
        "D_A": PatchDiscriminator().state_dict(),
        "D_B": PatchDiscriminator().state_dict(),
        "optimizer_G": torch.optim.Adam(nets["AtoB"].parameters()).state_dict(),
    }
    torch.save(checkpoint, folder / "checkpoint_200.pth")
    return folder / "checkpoint_200.pth", nets


def lightning_generator_prefix(folder: Path) -> tuple[Path, dict[str, nn.Module]]:
    net = randomised(build_generator("resnet_3blocks", ngf=8, norm="instance_affine"), seed=6)
    state = OrderedDict((f"generator.{k}", v) for k, v in net.state_dict().items())
    state |= {f"discriminator.{k}": v for k, v in PatchDiscriminator().state_dict().items()}
    torch.save({"epoch": 9, "global_step": 1000, "state_dict": state}, folder / "last.ckpt")
    return folder / "last.ckpt", {"AtoB": net}


def safetensors_file(folder: Path) -> tuple[Path, dict[str, nn.Module]]:
    net = randomised(build_generator("resnet_6blocks", ngf=8), seed=7)
    save_file(net.state_dict(), folder / "g.safetensors")
    return folder / "g.safetensors", {"AtoB": net}


LAYOUTS: list[Layout] = [
    reference_resnet9_dataparallel,
    reference_resnet6,
    reference_unet256_dataparallel,
    affine_block_named_no_prefix,
    training_checkpoint,
    lightning_generator_prefix,
    safetensors_file,
]


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(data.astronaut()).resize((256, 256), Image.Resampling.BICUBIC).save(path)
    return path


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda f: f.__name__)
def test_imports_with_no_flag_and_translates_as_the_source_network(
    tmp_path: Path, photo: Path, layout: Layout
) -> None:
    weights, sources = layout(tmp_path)
    store = tmp_path / "store"
    # no tiled graph: each graph is a torch.onnx export of ~10 s (tests/training/test_export.py
    # exports an imported network with it)
    code, stdout, stderr = unpaired(
        "export", "--from-pth", weights, "--name", "imported", "--store", store, "--no-tiled",
        "--json",
    )  # fmt: skip
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["directions"] == sorted(sources)
    assert summary["source"]["files"]["AtoB"]["name"] == weights.name
    assert "architecture" in stderr and " -> " in stderr  # the mapping, printed
    pixels = np.asarray(Image.open(photo).convert("RGB"))
    for direction, source in sources.items():
        out = tmp_path / direction
        code, _, stderr = unpaired(
            "translate", "imported", photo, "--direction", direction, "--out", out,
            "--store", store,
        )  # fmt: skip
        assert code == 0, stderr
        served = np.asarray(Image.open(out / photo.name))
        with torch.no_grad():
            expected = tensor_to_array(source.eval()(array_to_tensor(pixels[None])))[0]
        assert np.abs(served.astype(int) - expected.astype(int)).max() <= 1
        assert _psnr(served, expected) >= 50


def test_unknown_and_unsafe_files_are_refused_and_the_store_stays_empty(tmp_path: Path) -> None:
    torch.save({"D_A": PatchDiscriminator().state_dict()}, tmp_path / "d.pth")
    torch.save(SequentialResnet(ngf=4, blocks=1), tmp_path / "module.pth")  # a pickled object
    two = {k: SequentialResnet(ngf=4, blocks=1).state_dict() for k in ("first", "second")}
    torch.save(two, tmp_path / "two.pth")
    cases = [
        ("d.pth", [], "no generator this project knows fits the tensors"),
        ("module.pth", [], "needs arbitrary code to load"),
        ("two.pth", [], "pick one with --key NAME"),
        ("two.pth", ["--key", "third"], "has no network named 'third'"),
        ("two.pth", ["--norm", "batch"], "closest: first as resnet_1blocks"),
    ]
    store = tmp_path / "store"
    for name, flags, message in cases:
        code, _, stderr = unpaired(
            "export", "--from-pth", tmp_path / name, *flags, "--name", "x", "--store", store
        )
        assert code == 2 and message in stderr and "Traceback" not in stderr, stderr
        assert not store.exists() or not any(store.iterdir())
    code, _, stderr = unpaired(
        "export", "--from-pth", tmp_path / "two.pth", "--key", "second", "--name", "x",
        "--store", store, "--no-tiled",
    )  # fmt: skip
    assert code == 0, stderr
