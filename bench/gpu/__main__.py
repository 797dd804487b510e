"""Every GPU figure of docs/benchmarks.md in one command, within 8 minutes of a lent GPU.

A lent GPU comes rarely, for about 15 minutes, bare (its own Python 3.12 and torch, no network),
and returns at most 8 files, so its checks are prepared here and run as one call. Each step is
one of the project's own benchmarks in a child process with a time limit (the whole run stops
at --minutes); a step that fails or runs out of time is recorded, and the next one runs:

1. `engine`: bench.engine_throughput on the ResNet-9 generator (ngf 64), torch fp16
   channels_last eager at 256 and 512, batch 1 to 128, next to the reference (fp32 eager,
   batch 1); then compiled (torch.compile default mode) and with CUDA graphs;
2. `parity`: bench.gpu.batch_parity, an image batched vs. alone, in levels per channel;
3. `served`: bench.http_service, the embedded service over HTTP (torch on CUDA) at
   concurrency 32 and 128, next to the engine alone;
4. `train`: bench.train_throughput, CycleGAN's reference recipe and the fast variants (bf16,
   channels_last, compile, fused Adam: on whenever training runs on CUDA), CUT and FastCUT;
5. `students`: the distilled students' architectures next to their teacher (engine, fp16).

Writes NAME.json per step, `summary.json` (each step's status and time, the device, and the
targets of issue 22 checked against what was measured) and `log.txt` into --out.

    python -m bench.gpu --out "$OUT"                 # on the GPU machine
    python -m bench.gpu --dry-run --out /tmp/gpu     # the same steps, tiny, on this CPU (tested)

docs/benchmarks.md ("The GPU script") has the command that prepares and carries the wheels.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import ROOT, cpu_name, err

#: issue 22's targets on an H100/H200-class GPU
ENGINE_TARGET_IMG_S = 3000.0  # at 256x256, the best configuration
TRAIN_TARGET_SPEEDUP = 5.0  # the fastest variant vs. the reference recipe
SERVED_TARGET_RATIO = 0.8  # served / engine at concurrency 32


@dataclass(frozen=True)
class Step:
    name: str  # writes NAME.json
    runs: tuple[tuple[str, ...], ...]  # `python -m` argv of each benchmark (+ --json-out)
    seconds: float  # its time limit
    prepare: tuple[str, ...] | None = None  # a `python -m` argv run first, no JSON
    #: "{scratch}" in an argv is a temporary folder the step's runs share


def gpu_plan() -> list[Step]:
    """The full plan, most wanted first: about 7 minutes on an H100."""
    sides = ("--sizes", "256,512", "--batches", "1,8,32,64,128", "--min-seconds", "1")
    return [
        Step("engine", (
            ("bench.engine_throughput", "--device", "cuda", "--configs", "reference,fp16",
             *sides),
            ("bench.engine_throughput", "--device", "cuda", "--configs", "compile,cudagraphs",
             "--sizes", "256", "--batches", "64,128", "--min-seconds", "1"),
        ), 170),
        Step("parity", (("bench.gpu.batch_parity", "--device", "cuda", "--batches", "8,64"),), 50),
        Step("served", (
            ("bench.http_service", "--device", "cuda", "--modes", "embedded",
             "--generator", "resnet_9blocks", "--ngf", "64", "--size", "256",
             "--concurrency", "32,128", "--max-batch", "64", "--seconds", "8", "--warmup", "3",
             "--engine-seconds", "3"),
        ), 100),
        Step("train", (
            ("bench.train_throughput", "--device", "cuda", "--models", "cyclegan", "cut",
             "fastcut", "--variants", "reference,b8-bf16,b16-bf16,b32-compile",
             "--cut-variants", "reference,b16-bf16", "--warmup", "5", "--steps", "20"),
        ), 110),
        Step("students", (
            ("bench.engine_throughput", "--device", "cuda", "--configs", "fp16",
             "--store", "{scratch}", "--sizes", "256", "--batches", "1,64", "--min-seconds", "1",
             "--model", "teacher-resnet9-ngf64", "--model", "mobile-resnet9-ngf32",
             "--model", "narrow-resnet6-ngf16"),
        ), 60, prepare=("bench.export_students", "{scratch}", "--no-int8")),
    ]  # fmt: skip


def dry_plan() -> list[Step]:
    """The same steps on the CPU, tiny: proves the script and its benchmarks still fit."""
    return [
        Step("engine", (
            ("bench.engine_throughput", "--device", "cpu", "--configs", "reference,ort",
             "--ngf", "8", "--sizes", "64", "--batches", "1,2", "--min-seconds", "0.05"),
        ), 120),
        Step("parity", (
            ("bench.gpu.batch_parity", "--device", "cpu", "--size", "64", "--n", "8",
             "--batches", "4", "--ngf", "8"),
        ), 120),
        Step("served", (
            ("bench.http_service", "--device", "cpu", "--modes", "embedded", "--quick",
             "--concurrency", "2", "--seconds", "1", "--warmup", "0.3", "--engine-seconds",
             "0.3"),
        ), 150),
        Step("train", (
            ("bench.train_throughput", "--device", "cpu", "--models", "cyclegan", "cut",
             "--variants", "reference", "--size", "32", "--warmup", "0", "--steps", "1"),
        ), 120),
        Step("students", (  # the smallest student alone: the same code path, a tenth the time
            ("bench.engine_throughput", "--device", "cpu", "--configs", "ort",
             "--store", "{scratch}", "--sizes", "64", "--batches", "1", "--min-seconds", "0.05",
             "--model", "narrow-resnet6-ngf16"),
        ), 150, prepare=("bench.export_students", "{scratch}", "--no-int8", "--only",
                         "narrow-resnet6-ngf16")),
    ]  # fmt: skip


def _python(argv: tuple[str, ...], scratch: Path, log: Path, seconds: float) -> int | None:
    """`python -m ARGV` with its output appended to `log`; the exit code, None on timeout."""
    command = [sys.executable, "-m", *(a.replace("{scratch}", str(scratch)) for a in argv)]
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(command[1:])}\n")
        out.flush()
        try:
            done = subprocess.run(command, cwd=ROOT, stdout=out, stderr=out, timeout=seconds)
        except subprocess.TimeoutExpired:
            out.write(f"\n[timed out after {seconds:.0f} s]\n")
            return None
    return done.returncode


def run_step(step: Step, out: Path, deadline: float) -> dict[str, Any]:
    """The step's benchmarks in turn, each within what is left of the step's and the run's
    time; their JSON results go into NAME.json as `runs`."""
    start = time.monotonic()
    log = out / "log.txt"
    status, results = "ok", []
    step_deadline = min(deadline, start + step.seconds)
    with tempfile.TemporaryDirectory(prefix=f"gpu-{step.name}-") as folder:
        scratch = Path(folder)
        argvs = ([step.prepare] if step.prepare else []) + list(step.runs)
        for index, argv in enumerate(argvs):
            left = step_deadline - time.monotonic()
            if left < 5:
                status = "out of time"
                break
            is_run = not (step.prepare and index == 0)
            target = scratch / f"run{index}.json"
            code = _python(argv + (("--json-out", str(target)) if is_run else ()), scratch, log,
                           left)  # fmt: skip
            if code is None:
                status = "timed out"
            elif code != 0:
                status = f"failed (exit {code})"
            if code == 0 and is_run:
                results.append(json.loads(target.read_text()))
            if status != "ok":
                break
    if results:
        (out / f"{step.name}.json").write_text(json.dumps({"runs": results}, indent=2) + "\n")
    return {"step": step.name, "status": status, "seconds": round(time.monotonic() - start, 1)}


def _device() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"cpu": cpu_name(), "cpus": len(os.sched_getaffinity(0))}
    info |= {"torch": torch.__version__, "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _load(out: Path, name: str) -> list[dict[str, Any]]:
    path = out / f"{name}.json"
    return json.loads(path.read_text())["runs"] if path.exists() else []


def check_targets(out: Path) -> dict[str, Any]:
    """Issue 22's targets against what the steps measured (None: not measured)."""
    engine = [
        r["images_per_s"]
        for run in _load(out, "engine")
        for r in run["rows"]
        if r.get("size") == 256 and "images_per_s" in r
    ]
    train = _load(out, "train")
    served = [
        r["vs_engine"]
        for run in _load(out, "served")
        for r in run["rows"]
        if r["mode"] == "embedded" and r["concurrency"] == 32
    ]
    best_engine = max(engine, default=None)
    speedup = train[0].get("speedup") if train else None
    ratio = served[0] if served else None
    return {
        "engine_256_img_s": {"measured": best_engine, "target": ENGINE_TARGET_IMG_S,
                             "met": None if best_engine is None
                             else best_engine >= ENGINE_TARGET_IMG_S},
        "train_speedup": {"measured": speedup, "target": TRAIN_TARGET_SPEEDUP,
                          "met": None if speedup is None else speedup >= TRAIN_TARGET_SPEEDUP},
        "served_vs_engine_c32": {"measured": ratio, "target": SERVED_TARGET_RATIO,
                                 "met": None if ratio is None else ratio >= SERVED_TARGET_RATIO},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where the JSON files go")
    parser.add_argument("--dry-run", action="store_true", help="tiny steps on the CPU")
    parser.add_argument("--minutes", type=float, default=7.5, help="the whole run's limit")
    parser.add_argument("--steps", default=None, help="only these steps, comma-separated")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    plan = dry_plan() if args.dry_run else gpu_plan()
    if args.steps:
        plan = [s for s in plan if s.name in args.steps.split(",")]
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            err.print("no CUDA device here: use --dry-run on a CPU")
            return 2
    deadline = time.monotonic() + args.minutes * 60
    summary: dict[str, Any] = {"benchmark": "gpu", "dry_run": args.dry_run, **_device()}
    steps = []
    for step in plan:
        err.print(f"[{step.name}] ...", highlight=False)
        steps.append(run_step(step, args.out, deadline))
        err.print(f"[{step.name}] {steps[-1]['status']} in {steps[-1]['seconds']} s")
    summary |= {"steps": steps, "targets": check_targets(args.out)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    err.print(json.dumps(summary["targets"], indent=2), highlight=False)
    return 0 if all(s["status"] == "ok" for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
