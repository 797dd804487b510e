"""`unpaired export`, `models list` and `translate` as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from tests.cli.test_cli import assert_user_error, unpaired
from tests.training.test_export import REFERENCE, upstream_state_dict


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained run exported by the CLI into a store; returns the store."""
    from tests.conftest import TINY
    from training.config import validate_config
    from training.runner import train

    root = tmp_path_factory.mktemp("cli-export")
    cfg = validate_config({**TINY, "out": root / "run", "max_steps": 2}, source="test")
    train(cfg)
    result = unpaired(
        "export", cfg.out, "--name", "d2n", "--store", root / "store", "--fp16",
        "--alias", "day2night", "--domains", "day,night", "--dataset", "day2night", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["name"] == "d2n" and summary["directions"] == ["AtoB", "BtoA"]
    assert all(p["fp32_max_abs"] <= 1e-4 for p in summary["parity"].values())
    return root / "store"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of photos of odd sizes and modes, one nested, plus one broken file."""
    root = tmp_path_factory.mktemp("inputs")
    photo = data.astronaut()
    Image.fromarray(photo[:257, :383]).save(root / "odd.png")
    Image.fromarray(photo[100:160, 50:90]).convert("L").save(root / "gray.jpg", quality=90)
    rgba = np.dstack([photo[:40, :48], np.full((40, 48), 128, np.uint8)])
    (root / "nested").mkdir()
    Image.fromarray(rgba, "RGBA").save(root / "nested" / "alpha.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    return root


def test_models_list_shows_the_export(exported: Path) -> None:
    result = unpaired("models", "list", "--store", exported, "--json")
    assert result.returncode == 0, result.stderr
    (model,) = json.loads(result.stdout)["models"]
    assert model["name"] == "d2n" and model["aliases"] == ["day2night"]
    assert model["domains"] == {"A": "day", "B": "night"} and model["fp16"] is True
    manifest = json.loads((exported / "d2n" / "manifest.json").read_text())
    assert set(manifest["metrics"]["directions"]) == {"AtoB", "BtoA"}  # --dataset evaluated it


def test_translate_folder_reports_the_bad_file_and_writes_the_rest(
    exported: Path, inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = unpaired(
        "translate", "day2night", inputs, "--direction", "AtoB", "--out", out,
        "--store", exported, "--batch-size", "2", "--json",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert [f["input"] for f in summary["failed"]] == [str(inputs / "broken.png")]
    assert "broken.png" in result.stderr and "Traceback" not in result.stderr
    assert sorted(Path(p).relative_to(out).as_posix() for p in summary["written"]) == [
        "gray.png",
        "nested/alpha.png",
        "odd.png",
    ]
    assert Image.open(out / "odd.png").size == (383, 257)
    alpha = Image.open(out / "nested" / "alpha.png")
    assert alpha.mode == "RGBA" and alpha.getchannel("A").getextrema() == (128, 128)
    assert Image.open(out / "gray.png").size == (40, 60)


def test_same_input_twice_gives_identical_bytes(
    exported: Path, inputs: Path, tmp_path: Path
) -> None:
    outputs = []
    for attempt in ("first", "second"):
        result = unpaired(
            "translate", "d2n", inputs / "odd.png", inputs / "gray.jpg", "--direction", "BtoA",
            "--out", tmp_path / attempt, "--store", exported, "--format", "webp",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        outputs.append({p.name: p.read_bytes() for p in (tmp_path / attempt).iterdir()})
    assert outputs[0].keys() == {"odd.webp", "gray.webp"}
    assert outputs[0] == outputs[1]


def test_glob_and_jpeg_output(exported: Path, inputs: Path, tmp_path: Path) -> None:
    result = unpaired(
        "translate", "d2n", str(inputs / "*.png"), "--direction", "AtoB",
        "--out", tmp_path, "--store", exported, "--format", "jpeg", "--quality", "80",
    )  # fmt: skip
    assert result.returncode == 1  # broken.png matches the glob too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.jpg"]
    assert Image.open(tmp_path / "odd.jpg").format == "JPEG"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "x.png", "--direction", "AtoB"], "no model 'nope'"),
        (["d2n", "x.png"], "translates both ways; give a direction"),
        (["d2n", "x.png", "--direction", "AtoB", "--backend", "tvm"], "--backend must be one of"),
        (["d2n", "x.png", "--direction", "AtoB", "--format", "gif"], "--format must be one of"),
        (["d2n", "x.png", "--direction", "up"], "has no direction 'up'"),
    ],
)
def test_translate_bad_requests_are_clear_errors(
    exported: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    result = unpaired("translate", *args, "--out", tmp_path, "--store", exported)
    assert_user_error(result, message)


def test_settings_come_from_the_environment(exported: Path, tmp_path: Path) -> None:
    env = {**os.environ, "UNPAIRED_STORE": str(exported)}
    listed = subprocess.run(
        [sys.executable, "-m", "cli", "models", "list", "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert listed.returncode == 0 and json.loads(listed.stdout)["store"] == str(exported)
    env["UNPAIRED_BACKEND"] = "tvm"
    bad = subprocess.run(
        [sys.executable, "-m", "cli", "translate", "d2n", "x.png", "--out", tmp_path],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert_user_error(bad, "UNPAIRED_BACKEND")


def test_translate_missing_input_fails_without_traceback(exported: Path, tmp_path: Path) -> None:
    result = unpaired(
        "translate", "d2n", tmp_path / "missing.png", "--direction", "AtoB",
        "--out", tmp_path / "out", "--store", exported,
    )  # fmt: skip
    assert result.returncode == 1
    assert "no such file" in result.stderr and "Traceback" not in result.stderr


def test_export_from_public_pth_then_translate_one_way(tmp_path: Path) -> None:
    torch.save(upstream_state_dict(REFERENCE / "resnet_6blocks_G.keys.txt"), tmp_path / "g.pth")
    store = tmp_path / "store"
    result = unpaired(
        "export", "--from-pth", tmp_path / "g.pth", "--arch", "resnet_6blocks",
        "--name", "h2z", "--store", store, "--domains", "horse,zebra", "--no-tiled",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    Image.fromarray(data.chelsea()[:64, :64]).save(tmp_path / "cat.png")
    result = unpaired("translate", "h2z", tmp_path / "cat.png", "--out", tmp_path / "o",
                      "--store", store)  # fmt: skip
    assert result.returncode == 0, result.stderr  # one direction: --direction not needed
    assert Image.open(tmp_path / "o" / "cat.png").size == (64, 64)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "x"], "give one of: a RUN_DIR, --from-pth FILE or --from-onnx FILE"),
        (
            ["--from-pth", "x.pth", "--name", "x", "--value-range", "0,1", "--multiple", "4"],
            "--multiple needs --from-onnx",
        ),
        (["--from-onnx", "x.onnx", "--name", "x", "--key", "G_A"], "--key needs --from-pth"),
        (["runs/none", "--name", "Bad Name!"], "--name is required"),
        (["nowhere", "--name", "x"], "nowhere"),
    ],
)
def test_export_bad_requests_are_clear_errors(
    tmp_path: Path, args: list[str], message: str
) -> None:
    assert_user_error(unpaired("export", *args, "--store", tmp_path), message)


def test_names_a_user_chose_are_printed_as_they_are(exported: Path, tmp_path: Path) -> None:
    """Rich markup in a file name is text, not styling: the failure names the real file."""
    named = tmp_path / "[bold red]x.png"  # as markup: "x.png" in bold red
    named.write_bytes(b"not an image")
    result = unpaired(
        "translate", "day2night", named, "--direction", "AtoB", "--out", tmp_path / "out",
        "--store", exported,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"failed: {named}: " in result.stderr


def test_outputs_that_differ_only_in_case_are_not_overwritten(
    exported: Path, tmp_path: Path
) -> None:
    """a.PNG and A.png would be one file on a case-insensitive filesystem: one is refused."""
    folder = tmp_path / "in"
    (folder / "x").mkdir(parents=True)
    (folder / "X").mkdir()
    photo = data.astronaut()[:32, :32]
    Image.fromarray(photo).save(folder / "x" / "a.png")
    Image.fromarray(photo[::-1]).save(folder / "X" / "A.PNG")
    result = unpaired(
        "translate", "day2night", folder, "--direction", "AtoB", "--out", tmp_path / "out",
        "--store", exported, "--json",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert len(summary["written"]) == 1
    (refused,) = summary["failed"]
    assert "is already written from" in refused["error"]
