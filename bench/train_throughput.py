"""Training throughput: the reference CycleGAN recipe vs. our fastest configuration of the same
model, in one process on one device, through the trainer's own `Trainer.step`.

Reference recipe (junyanz defaults): ResNet-9 generators + 70x70 PatchGAN discriminators,
256x256, batch 1, fp32, eager, LSGAN + cycle + identity, image pool 50.
Candidates change only execution: batch size, mixed precision, channels_last, torch.compile.

    python -m bench.train_throughput                     # on CUDA if present, else CPU
    python -m bench.train_throughput --size 128 --steps 3 --json-out bench.json
    python -m bench.train_throughput --size 32 --steps 1 --warmup 0   # smoke run

Prints a table on stderr and the result as one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from bench.harness import cpu_name, err, report_json
from training.config import TrainConfig
from training.trainer import Trainer


@dataclass(frozen=True)
class Variant:
    name: str
    batch_size: int
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"


REFERENCE = Variant("reference (b1 fp32 eager)", 1)
GPU_CANDIDATES = [
    Variant("b8 bf16 channels_last", 8, "bf16", True),
    Variant("b16 bf16 channels_last", 16, "bf16", True),
    Variant("b16 bf16 channels_last compile", 16, "bf16", True, True),
    Variant("b32 bf16 channels_last compile", 32, "bf16", True, True),
    Variant("b16 bf16 cl compile max-autotune", 16, "bf16", True, True, "max-autotune"),
]
CPU_CANDIDATES = [
    Variant("b1 channels_last", 1, channels_last=True),
    Variant("b4 fp32", 4),
    Variant("b4 channels_last", 4, channels_last=True),
]


def measure(variant: Variant, *, size: int, device: torch.device, warmup: int, steps: int) -> float:
    """Images per second over `steps` timed steps after `warmup` untimed ones."""
    cfg = TrainConfig(
        dataset="day2night",  # not read: the benchmark feeds tensors directly
        size=size,
        batch_size=variant.batch_size,
        amp=variant.amp,
        channels_last=variant.channels_last,
        compile=variant.compile,
        compile_mode=variant.compile_mode,
        device=str(device),
    )
    trainer = Trainer(cfg, device)
    gen = torch.Generator().manual_seed(0)
    # rotate among a few real-valued batches (never zeros: they can run faster than data)
    batches = [
        (torch.rand(variant.batch_size, 3, size, size, generator=gen) * 2 - 1).to(device)
        for _ in range(4)
    ]
    for i in range(warmup):
        trainer.step(batches[i % 4], batches[(i + 1) % 4])
    sync(device)
    start = time.perf_counter()
    for i in range(steps):
        trainer.step(batches[i % 4], batches[(i + 1) % 4])
    sync(device)  # note: device work is asynchronous; stop the clock only when it is done
    return steps * variant.batch_size / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=None, help="default: 10 GPU, 1 CPU")
    parser.add_argument("--steps", type=int, default=None, help="default: 30 GPU, 3 CPU")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    warmup = args.warmup if args.warmup is not None else (10 if on_gpu else 1)
    steps = args.steps if args.steps is not None else (30 if on_gpu else 3)
    if on_gpu:
        torch.backends.cudnn.benchmark = True

    rows = []
    for variant in [REFERENCE, *(GPU_CANDIDATES if on_gpu else CPU_CANDIDATES)]:
        try:
            rate = measure(variant, size=args.size, device=device, warmup=warmup, steps=steps)
            rows.append({**variant.__dict__, "images_per_second": rate})
        except Exception as exc:  # a variant the device cannot run is reported, not fatal
            rows.append({**variant.__dict__, "images_per_second": None, "error": str(exc)[:200]})
        err.print(f"  measured {variant.name}: {rows[-1]['images_per_second']}", highlight=False)
        if on_gpu:
            torch.cuda.empty_cache()

    reference = rows[0]["images_per_second"]
    best = max(
        (r for r in rows[1:] if r["images_per_second"]), key=lambda r: r["images_per_second"]
    )
    result = {
        "benchmark": "train_throughput",
        "device": torch.cuda.get_device_name(device) if on_gpu else cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "size": args.size,
        "steps": steps,
        "reference_images_per_second": reference,
        "fastest": best["name"],
        "fastest_images_per_second": best["images_per_second"],
        "speedup": best["images_per_second"] / reference,
        "variants": rows,
    }
    table = Table(
        "variant",
        "img/s",
        "x ref",
        title=f"training throughput, ResNet-9 + 70x70 PatchGAN, {args.size}x{args.size}, "
        f"{result['device']}",
    )
    for r in rows:
        rate = r["images_per_second"]
        table.add_row(
            r["name"],
            f"{rate:.2f}" if rate else "failed",
            f"{rate / reference:.2f}" if rate else "",
        )
    err.print(table)
    err.print(f"fastest: {best['name']}, {result['speedup']:.2f}x the reference recipe")
    report_json(result, args.json_out)
    return result


if __name__ == "__main__":
    main()
