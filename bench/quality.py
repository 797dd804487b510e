"""Quality on the built-in synthetic pairs: train each pair, then score every direction on the
held-out split against the ground truth.

    python -m bench.quality                                  # every pair, CycleGAN + DiscoGAN
    python -m bench.quality --pairs day2night --recipes cyclegan --out runs/quality
    python -m bench.quality --minutes 8 --parallel 2         # recipes at equal CPU minutes
    python -m bench.quality --pairs day2night --recipes cut --max-steps 2 --n-test 4  # smoke
    python -m bench.quality --minutes 8 --pairs day2night --recipes cyclegan \
        --recipe "w32=--config configs/cpu64.yaml --ngf 32 --ndf 32"   # a variant beside it

Each run is a real `unpaired train` process, then `unpaired evaluate --json` (with the
generators' moving average and without it, where the run kept one). With --minutes every
recipe gets the same budget: its seconds per step are measured first (a short run of the same
recipe), its schedule is set to end within the budget (max_steps), and `max_minutes` stops it
there in any case; each run uses `--threads` threads and `--parallel` runs share the machine, so
with the defaults (1 thread, 2 at a time on 2 cores) a budget of M minutes is M CPU minutes per
recipe, both directions included. Peak memory is the training process's own (its max RSS).
Prints a table on stderr and the result as one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from bench.harness import ROOT, cpu_name, err, report_json, run_unpaired

_CPU64 = str(ROOT / "configs" / "cpu64.yaml")
_PAPER_LR = 0.0002  # the CycleGAN and CUT papers' Adam step; the CPU preset's own is larger


@dataclass(frozen=True)
class Recipe:
    label: str
    argv: tuple[str, ...]


RECIPES: dict[str, Recipe] = {
    "cyclegan": Recipe(
        "CycleGAN, CPU preset: ResNet-6 ngf 16, PatchGAN ndf 16", ("--config", _CPU64)
    ),
    "cyclegan-paper": Recipe(
        "CycleGAN, paper recipe: ResNet-9 ngf 64, 70x70 PatchGAN ndf 64, Adam 2e-4",
        (
            *("--config", _CPU64, "--generator", "resnet_9blocks", "--ngf", "64", "--ndf", "64"),
            *("--set", f"lr={_PAPER_LR}"),
        ),
    ),
    "cut": Recipe(
        "CUT (paper objective and Adam 2e-4), CPU-preset networks",
        ("--config", _CPU64, "--model", "cut", "--set", f"lr={_PAPER_LR}"),
    ),
    "fastcut": Recipe(
        "FastCUT (paper objective and Adam 2e-4), CPU-preset networks",
        ("--config", _CPU64, "--model", "fastcut", "--set", f"lr={_PAPER_LR}"),
    ),
    "discogan": Recipe(
        "DiscoGAN: encoder-decoder width 32, batch 8",
        ("--config", str(ROOT / "configs" / "discogan64.yaml")),
    ),
}
PAIRS = ("day2night", "solid2stripes", "flat2relief")
DEFAULT_RUNS = [(p, "cyclegan") for p in PAIRS] + [("day2night", "discogan")]
MINUTES_RECIPES = ("cyclegan-paper", "cyclegan", "cut", "fastcut")


@dataclass(frozen=True)
class Budget:
    """How one recipe is run: a step count and, at equal minutes, a hard stop in time."""

    max_steps: int | None = None
    minutes: float | None = None
    seconds_per_step: float | None = None

    def argv(self) -> list[str]:
        argv = [] if self.max_steps is None else ["--max-steps", str(self.max_steps)]
        if self.minutes is not None:
            assert self.max_steps is not None
            # the average follows the weights for the first half, then spans a tenth of the run
            decay = 1 - 10 / max(self.max_steps, 100)
            argv += ["--set", f"max_minutes={self.minutes}", "--set", f"ema_decay={decay:.4f}"]
            argv += ["--set", f"ema_start={self.max_steps // 2}"]
        return argv


def train_measured(argv: list[str]) -> tuple[subprocess.CompletedProcess[str], int]:
    """`unpaired ARGV` to its end, and its peak resident memory in bytes: the kernel's max RSS
    of that one process, collected with its exit status (wait4)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", *argv], cwd=ROOT, stdout=out, stderr=errors, text=True
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        errors.seek(0)
        completed = subprocess.CompletedProcess(
            process.args, process.returncode, out.read(), errors.read()
        )
    return completed, usage.ru_maxrss * 1024  # Linux reports kilobytes


