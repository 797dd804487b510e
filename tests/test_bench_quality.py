"""`python -m bench.quality --minutes M`: recipes at equal time, each scored with and without
its generators' moving average, with steps, seconds per step and peak memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_recipes_are_measured_at_equal_minutes(tmp_path: Path) -> None:
    report = tmp_path / "quality.json"
    command = [sys.executable, "-m", "bench.quality", "--minutes", "0.15", "--pairs",
               "day2night", "--recipes", "cut", "--n-test", "2", "--out", str(tmp_path / "runs"),
               "--json-out", str(report)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["minutes"] == 0.15 and result["threads_per_run"] == 1
    budget = result["budgets"]["cut"]
    assert budget["max_steps"] >= 10 and budget["seconds_per_step"] > 0
    (run,) = result["runs"]
    assert run["recipe"] == "cut" and run["peak_rss_mb"] > 50
    assert run["stopped_by"] in ("schedule", "time")
    assert 0 < run["step"] <= budget["max_steps"]
    assert [e["weights"] for e in run["evaluations"]] == ["ema", "raw"]
    for evaluation in run["evaluations"]:
        assert set(evaluation["directions"]) == {"AtoB", "BtoA"}
        assert all(d["n"] == 2 for d in evaluation["directions"].values())
    config = (tmp_path / "runs" / "day2night-cut" / "config.yaml").read_text()
    assert "model: cut" in config and "max_minutes: 0.15" in config


def test_a_variant_recipe_runs_beside_or_instead_of_the_built_in_ones() -> None:
    from argparse import ArgumentTypeError, Namespace

    from bench.quality import MINUTES_RECIPES, RECIPES, extra_recipe, selected_runs

    name, recipe = extra_recipe("w32=--config configs/cpu64.yaml --ngf 32 --set 'lr=0.0002'")
    assert name == "w32" and recipe.argv[-2:] == ("--set", "lr=0.0002")
    minutes = Namespace(minutes=8.0, pairs=["day2night"], recipes=None)
    assert [r for _, r in selected_runs(minutes, ["w32"])] == [*MINUTES_RECIPES, "w32"]
    alone = Namespace(minutes=8.0, pairs=["day2night"], recipes=[])
    assert selected_runs(alone, ["w32"]) == [("day2night", "w32")]
    for bad in ("w32", "w32=", "=--ngf 8", "cyclegan=--ngf 8"):
        with pytest.raises(ArgumentTypeError, match="NAME=ARGS"):
            extra_recipe(bad)
    assert "w32" not in RECIPES  # the command line's variants stay out of the built-ins
