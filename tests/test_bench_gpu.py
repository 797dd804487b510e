"""The GPU script cannot rot between leases: its CPU dry run runs every step, and the wheels it
needs on the GPU machine are the ones this environment lacks there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_dry_run_runs_every_step_and_checks_the_targets(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "bench.gpu", "--dry-run", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=580)
    log = (out / "log.txt").read_text() if (out / "log.txt").exists() else ""
    assert done.returncode == 0, done.stderr[-2000:] + log[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] is True and summary["cpu"]
    names = [s["step"] for s in summary["steps"]]
    assert names == ["engine", "parity", "served", "train", "students"]
    assert all(s["status"] == "ok" for s in summary["steps"]), summary["steps"]
    benchmarks = {
        "engine": "engine",
        "parity": "batch_parity",
        "served": "service",
        "train": "train_throughput",
        "students": "engine_models",
    }
    for step, benchmark in benchmarks.items():
        (run, *_) = json.loads((out / f"{step}.json").read_text())["runs"]
        assert run["benchmark"] == benchmark
    # onnxruntime on the CPU: a batch gives the same bytes as each image alone
    (parity,) = json.loads((out / "parity.json").read_text())["runs"][0]["rows"]
    assert parity["batches"]["4"]["max_level_diff_per_channel"] == [0, 0, 0]
    targets = summary["targets"]
    assert targets["engine_256_img_s"]["measured"] is None  # the dry run measures 64 px only
    assert targets["served_vs_engine_c32"]["measured"] is None
    assert targets["train_speedup"]["measured"] is None  # the reference alone
    assert len(list(out.iterdir())) <= 8  # what a lent machine can send back


def test_a_failing_step_is_recorded_and_the_next_one_runs(tmp_path: Path) -> None:
    from bench.gpu.__main__ import Step, run_step

    failing = Step("engine", (("bench.engine_throughput", "--configs", "no-such"),), 60)
    result = run_step(failing, tmp_path, deadline=float("inf"))
    assert result["status"] == "failed (exit 1)"
    assert "no-such" in (tmp_path / "log.txt").read_text()
    assert not (tmp_path / "engine.json").exists()


def test_the_wheels_are_what_the_gpu_image_lacks() -> None:
    from bench.gpu.wheels import GPU_IMAGE, missing_on_gpu

    carried = missing_on_gpu()
    assert {"fastapi", "celery", "pydantic", "pydantic-core", "uvicorn", "redis"} <= set(carried)
    assert not {"torch", "numpy", "onnxruntime", "pillow"} & set(carried)
    assert not GPU_IMAGE & set(carried)
