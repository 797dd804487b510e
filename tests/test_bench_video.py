"""`python -m bench.video`: a pan over a real photo and a synthetic scene with a cut, each
translated per frame and steadied; speed against a bulk job; memory of a short and a long clip.
Run tiny (a few 64x64 frames, the tiny model); only relations that no timing can break are
checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 8


@pytest.mark.timeout(300)
def test_video_benchmark_reports_every_part(model_store: Path, tmp_path: Path) -> None:
    report = tmp_path / "video.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.video",
            "--store",
            str(model_store),
            "--model",
            "tiny",  # the store's alias day2night (the same model) is the scene model
            "--frames",
            str(FRAMES),
            "--side",
            "64",
            "--speed-frames",
            "4",
            "--memory-frames",
            "4,8",
            "--memory-side",
            "64",
            "--threads",
            "1",
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
    assert json.loads(done.stdout) == result
    assert result["cpu"] and result["threads"] == 1 and result["date"]
    assert (result["model"], result["direction"], result["scene_model"]) == ("tiny", "AtoB", "tiny")

    pan = result["pan"]
    assert (pan["frames"], pan["side"], pan["photo"]) == (FRAMES, 64, "astronaut")
    assert pan["reference_warping_error"] >= 0
    modes = {r["mode"]: r for r in pan["modes"]}
    assert set(modes) == {"none", "blend"}
    for row in modes.values():
        assert row["frames"] == row["decoded_frames"] == FRAMES
        assert row["scene_cuts"] == []  # a slow pan has no cut
        assert 0 < row["psnr_db_min"] <= row["psnr_db"] < 100
        assert row["input_warping_error"] == modes["none"]["input_warping_error"] > 0
    assert modes["blend"]["warping_error"] < modes["none"]["warping_error"]

    scene = result["scene"]
    assert (scene["pair"], scene["frames"], scene["true_cut"]) == ("day2night", FRAMES, FRAMES // 2)
    assert scene["truth_warping_error"] >= 0
    rows = {r["mode"]: r for r in scene["modes"]}
    assert set(rows) == {"none", "blend"}
    for row in rows.values():
        assert row["frames"] == row["decoded_frames"] == FRAMES
        assert 0 < row["psnr_db"] < 100
        assert all(0 < cut < FRAMES for cut in row["scene_cuts"])
    assert rows["none"]["scene_cuts"] == rows["blend"]["scene_cuts"]  # detected on the input
    assert scene["cut_detected"] == (rows["none"]["scene_cuts"] == [FRAMES // 2])

    speed = result["speed"]
    assert speed["side"] == 64 and "run_chunk" in speed["bulk"]
    assert len(speed["rows"]) == 3
    assert all(r["frames"] == 4 and r["frames_per_second"] > 0 for r in speed["rows"])

    memory = result["memory"]
    assert [r["frames"] for r in memory["rows"]] == [4, 8]
    for row in memory["rows"]:
        assert 0 < row["rss_after_load_mib"] <= row["peak_rss_mib"]
        assert row["growth_mib"] >= 0
