"""Quality on the built-in synthetic pairs: train each pair on the CPU within a time budget, then
score both directions on the held-out split against the ground truth.

    python bench/quality.py                                  # every pair, CycleGAN + DiscoGAN
    python bench/quality.py --pairs day2night --models cyclegan --out runs/quality

Each run is a real `unpaired train` process (wall-clock minutes include start-up), then
`unpaired evaluate --json`. Prints a table, then one JSON object as the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
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


def unpaired(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], capture_output=True, text=True, check=False
    )


def run_one(pair: str, model: str, out: Path, n_test: int) -> dict[str, Any]:
    run_dir = out / f"{pair}-{model}"
    start = time.perf_counter()
    trained = unpaired(
        "train", "--dataset", pair, "--out", str(run_dir), "--no-progress", *RECIPES[model]
    )
    minutes = (time.perf_counter() - start) / 60
    if trained.returncode != 0:
        raise RuntimeError(f"training {pair}/{model} failed:\n{trained.stderr[-2000:]}")
    evaluated = unpaired(
        "evaluate", str(run_dir), "--dataset", pair, "--n-test", str(n_test), "--json"
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
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    runs = [
        (p, m)
        for p, m in DEFAULT_RUNS
        if (args.pairs is None or p in args.pairs) and (args.models is None or m in args.models)
    ]
    results = []
    for pair, model in runs:
        print(f"training {pair} / {model} ...", file=sys.stderr, flush=True)
        results.append(run_one(pair, model, args.out, args.n_test))
    print(f"\n{'pair':<14} {'model':<9} {'dir':<5} {'steps':>5} {'min':>5} "
          f"{'PSNR':>6} {'SSIM':>6} {'base':>6} {'gain':>6}")  # fmt: skip
    for r in results:
        for direction, s in r["directions"].items():
            print(
                f"{r['pair']:<14} {r['model']:<9} {direction:<5} {r['step']:>5} "
                f"{r['minutes']:>5.1f} {s['psnr']:>6.2f} {s['ssim']:>6.3f} "
                f"{s['baseline_psnr']:>6.2f} {s['gain_db']:>+6.2f}"
            )
    summary = {"benchmark": "quality", "n_test": args.n_test, "runs": results}
    print(json.dumps(summary))
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


if __name__ == "__main__":
    main()
