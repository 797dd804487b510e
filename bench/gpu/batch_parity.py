"""Does batching change a translation? Each image translated alone vs. in a batch, in bytes.

On the CPU, onnxruntime gives the same bytes whatever the batch (tested). On a GPU, convolution
kernels may be chosen per batch size, so an image's output may differ from the same image
translated alone; the README promises at most one level per channel. This measures it: 64
crops of real photos (scikit-image's, four crops of four photos in four orientations), through
`Engine.translate` one at a time and in batches of `--batches`, compared per channel.

    python -m bench.gpu.batch_parity --device cuda --json-out parity.json
    python -m bench.gpu.batch_parity --device cpu --size 64 --n 8       # smoke run
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from rich.table import Table

from bench.harness import MODEL, cpu_name, err, export_bench_model, photo_crops, report_json
from service.inference.engine import Engine, EngineOptions
from service.inference.image_io import DecodedImage, decode_image
from service.store.model_store import ModelStore

#: the photo crops again, mirrored and turned: 4 x the 16 crops of bench.harness.photo_crops
ORIENTATIONS = (
    lambda a: a,
    lambda a: a[:, ::-1],
    lambda a: a[::-1, :],
    lambda a: np.rot90(a),
)


def photos(size: int, count: int) -> list[DecodedImage]:
    crops = [decode_image(data).rgb for data in photo_crops(size)]
    images = [np.ascontiguousarray(turn(c)) for turn in ORIENTATIONS for c in crops]
    return [DecodedImage(rgb=rgb, alpha=None) for rgb in images[:count]]


def compare(alone: list[np.ndarray], batched: list[np.ndarray]) -> dict[str, Any]:
    """Largest level difference per channel, and the share of values that differ at all."""
    a = np.stack(alone).astype(np.int16)
    b = np.stack(batched).astype(np.int16)
    diff = np.abs(a - b)
    return {
        "max_level_diff_per_channel": [int(diff[..., c].max()) for c in range(3)],
        "values_differing": float((diff > 0).mean()),
        "images_differing": int((diff.reshape(len(diff), -1).max(axis=1) > 0).sum()),
    }


def measure(
    store: ModelStore, options: EngineOptions, images: list[DecodedImage], batches: list[int]
) -> dict[str, Any]:
    engine = Engine(store.open(MODEL), "AtoB", options)
    alone = [engine.translate([image])[0].rgb for image in images]
    result: dict[str, Any] = {**engine.describe(), "n": len(images), "batches": {}}
    for batch in batches:
        batched_engine = Engine(store.open(MODEL), "AtoB", replace(options, max_batch=batch))
        outputs = [out.rgb for out in batched_engine.translate(images)]
        result["batches"][str(batch)] = compare(alone, outputs)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--n", type=int, default=64, help="images (at most 64)")
    parser.add_argument("--batches", default="8,64")
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    device: Literal["cpu", "cuda"] = args.device
    batches = [int(b) for b in args.batches.split(",")]
    backends: list[tuple[str, EngineOptions]] = (
        [("torch fp16 channels_last", EngineOptions(backend="torch", device="cuda"))]
        if device == "cuda"
        else [("onnxruntime fp32", EngineOptions(backend="onnx", device="cpu"))]
    )
    images = photos(args.size, args.n)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        store = ModelStore(
            export_bench_model(Path(scratch), "resnet_9blocks", args.ngf, fp16=device == "cuda")
        )
        for label, options in backends:
            rows.append({"config": label, **measure(store, options, images, batches)})
    table = Table("config", "batch", "max level diff (R, G, B)", "values differing", "images",
                  title=f"batch vs alone, {args.n} photos at {args.size}px")  # fmt: skip
    for row in rows:
        for batch, found in row["batches"].items():
            differing = f"{found['values_differing']:.4%}"
            table.add_row(row["config"], batch, str(found["max_level_diff_per_channel"]),
                          differing, str(found["images_differing"]))  # fmt: skip
    err.print(table)
    result = {"benchmark": "batch_parity", "device": _device(device), "size": args.size,
              "model": f"resnet_9blocks ngf {args.ngf} (random weights)", "rows": rows}  # fmt: skip
    report_json(result, args.json_out)
    return result


def _device(device: str) -> str:
    if device == "cuda":
        import torch

        return str(torch.cuda.get_device_name())
    return cpu_name()


if __name__ == "__main__":
    main()
