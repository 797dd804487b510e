"""Quality on the built-in synthetic pairs: train each pair on the CPU within a time budget, then
score both directions on the held-out split against the ground truth.

    python -m bench.quality                                  # every pair, CycleGAN + DiscoGAN
    python -m bench.quality --pairs day2night --models cyclegan --out runs/quality
    python -m bench.quality --pairs day2night --models cyclegan --max-steps 2 --n-test 4  # smoke

Each run is a real `unpaired train` process (wall-clock minutes include start-up), then
`unpaired evaluate --json`. Prints a table on stderr and the result as one JSON object on
stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from bench.harness import ROOT, cpu_name, err, report_json, run_unpaired

RECIPES: dict[str, list[str]] = {
    # configs/cpu64.yaml: ResNet-6 at width 16, 70x70-style PatchGAN at width 16, batch 1.
    "cyclegan": ["--config", str(ROOT / "configs" / "cpu64.yaml")],
    # configs/discogan64.yaml: the DiscoGAN encoder-decoder at width 32, batch 8.
    "discogan": ["--config", str(ROOT / "configs" / "discogan64.yaml")],
}
DEFAULT_RUNS = [
    ("day2night", "cyclegan"),
    ("solid2stripes", "cyclegan"),
    ("flat2relief", "cyclegan"),
    ("day2night", "discogan"),
]


def run_one(pair: str, model: str, out: Path, n_test: int, max_steps: int | None) -> dict[str, Any]:
    run_dir = out.resolve() / f"{pair}-{model}"  # the children run in the repository root
    argv = ["train", "--dataset", pair, "--out", str(run_dir), "--no-progress", *RECIPES[model]]
    if max_steps:
        argv += ["--max-steps", str(max_steps)]
    start = time.perf_counter()
    trained = run_unpaired(argv)
    minutes = (time.perf_counter() - start) / 60
    if trained.returncode != 0:
        raise RuntimeError(f"training {pair}/{model} failed:\n{trained.stderr[-2000:]}")
    evaluated = run_unpaired(
        ["evaluate", str(run_dir), "--dataset", pair, "--n-test", str(n_test), "--json"]
    )
    if evaluated.returncode != 0:
        raise RuntimeError(f"evaluating {pair}/{model} failed:\n{evaluated.stderr[-2000:]}")
    report = json.loads(evaluated.stdout)
    return {"pair": pair, "model": model, "minutes": minutes, **report}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="*", default=None)
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "quality")
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument(
        "--max-steps", type=int, default=None, help="cut training short (default: the recipe's)"
    )
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    runs = [
        (p, m)
        for p, m in DEFAULT_RUNS
        if (args.pairs is None or p in args.pairs) and (args.models is None or m in args.models)
    ]
    results = []
    for pair, model in runs:
        err.print(f"training {pair} / {model} ...", highlight=False)
        results.append(run_one(pair, model, args.out, args.n_test, args.max_steps))
    table = Table("pair", "model", "dir", "steps", "min", "PSNR", "SSIM", "base", "gain")
    for r in results:
        for direction, s in r["directions"].items():
            table.add_row(
                r["pair"],
                r["model"],
                direction,
                str(r["step"]),
                f"{r['minutes']:.1f}",
                f"{s['psnr']:.2f}",
                f"{s['ssim']:.3f}",
                f"{s['baseline_psnr']:.2f}",
                f"{s['gain_db']:+.2f}",
            )
    err.print(table)
    summary = {"benchmark": "quality", "cpu": cpu_name(), "n_test": args.n_test, "runs": results}
    if args.max_steps:
        summary["max_steps"] = args.max_steps
    report_json(summary, args.json_out)
    return summary


if __name__ == "__main__":
    main()
