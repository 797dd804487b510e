"""`python -m bench.real_photos`: speed per size and precision, a student's fidelity to its
teacher on the held-out photos at full size, and tiled against untiled at 2048x2048."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import edited_copy

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_teacher_and_student_are_measured_on_real_photos(model_store: Path, tmp_path: Path) -> None:
    edited_copy(model_store / "tiny", model_store / "copy")  # a "student" equal to its teacher
    report = tmp_path / "real.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.real_photos",
            "--store",
            str(model_store),
            "--teacher",
            "tiny",
            "--student",
            "copy",
            "--sizes",
            "256",
            "--threads",
            "1",
            "--seam-thumbnails",
            "default,4194304",
            "--json-out",
            str(report),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(report.read_text())
    assert [(r["model"], r["precision"], r["size"]) for r in result["speed"]] == [
        ("tiny", "fp32", "256"), ("copy", "fp32", "256"),
    ]  # fmt: skip
    assert all(len(r["seconds"]) == 5 and r["median_s"] > 0 for r in result["speed"])
    fidelity = {r["photo"]: r for r in result["fidelity"]}
    assert set(fidelity) == {"chelsea", "coffee"}  # the held-out photos, at their own size
    assert fidelity["chelsea"]["size"] == "451x300"
    assert all(r["psnr_db"] == float("inf") and r["ssim"] == 1.0 for r in fidelity.values())
    assert all(r["identity_psnr_db"] < 40 for r in fidelity.values())  # the model does something
    seams = {(r["model"], r["thumbnail_pixels"]): r for r in result["seams"]}
    default, whole = 1024 * 1024, 2048 * 2048  # the service's budget; the whole photo's
    assert set(seams) == {(m, t) for m in ("tiny", "copy") for t in (default, whole)}
    assert seams["tiny", default]["side"] == 2048
    assert seams["tiny", default]["psnr_db"] == seams["copy", default]["psnr_db"] > 20
    # the whole photo's statistics leave only the seams: closer than a thumbnail's, and dearer
    assert seams["tiny", whole]["psnr_db"] > seams["tiny", default]["psnr_db"]
    assert seams["tiny", whole]["reserved_mb"] > seams["tiny", default]["reserved_mb"] > 0