def _seconds_per_step(run_dir: Path) -> float:
    """The median over the run's logged windows (the first, with start-up, left out)."""
    rows = [json.loads(line) for line in (run_dir / "losses.jsonl").read_text().splitlines()]
    batch = int(yaml.safe_load((run_dir / "config.yaml").read_text())["batch_size"])
    rates = sorted(r["img_per_s"] for r in (rows[1:] or rows))
    return batch / rates[len(rates) // 2]


def _train_argv(pair: str, run_dir: Path, recipe: Recipe) -> list[str]:
    """`unpaired train` of the recipe on a built-in pair into `run_dir`, quietly."""
    return ["train", "--dataset", pair, "--out", str(run_dir), "--no-progress", *recipe.argv]


def calibrate(
    name: str, recipe: Recipe, pair: str, out: Path, threads: int, minutes: float
) -> Budget:
    """The recipe's seconds per step in a short run (30 s, less for tiny budgets), and the
    steps that fit `minutes`."""
    run_dir = out.resolve() / f"calibrate-{name}"
    argv = _train_argv(pair, run_dir, recipe)
    argv += ["--threads", str(threads), "--max-steps", "1000000"]
    argv += ["--set", f"max_minutes={min(0.5, minutes / 4)}", "--set", "log_every=2"]
    argv += ["--set", "checkpoint_every=1000000"]
    done = run_unpaired(argv)
    if done.returncode != 0:
        raise RuntimeError(f"calibrating {name} failed:\n{done.stderr[-2000:]}")
    seconds = _seconds_per_step(run_dir)
    steps = max(10, math.floor(minutes * 60 * 0.97 / seconds))  # the schedule ends in time
    return Budget(max_steps=steps, minutes=minutes, seconds_per_step=seconds)


def run_one(
    pair: str, name: str, recipe: Recipe, out: Path, n_test: int, budget: Budget,
    threads: int | None,
) -> dict[str, Any]:  # fmt: skip
    run_dir = out.resolve() / f"{pair}-{name}"  # the children run in the repository root
    argv = [*_train_argv(pair, run_dir, recipe), *budget.argv()]
    if threads:
        argv += ["--threads", str(threads)]
    start = time.perf_counter()
    trained, peak = train_measured(argv)
    minutes = (time.perf_counter() - start) / 60
    if trained.returncode != 0:
        raise RuntimeError(f"training {pair}/{name} failed:\n{trained.stderr[-2000:]}")
    result: dict[str, Any] = {"pair": pair, "recipe": name, "label": recipe.label}
    result |= {"minutes": minutes, "peak_rss_mb": round(peak / 2**20, 1)}
    if budget.max_steps is not None:
        result["max_steps"] = budget.max_steps
    result["seconds_per_step"] = round(_seconds_per_step(run_dir), 4)
    for weights in ("--ema", "--no-ema") if budget.minutes else ("--ema",):
        evaluated = run_unpaired(["evaluate", str(run_dir), "--dataset", pair, "--n-test",
                                  str(n_test), weights, "--json"])  # fmt: skip
        if evaluated.returncode != 0:
            raise RuntimeError(f"evaluating {pair}/{name} failed:\n{evaluated.stderr[-2000:]}")
        report = json.loads(evaluated.stdout)
        result.setdefault("evaluations", []).append(report)
        result.setdefault("step", report["step"])
    if budget.minutes is not None and budget.max_steps is not None:  # did the schedule end?
        result["stopped_by"] = "schedule" if result["step"] >= budget.max_steps else "time"
    return result


def _table(results: list[dict[str, Any]]) -> Table:
    table = Table("pair", "recipe", "weights", "dir", "steps", "s/step", "peak MB", "min",
                  "PSNR", "SSIM", "gain", "SSIM gain")  # fmt: skip
    for r in results:
        for report in r["evaluations"]:
            for direction, s in report["directions"].items():
                table.add_row(
                    r["pair"], r["recipe"], report["weights"], direction, str(r["step"]),
                    f"{r['seconds_per_step']:.3f}", f"{r['peak_rss_mb']:.0f}",
                    f"{r['minutes']:.1f}", f"{s['psnr']:.2f}", f"{s['ssim']:.3f}",
                    f"{s['gain_db']:+.2f}", f"{s['ssim'] - s['baseline_ssim']:+.3f}",
                )  # fmt: skip
    return table


def extra_recipe(spec: str) -> tuple[str, Recipe]:
    """`NAME=ARGS` from the command line: a recipe of `unpaired train` arguments, to try a
    variant (another learning rate, width, batch) under the same budget rule as the built-ins."""
    name, _, argv = spec.partition("=")
    if not name.strip() or not argv.strip() or name.strip() in RECIPES:
        raise argparse.ArgumentTypeError(
            f"{spec!r}: expected NAME=ARGS with a new NAME and `unpaired train` arguments"
        )
    return name.strip(), Recipe(f"{name.strip()}: {argv.strip()}", tuple(shlex.split(argv)))


def selected_runs(args: argparse.Namespace, extra: list[str]) -> list[tuple[str, str]]:
    """(pair, recipe) in the order they run: the chosen or default recipes, then the extras
    (`--recipes` naming none runs the extras alone)."""
    if args.minutes is not None or (args.pairs and args.recipes):
        recipes = [*(MINUTES_RECIPES if args.recipes is None else args.recipes)]
        return [(p, r) for p in (args.pairs or PAIRS) for r in dict.fromkeys(recipes + extra)]
    runs = [
        (p, r)
        for p, r in DEFAULT_RUNS
        if (args.pairs is None or p in args.pairs) and (args.recipes is None or r in args.recipes)
    ]
    return runs + [(p, r) for p in (args.pairs or PAIRS) for r in extra]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="*", default=None)
    parser.add_argument("--recipes", "--models", nargs="*", default=None, choices=list(RECIPES))
    parser.add_argument(
        "--recipe",
        dest="extra",
        action="append",
        type=extra_recipe,
        default=[],
        metavar="NAME=ARGS",
        help="another recipe, run after the chosen ones, e.g. "
        "'lr4=--config configs/cpu64.yaml --set lr=0.0004' (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "quality")
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument(
        "--max-steps", type=int, default=None, help="cut training short (default: the recipe's)"
    )
    parser.add_argument("--minutes", type=float, default=None, help="equal time budget per run")
    parser.add_argument("--threads", type=int, default=None, help="threads per run")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    catalog = RECIPES | dict(args.extra)
    runs = selected_runs(args, [name for name, _ in args.extra])
    threads = (args.threads or 1) if args.minutes is not None else args.threads
    recipes = list(dict.fromkeys(r for _, r in runs))

    def measure(recipe: str) -> Budget:
        if args.minutes is None:
            return Budget(max_steps=args.max_steps)
        err.print(f"measuring {recipe}'s seconds per step ...", highlight=False)
        return calibrate(recipe, catalog[recipe], runs[0][0], args.out, threads, args.minutes)

    def one(run: tuple[str, str]) -> dict[str, Any]:
        pair, recipe = run
        err.print(f"training {pair} / {recipe} ...", highlight=False)
        return run_one(
            pair, recipe, catalog[recipe], args.out, args.n_test, budgets[recipe], threads
        )

    # measured as they will run: as many at a time as the runs themselves
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        budgets = dict(zip(recipes, pool.map(measure, recipes), strict=True))
        results = list(pool.map(one, runs))
    err.print(_table(results))
    summary: dict[str, Any] = {
        "benchmark": "quality",
        "cpu": cpu_name(),
        "n_test": args.n_test,
        "threads_per_run": threads,
        "parallel": args.parallel,
        "runs": results,
    }
    if args.minutes is not None:
        summary["minutes"] = args.minutes
        summary["budgets"] = {r: vars(b) for r, b in budgets.items()}
    if args.max_steps:
        summary["max_steps"] = args.max_steps
    report_json(summary, args.json_out)
    return summary


if __name__ == "__main__":
    main()
