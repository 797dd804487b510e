"""Inference throughput of the engine: images/s per backend x batch size x resolution.

Every configuration runs through `service.inference.engine.Engine.run` (the path the CLI, the
API and the workers use, host<->device copies included), next to the reference recipe on the
same device: torch eager fp32 at batch 1. A ResNet-9 (ngf 64) CycleGAN generator is exported
once into a temporary store (speed does not depend on the weights). On a slow CPU, cells whose
predicted run time exceeds --budget seconds are skipped and marked so, never silently dropped.

    python -m bench.engine_throughput              # CPU: onnxruntime (fp32, int8) vs torch
    python -m bench.engine_throughput --device cuda --json-out docs/engine_h100.json
    python -m bench.engine_throughput --sizes 64 --batches 1,8 --min-seconds 0.5  # smoke run
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from rich.table import Table

from bench.harness import MODEL, cpu_name, err, export_bench_model, report_json
from service.inference.engine import Engine, EngineOptions
from service.store.model_store import ModelStore


@dataclass(frozen=True)
class Config:
    label: str
    options: EngineOptions
    warmup: int = 1


def configs(device: Literal["cpu", "cuda"], threads: int | None) -> list[Config]:
    """The reference first, then what this device can run."""
    reference = Config(
        "torch eager fp32 (reference)",
        EngineOptions(
            backend="torch", device=device, precision="fp32", channels_last=False, threads=threads
        ),
    )
    if device == "cpu":
        return [
            reference,
            Config(
                "torch fp32",
                EngineOptions(backend="torch", device="cpu", precision="fp32", threads=threads),
            ),
            Config(
                "onnxruntime fp32",
                EngineOptions(backend="onnx", device="cpu", precision="fp32", threads=threads),
            ),
            Config(
                "onnxruntime int8",
                EngineOptions(backend="onnx", device="cpu", precision="int8", threads=threads),
            ),
        ]
    out = [
        reference,
        Config("torch fp16 channels_last", EngineOptions(backend="torch", device="cuda")),
        Config(
            "torch fp16 channels_last compile",
            EngineOptions(backend="torch", device="cuda", compile=True),
            warmup=3,
        ),
        Config(
            "torch fp16 channels_last compile+cudagraphs",
            EngineOptions(backend="torch", device="cuda", compile=True, cuda_graphs=True),
            warmup=3,
        ),
    ]
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        out.append(Config("onnxruntime CUDA fp16", EngineOptions(backend="onnx", device="cuda")))
    return out


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(engine: Engine, batch: np.ndarray, warmup: int, min_seconds: float) -> float:
    """Images per second over at least `min_seconds` (and at least one timed call)."""
    device = engine.runner.device
    for _ in range(warmup):
        engine.run(batch)
    _sync(device)
    calls, start = 0, time.perf_counter()
    while True:
        engine.run(batch)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            break
    _sync(device)
    return calls * len(batch) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--sizes", default="64,256,512")
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="timed per cell")
    parser.add_argument("--budget", type=float, default=60.0, help="skip longer cells (s)")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()

    device: Literal["cpu", "cuda"] = args.device
    if args.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    batches = [int(b) for b in args.batches.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(0)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        # speed does not depend on the weights; int8 fidelity does (no floor: random weights)
        folder = Path(scratch) / "store"
        store = ModelStore(
            export_bench_model(folder, "resnet_9blocks", args.ngf, fp16=True, int8=device == "cpu")
        )
        model = store.open(MODEL)
        for config in configs(device, args.threads):
            engine = Engine(model, "AtoB", config.options)
            info = engine.describe()
            per_image: dict[int, float] = {}  # size -> seconds per image at batch 1
            for size in sizes:
                for batch_size in [1] if "reference" in config.label else batches:
                    row = {
                        "config": config.label,
                        **{k: info[k] for k in ("backend", "device", "precision")},
                        "size": size,
                        "batch": batch_size,
                    }
                    predicted = per_image.get(size, 0.0) * batch_size * (1 + config.warmup)
                    if predicted > args.budget:
                        rows.append({**row, "skipped": f"predicted {predicted:.0f} s > budget"})
                        continue
                    batch = rng.uniform(-1, 1, (batch_size, 3, size, size)).astype(np.float32)
                    rate = measure(engine, batch, config.warmup, args.min_seconds)
                    per_image.setdefault(size, 1.0 / rate)
                    rows.append({**row, "images_per_s": round(rate, 3)})
                    err.print(f"{config.label:45s} {size:4d}px batch {batch_size:3d}: {rate:9.2f}")
            del engine

    measured = [r for r in rows if "images_per_s" in r]
    reference = {r["size"]: r["images_per_s"] for r in measured if "reference" in r["config"]}
    for r in rows:
        if "images_per_s" in r and r["size"] in reference:
            r["vs_reference"] = round(r["images_per_s"] / reference[r["size"]], 3)

    table = Table("config", "size", "batch", "img/s", "vs reference", title=f"engine ({device})")
    for r in rows:
        table.add_row(
            r["config"],
            str(r["size"]),
            str(r["batch"]),
            f"{r['images_per_s']:.2f}" if "images_per_s" in r else r["skipped"],
            f"{r['vs_reference']:.2f}x" if "vs_reference" in r else "",
        )
    err.print(table)
    result = {
        "benchmark": "engine",
        "device": torch.cuda.get_device_name()
        if device == "cuda"
        else f"{cpu_name()} ({len(os.sched_getaffinity(0))} CPUs)",
        "cpu_threads": args.threads or torch.get_num_threads(),
        "model": f"resnet_9blocks ngf {args.ngf}",
        "min_seconds": args.min_seconds,
        "rows": rows,
    }
    report_json(result, args.json_out)


if __name__ == "__main__":
    main()
