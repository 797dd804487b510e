"""Inference throughput of the engine: images/s per backend x batch size x resolution.

Every configuration runs through `service.inference.engine.Engine.run` (the path the CLI, the
API and the workers use, host<->device copies included), next to the reference recipe on the
same device: torch eager fp32 at batch 1. A ResNet-9 (ngf 64) CycleGAN generator is exported
once into a temporary store (speed does not depend on the weights). On a slow CPU, cells whose
predicted run time exceeds --budget seconds are skipped and marked so, never silently dropped.

    python -m bench.engine_throughput              # CPU: onnxruntime (fp32, int8) vs torch
    python -m bench.engine_throughput --device cuda --json-out docs/engine_h100.json
    python -m bench.engine_throughput --sizes 64 --batches 1,8 --min-seconds 0.5  # smoke run

With --model NAME (repeatable), models of the store (--store, default: the service's) are
measured instead, each in its AtoB direction (or the only one it has), next to their MACs per
image; every cell is also given as a ratio to the first model's, so a teacher and its
distilled student compare side by side in one run:

    python -m bench.engine_throughput --model horse2zebra --model horse2zebra-mobile --sizes 256
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

from bench.harness import MODEL, cpu_name, err, export_bench_model, pick, report_json
from service.errors import EngineError
from service.inference.engine import Engine, EngineOptions
from service.store.model_store import ModelStore, StoredModel


@dataclass(frozen=True)
class Config:
    key: str  # what --configs names it by
    label: str
    options: EngineOptions
    warmup: int = 1


def configs(device: Literal["cpu", "cuda"], threads: int | None) -> list[Config]:
    """The reference first, then what this device can run."""
    reference = Config(
        "reference",
        "torch eager fp32 (reference)",
        EngineOptions(
            backend="torch", device=device, precision="fp32", channels_last=False, threads=threads
        ),
    )
    if device == "cpu":
        return [
            reference,
            Config(
                "torch",
                "torch fp32",
                EngineOptions(backend="torch", device="cpu", precision="fp32", threads=threads),
            ),
            Config(
                "ort",
                "onnxruntime fp32",
                EngineOptions(backend="onnx", device="cpu", precision="fp32", threads=threads),
            ),
            Config(
                "ort-int8",
                "onnxruntime int8",
                EngineOptions(backend="onnx", device="cpu", precision="int8", threads=threads),
            ),
        ]
    out = [
        reference,
        Config("fp16", "torch fp16 channels_last", EngineOptions(backend="torch", device="cuda")),
        Config(
            "compile",
            "torch fp16 channels_last compile",
            EngineOptions(backend="torch", device="cuda", compile=True),
            warmup=3,
        ),
        Config(
            "cudagraphs",
            "torch fp16 channels_last compile+cudagraphs",
            EngineOptions(backend="torch", device="cuda", compile=True, cuda_graphs=True),
            warmup=3,
        ),
    ]
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        out.append(
            Config(
                "ort-cuda", "onnxruntime CUDA fp16", EngineOptions(backend="onnx", device="cuda")
            )
        )
    return out


def chosen_configs(device: Literal["cpu", "cuda"], args: argparse.Namespace) -> list[Config]:
    """This device's configurations, only those --configs names (by key) if it names any."""
    return pick(configs(device, args.threads), args.configs, "--configs")


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


