"""`python -m bench.engine_throughput --model A --model B` measures store models side by side:
each one's MACs per image (n/a for a foreign ONNX graph), img/s, and the ratio to the first."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from models.manifest import MANIFEST_FILE
from service.store.model_store import ModelStore

ROOT = Path(__file__).resolve().parents[1]


def foreign_copy(exported: Path, target: Path) -> Path:
    """`exported` as `--from-onnx` leaves a network this project does not define: no
    architecture and no weights (the graphs' sha256 stay valid)."""
    shutil.copytree(exported, target)
    manifest = json.loads((target / MANIFEST_FILE).read_text())
    manifest |= {"name": target.name, "aliases": [], "architecture": None}
    for files in manifest["directions"].values():
        name = files.pop("weights", None)
        if name:
            del manifest["files"][name]
            (target / name).unlink()
    (target / MANIFEST_FILE).write_text(json.dumps(manifest))
    return target


@pytest.mark.timeout(300)
def test_store_models_are_measured_side_by_side_with_their_macs(
    model_store: Path, exported_model: Path, tmp_path: Path
) -> None:
    ModelStore(model_store).publish(foreign_copy(exported_model, tmp_path / "foreign"))
    report = tmp_path / "engine.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.engine_throughput",
            "--model",
            "tiny",
            "--model",
            "foreign",
            "--store",
            str(model_store),
            "--device",
            "cpu",
            "--threads",
            "1",
            "--sizes",
            "32",
            "--batches",
            "1",
            "--min-seconds",
            "0.1",
            "--json-out",
            str(report),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "CPU: " in done.stderr and "vs tiny" in done.stderr
    result = json.loads(report.read_text())
    assert json.loads(done.stdout) == result
    assert result["benchmark"] == "engine_models" and result["cpu"]
    models = {m["name"]: m for m in result["models"]}
    assert models["tiny"]["direction"] == "AtoB"
    assert models["tiny"]["macs"]["32"] > 0
    assert models["foreign"]["macs"] == {"32": None}
    measured = [r for r in result["rows"] if "images_per_s" in r]
    onnx = {r["model"]: r for r in measured if r["config"] == "onnxruntime fp32"}
    assert set(onnx) == {"tiny", "foreign"}
    assert onnx["tiny"]["macs"] == models["tiny"]["macs"]["32"]
    assert onnx["foreign"]["macs"] is None
    assert all(r["images_per_s"] > 0 and r["size"] == 32 and r["batch"] == 1 for r in measured)
    assert onnx["tiny"]["vs_first"] == 1.0
    assert onnx["foreign"]["vs_first"] > 0
    # torch cannot run a graph without a network definition: marked, not dropped
    torch_foreign = [
        r for r in result["rows"] if r["model"] == "foreign" and "torch" in r["config"]
    ]
    assert torch_foreign and all("onnx backend only" in r["skipped"] for r in torch_foreign)
    assert any(r["model"] == "tiny" and r["config"] == "torch fp32" for r in measured)
