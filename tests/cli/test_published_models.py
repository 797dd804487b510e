"""`unpaired models fetch`: a real model published as a package, pinned by its wheel's sha256.

Tests do not download: pip is pointed at a local folder holding a wheel of the same layout
(vintagify's: `vintagify/resources/G_A2B_epoch33.pth`, a ResNet-9 with affine instance norm at
a trained model's scale), and the catalogue entry is pinned to that wheel's sha256.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import published_cmd
from cli.main import app
from models.imaging import array_to_tensor
from models.sample_photos import load_photo
from tests.models.foreign_generators import SequentialResnet, at_trained_scale, randomised

WHEEL = "vintagify-0.1.2-py3-none-any.whl"


def wheel_like_vintagify(folder: Path) -> str:
    """A wheel laid out as vintagify 0.1.2's; its sha256."""
    photo = load_photo("astronaut")[:128, :128]
    net = randomised(SequentialResnet(ngf=8, blocks=9, affine=True), 3)
    net = at_trained_scale(net, array_to_tensor(np.stack([photo])))
    weights = io.BytesIO()
    torch.save(net.state_dict(), weights)
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / WHEEL, "w") as wheel:
        wheel.writestr("vintagify/__init__.py", "")
        wheel.writestr("vintagify/resources/G_A2B_epoch33.pth", weights.getvalue())
        info = "vintagify-0.1.2.dist-info"
        wheel.writestr(
            f"{info}/METADATA", "Metadata-Version: 2.1\nName: vintagify\nVersion: 0.1.2\n"
        )
        wheel.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{info}/RECORD", "")
    return hashlib.sha256((folder / WHEEL).read_bytes()).hexdigest()


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with the wheel; the catalogue pinned to its bytes."""
    folder = tmp_path / "wheels"
    digest = wheel_like_vintagify(folder)
    pinned = replace(published_cmd.CATALOGUE["vintage"], wheel_sha256=digest)
    monkeypatch.setitem(published_cmd.CATALOGUE, "vintage", pinned)
    return folder


def fetch(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["models", "fetch", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def test_the_pinned_wheel_is_imported_with_no_architecture_flag(
    local_index: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    code, out, err = fetch("vintage", "--store", store, "--find-links", local_index, "--json")
    assert code == 0, err
    assert json.loads(out)["name"] == "vintage"
    manifest = json.loads((store / "vintage" / "manifest.json").read_text())
    architecture = manifest["architecture"]
    assert (architecture["generator"], architecture["ngf"], architecture["norm"]) == (
        "resnet_9blocks", 8, "instance_affine",
    )  # fmt: skip
    assert manifest["license"] == "MIT"
    assert "vintagify 0.1.2" in manifest["description"]
    assert manifest["domains"] == {"A": "modern", "B": "vintage"}
    assert manifest["directions"]["AtoB"]["onnx_tiled"] == "AtoB.tiled.onnx"  # trained scale tiles
    source = manifest["source"]["files"]["AtoB"]
    with zipfile.ZipFile(local_index / WHEEL) as wheel:
        weights = wheel.read("vintagify/resources/G_A2B_epoch33.pth")
    assert (source["name"], source["sha256"]) == (
        "G_A2B_epoch33.pth", hashlib.sha256(weights).hexdigest(),
    )  # fmt: skip


def test_a_wheel_of_other_bytes_is_refused_and_nothing_is_published(
    local_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = replace(published_cmd.CATALOGUE["vintage"], wheel_sha256="0" * 64)
    monkeypatch.setitem(published_cmd.CATALOGUE, "vintage", other)
    code, _, err = fetch("vintage", "--store", tmp_path / "store", "--find-links", local_index)
    assert code == 2
    assert "cannot download vintagify==0.1.2: its sha256 is " in err
    assert f"not the pinned {'0' * 64}; refused" in err
    assert not (tmp_path / "store" / "vintage").exists()


def test_without_the_package_it_says_why(local_index: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = fetch("vintage", "--store", tmp_path / "store", "--find-links", empty)
    assert code == 2
    assert "cannot download vintagify==0.1.2" in err
    assert "Traceback" not in err


def test_an_unknown_name_lists_the_catalogue() -> None:
    code, _, err = fetch("horse2zebra")
    assert code == 2
    assert "no published model 'horse2zebra'" in err and "vintage" in err
    code, out, _ = fetch("--list", "--json")
    assert code == 0
    assert [m["requirement"] for m in json.loads(out)["models"]] == ["vintagify==0.1.2"]