def measure_cells(
    model: StoredModel,
    direction: str,
    config: Config,
    sizes: list[int],
    batches: list[int],
    args: argparse.Namespace,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One row per size x batch (the reference: batch 1 only) of `model` under `config`, each
    starting with `extra`; a cell predicted to take longer than --budget, or one the model
    cannot run (no such graph, a side it does not accept), is marked `skipped`."""
    extra = extra or {}
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    try:
        engine = Engine(model, direction, config.options)
    except EngineError as exc:
        return [
            {**extra, "config": config.label, "size": size, "batch": batch, "skipped": str(exc)}
            for size in sizes
            for batch in ([1] if "reference" in config.label else batches)
        ]
    info = engine.describe()
    rules = model.manifest.input
    per_image: dict[int, float] = {}  # size -> seconds per image at batch 1
    for size in sizes:
        for batch_size in [1] if "reference" in config.label else batches:
            row = {
                **extra,
                "config": config.label,
                **{k: info[k] for k in ("backend", "device", "precision")},
                "size": size,
                "batch": batch_size,
            }
            if size % rules.multiple or size < rules.min_side:
                rows.append({**row, "skipped": f"needs a multiple of {rules.multiple}"})
                continue
            predicted = per_image.get(size, 0.0) * batch_size * (1 + config.warmup)
            if predicted > args.budget:
                rows.append({**row, "skipped": f"predicted {predicted:.0f} s > budget"})
                continue
            batch = rng.uniform(-1, 1, (batch_size, 3, size, size)).astype(np.float32)
            rate = measure(engine, batch, config.warmup, args.min_seconds)
            per_image.setdefault(size, 1.0 / rate)
            rows.append({**row, "images_per_s": round(rate, 3)})
            name = f"{extra['model']} " if "model" in extra else ""
            err.print(f"{name + config.label:45s} {size:4d}px batch {batch_size:3d}: {rate:9.2f}")
    del engine
    return rows


def _macs_text(macs: int | None) -> str:
    if macs is None:
        return "n/a"
    return f"{macs / 1e9:.2f} G" if macs >= 1e8 else f"{macs / 1e6:.1f} M"


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{cpu_name()} ({len(os.sched_getaffinity(0))} CPUs)"


def run_models(
    args: argparse.Namespace, device: Literal["cpu", "cuda"], batches: list[int], sizes: list[int]
) -> None:
    """--model: each named store model in its AtoB direction (or its only one), under every
    configuration of this device but the reference, with its MACs per image at each size and
    every cell's ratio to the first model's."""
    from models.complexity import architecture_complexity
    from service.settings import get_settings

    settings = get_settings()
    url = args.store or settings.store
    store = ModelStore(url, cache_dir=settings.cache_dir)
    models: list[dict[str, Any]] = []
    rows: list[tuple[tuple[int, int, int, int], dict[str, Any]]] = []  # (sort key, row)
    for name in args.model:
        model = store.open(name)
        manifest = model.manifest
        direction = "AtoB" if "AtoB" in manifest.directions else next(iter(manifest.directions))
        architecture = manifest.architecture
        macs = {
            size: architecture_complexity(architecture, side=size).macs if architecture else None
            for size in sizes
        }
        models.append(
            {
                "name": name,
                "manifest_name": manifest.name,
                "direction": direction,
                "architecture": architecture.model_dump() if architecture else None,
                "macs": {str(size): m for size, m in macs.items()},
                "distilled_from": manifest.distillation.teacher.get("name")
                if manifest.distillation
                else None,
            }
        )
        for order, config in enumerate(chosen_configs(device, args)):
            if "reference" in config.label:
                continue  # the models are compared with each other
            labels = {"model": name}
            cells = measure_cells(model, direction, config, sizes, batches, args, labels)
            index = len(models) - 1
            rows += [
                ((order, r["size"], r["batch"], index), {**r, "macs": macs[r["size"]]})
                for r in cells
            ]

    ordered = _side_by_side(rows)
    _print_models_table(ordered, args.model[0], device)
    result = {
        "benchmark": "engine_models",
        "device": _device_name(device),
        "cpu": cpu_name(),
        "cpu_threads": args.threads or torch.get_num_threads(),
        "store": str(url),
        "models": models,
        "min_seconds": args.min_seconds,
        "rows": ordered,
    }
    report_json(result, args.json_out)


def _side_by_side(
    rows: list[tuple[tuple[int, int, int, int], dict[str, Any]]],
) -> list[dict[str, Any]]:
    """Each cell of every model next to the first model's, with its ratio to it."""
    rows = sorted(rows, key=lambda item: item[0])
    baseline = {
        key[:3]: r["images_per_s"] for key, r in rows if key[3] == 0 and "images_per_s" in r
    }
    for key, r in rows:
        if "images_per_s" in r and baseline.get(key[:3]):
            r["vs_first"] = round(r["images_per_s"] / baseline[key[:3]], 3)
    return [r for _, r in rows]


def _print_models_table(rows: list[dict[str, Any]], first: str, device: str) -> None:
    table = Table(
        "model",
        "MACs/image",
        "backend / precision",
        "batch",
        "size",
        "img/s",
        f"vs {first}",
        title=f"engine, store models ({device})",
    )
    for r in rows:
        table.add_row(
            r["model"],
            _macs_text(r["macs"]),
            f"{r['backend']} {r['precision']}" if "backend" in r else r["config"],
            str(r["batch"]),
            str(r["size"]),
            f"{r['images_per_s']:.2f}" if "images_per_s" in r else r["skipped"].split(";")[0],
            f"{r['vs_first']:.2f}x" if "vs_first" in r else "",
        )
    err.print(table)


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
    parser.add_argument(
        "--configs",
        default=None,
        help="only these, comma-separated: reference, torch, ort, ort-int8 (CPU); reference, "
        "fp16, compile, cudagraphs, ort-cuda (CUDA); default: all",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME",
        help="measure this store model instead of the exported ResNet-9 (repeatable; ratios "
        "are to the first)",
    )
    parser.add_argument("--store", default=None, help="model store (default: the service's)")
    args = parser.parse_args()
    err.print(f"CPU: {cpu_name()} x {len(os.sched_getaffinity(0))} cores", highlight=False)

    device: Literal["cpu", "cuda"] = args.device
    if args.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    batches = [int(b) for b in args.batches.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]

    if args.model:
        run_models(args, device, batches, sizes)
        return

    rows: list[dict[str, Any]] = []
    configs = chosen_configs(device, args)  # an unknown name stops here, before the export
    with tempfile.TemporaryDirectory() as scratch:
        # speed does not depend on the weights; int8 fidelity does (no floor: random weights)
        folder = Path(scratch) / "store"
        store = ModelStore(
            export_bench_model(folder, "resnet_9blocks", args.ngf, fp16=True, int8=device == "cpu")
        )
        model = store.open(MODEL)
        for config in configs:
            rows += measure_cells(model, "AtoB", config, sizes, batches, args)

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
        "device": _device_name(device),
        "cpu_threads": args.threads or torch.get_num_threads(),
        "model": f"resnet_9blocks ngf {args.ngf}",
        "min_seconds": args.min_seconds,
        "rows": rows,
    }
    report_json(result, args.json_out)


if __name__ == "__main__":
    main()
