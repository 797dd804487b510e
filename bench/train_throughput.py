"""Training throughput: the reference CycleGAN recipe vs. our fastest configuration of the same
model, in one process on one device, through the trainer's own `Trainer.step`.

Reference recipe (junyanz defaults): ResNet-9 generators + 70x70 PatchGAN discriminators,
256x256, batch 1, fp32, eager, LSGAN + cycle + identity, image pool 50.
Candidates change only execution: batch size, mixed precision, channels_last, torch.compile.
With --models, CUT and FastCUT (the same networks, PatchNCE instead of the cycle, both
directions) are measured the same way, next to CycleGAN, with peak device memory on a GPU.

    python -m bench.train_throughput                     # on CUDA if present, else CPU
    python -m bench.train_throughput --models cyclegan cut fastcut --json-out bench.json
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

from bench.harness import cpu_name, err, pick, report_json
from training.config import TrainConfig
from training.cut import CutTrainer
from training.ddp import DistInfo
from training.trainer import Trainer


@dataclass(frozen=True)
class Variant:
    key: str  # what --variants names it by
    name: str
    batch_size: int
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"


REFERENCE = Variant("reference", "reference (b1 fp32 eager)", 1)
GPU_CANDIDATES = [
    Variant("b8-bf16", "b8 bf16 channels_last", 8, "bf16", True),
    Variant("b16-bf16", "b16 bf16 channels_last", 16, "bf16", True),
    Variant("b16-compile", "b16 bf16 channels_last compile", 16, "bf16", True, True),
    Variant("b32-compile", "b32 bf16 channels_last compile", 32, "bf16", True, True),
    Variant(
        "b16-autotune", "b16 bf16 cl compile max-autotune", 16, "bf16", True, True, "max-autotune"
    ),
]
CPU_CANDIDATES = [
    Variant("b1-cl", "b1 channels_last", 1, channels_last=True),
    Variant("b4", "b4 fp32", 4),
    Variant("b4-cl", "b4 channels_last", 4, channels_last=True),
]


def chosen_variants(on_gpu: bool, keys: str | None) -> list[Variant]:
    """The reference and this device's candidates, only those --variants names if any."""
    return pick([REFERENCE, *(GPU_CANDIDATES if on_gpu else CPU_CANDIDATES)], keys, "--variants")


def measure(
    variant: Variant,
    *,
    size: int,
    device: torch.device,
    warmup: int,
    steps: int,
    model: str = "cyclegan",
) -> float:
    """Images per second over `steps` timed steps after `warmup` untimed ones."""
    cfg = TrainConfig(
        model=model,
        dataset="day2night",  # not read: the benchmark feeds tensors directly
        size=size,
        batch_size=variant.batch_size,
        amp=variant.amp,
        channels_last=variant.channels_last,
        compile=variant.compile,
        compile_mode=variant.compile_mode,
        device=str(device),
    )
    trainer: Trainer | CutTrainer = (
        Trainer(cfg, device) if model == "cyclegan" else CutTrainer(cfg, device, DistInfo())
    )
    gen = torch.Generator().manual_seed(0)
    # rotate among a few real-valued batches (never zeros: they can run faster than data)
    batches = [
        (torch.rand(variant.batch_size, 3, size, size, generator=gen) * 2 - 1).to(device)
        for _ in range(4)
    ]
    for i in range(warmup):
        trainer.train_step({"A": batches[i % 4], "B": batches[(i + 1) % 4]})
    sync(device)
    start = time.perf_counter()
    for i in range(steps):
        trainer.train_step({"A": batches[i % 4], "B": batches[(i + 1) % 4]})
    sync(device)  # note: device work is asynchronous; stop the clock only when it is done
    return steps * variant.batch_size / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fastest(rows: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, float | None]:
    """The first model's fastest measured candidate (not the reference), and the reference's
    img/s (None where not measured)."""
    first = rows[0]["model"]
    of_first = [r for r in rows if r["model"] == first and r["images_per_second"]]
    reference = next((r["images_per_second"] for r in of_first if r["key"] == "reference"), None)
    candidates = [r for r in of_first if r["key"] != "reference"]
    return max(candidates, key=lambda r: r["images_per_second"], default=None), reference


def _print_table(rows: list[dict[str, Any]], reference: float | None, where: str) -> None:
    table = Table(
        "model",
        "variant",
        "img/s",
        "x ref",
        "peak MiB",
        title=f"training throughput, ResNet-9 + 70x70 PatchGAN, {where}",
    )
    for r in rows:
        rate = r["images_per_second"]
        table.add_row(
            r["model"],
            r["name"],
            f"{rate:.2f}" if rate else "failed",
            f"{rate / reference:.2f}" if rate and reference else "",
            str(r.get("peak_memory_mib", "")),
        )
    err.print(table)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=None, help="default: 10 GPU, 1 CPU")
    parser.add_argument("--steps", type=int, default=None, help="default: 30 GPU, 3 CPU")
    parser.add_argument(
        "--models", nargs="*", default=["cyclegan"], choices=["cyclegan", "cut", "fastcut"]
    )
    parser.add_argument(
        "--variants", default=None, help="only these keys, comma-separated (default: all)"
    )
    parser.add_argument(
        "--cut-variants",
        default=None,
        help="for CUT and FastCUT only these (default: --variants)",
    )
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    warmup = args.warmup if args.warmup is not None else (10 if on_gpu else 1)
    steps = args.steps if args.steps is not None else (30 if on_gpu else 3)
    if on_gpu:
        torch.backends.cudnn.benchmark = True

    rows = []
    for model in args.models:
        keys = args.variants if model == "cyclegan" else args.cut_variants or args.variants
        for variant in chosen_variants(on_gpu, keys):
            row: dict[str, Any] = {"model": model, **variant.__dict__}
            if on_gpu:
                torch.cuda.reset_peak_memory_stats(device)
            try:
                rate = measure(
                    variant, size=args.size, device=device, warmup=warmup, steps=steps, model=model
                )
                row["images_per_second"] = rate
            except Exception as exc:  # a variant the device cannot run is reported, not fatal
                row |= {"images_per_second": None, "error": str(exc)[:200]}
            if on_gpu:
                row["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
                torch.cuda.empty_cache()
            rows.append(row)
            err.print(f"  measured {model} {variant.name}: {row['images_per_second']}")

    best, reference = _fastest(rows)
    speedup = best["images_per_second"] / reference if best and reference else None
    shown = best or rows[0]  # no candidate measured: the first row stands in, as before
    result = {
        "benchmark": "train_throughput",
        "device": torch.cuda.get_device_name(device) if on_gpu else cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "size": args.size,
        "steps": steps,
        "reference_images_per_second": reference,
        "fastest": shown["name"],
        "fastest_images_per_second": shown["images_per_second"],
        "speedup": speedup,
        "variants": rows,
    }
    _print_table(rows, reference, f"{args.size}x{args.size}, {result['device']}")
    if speedup:
        err.print(f"fastest: {shown['name']}, {speedup:.2f}x the reference recipe")
    report_json(result, args.json_out)
    return result


if __name__ == "__main__":
    main()
