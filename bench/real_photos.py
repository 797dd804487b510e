"""Real photos through a real model and its CPU student: speed, fidelity, seams (issue 31).

Three tables, measured through the serving engine (the one the API, the workers and the CLI
run), on real photos that ship with scikit-image (models.sample_photos):

* **speed**: engine seconds for one photo at 256x256, 1024x1024 and 12 megapixels, per model
  and precision (fp32, int8 where exported). 12 Mpx is tiled as the service tiles it.
* **fidelity**: the student against its teacher on the held-out photos at their full size
  (never trained on): PSNR and SSIM per photo.
* **seams**: a 2048x2048 photo through each model tiled (the service's default: 512 tiles,
  statistics shared from a thumbnail; ``--seam-thumbnails`` tries other thumbnail budgets)
  against the same model untiled: PSNR, and what the tiled photo cost (time, memory reserved).

    python -m bench.real_photos --store model-store --teacher vintage --student vintage-cpu
    python -m bench.real_photos --store model-store --teacher vintage --quick   # no 12 Mpx
    python -m bench.real_photos --teacher vintage --sizes 256 --seam-thumbnails default,4194304
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.table import Table

from bench.harness import cpu_name, err, report_json
from models.sample_photos import HELD_OUT, load_photo
from service.inference.engine import Engine, EngineOptions
from service.inference.image_io import DecodedImage
from service.settings import PrecisionName
from service.store.model_store import ModelStore, StoredModel

SIZES = {"256": (256, 256), "1024": (1024, 1024), "12mp": (4240, 2830)}  # 12.0 Mpx, 3:2
SPEED_PHOTO = "motorcycle"  # 741x500, 3:2: resized to each size
SEAM_PHOTO = "astronaut"  # 512x512: resized to 2048x2048
SEAM_SIDE = 2048


@dataclass(frozen=True)
class Subject:
    role: str  # teacher | student
    name: str
    precision: PrecisionName


def _photo(name: str, size: tuple[int, int]) -> DecodedImage:
    photo = Image.fromarray(load_photo(name)).resize(size, Image.Resampling.BICUBIC)
    return DecodedImage(rgb=np.asarray(photo), alpha=None)


Models = dict[str, StoredModel]  # opened (every checksum verified) once, by name


def _engine(models: Models, subject: Subject, threads: int | None, **options: Any) -> Engine:
    model = models[subject.name]
    engine_options = EngineOptions(
        backend="onnx", device="cpu", precision=subject.precision, threads=threads, **options
    )
    return Engine(model, "AtoB", engine_options)


def _seconds(engine: Engine, image: DecodedImage, repeats: int) -> list[float]:
    engine.translate([image])  # warm: sessions, arenas
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        engine.translate([image])
        times.append(time.perf_counter() - start)
    return times


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


def measure_speed(
    models: Models, subjects: list[Subject], sizes: list[str], threads: int | None
) -> list[dict[str, Any]]:
    rows = []
    for key in sizes:
        image = _photo(SPEED_PHOTO, SIZES[key])
        repeats = 1 if key == "12mp" else 5
        for subject in subjects:
            times = _seconds(_engine(models, subject, threads), image, repeats)
            rows.append({"size": key, "pixels": SIZES[key][0] * SIZES[key][1],
                         "role": subject.role, "model": subject.name,
                         "precision": subject.precision, "seconds": times,
                         "median_s": statistics.median(times)})  # fmt: skip
            err.print(
                f"  {key} {subject.name} {subject.precision}: {statistics.median(times):.3f} s"
            )
    return rows


def measure_fidelity(models: Models, teacher: str, student: Subject) -> list[dict[str, Any]]:
    engines = {
        "teacher": _engine(models, Subject("teacher", teacher, "fp32"), None),
        "student": _engine(models, student, None),
    }
    rows = []
    for name in HELD_OUT:
        photo = DecodedImage(rgb=np.array(load_photo(name)), alpha=None)
        (want,) = engines["teacher"].translate([photo])
        (got,) = engines["student"].translate([photo])
        h, w = photo.rgb.shape[:2]
        rows.append({"photo": name, "size": f"{w}x{h}", "precision": student.precision,
                     "psnr_db": psnr(got.rgb, want.rgb), "ssim": ssim(got.rgb, want.rgb),
                     "identity_psnr_db": psnr(photo.rgb, want.rgb)})  # fmt: skip
    return rows


def measure_seams(
    models: Models, subjects: list[Subject], thumbnails: list[int | None]
) -> list[dict[str, Any]]:
    """Tiled against untiled, once per thumbnail budget (None: the service's default, 1 Mpx),
    with the engine's time for the tiled photo and the memory it reserves for it."""
    image = _photo(SEAM_PHOTO, (SEAM_SIDE, SEAM_SIDE))
    rows = []
    for subject in subjects:
        if subject.precision != "fp32":
            continue
        whole = _engine(models, subject, None, max_untiled_pixels=SEAM_SIDE**2)
        untiled = whole.translate([image])[0].rgb
        for budget in thumbnails:
            engine = _engine(models, subject, None, thumbnail_pixels=budget)
            start = time.perf_counter()
            tiled = engine.translate([image])[0].rgb
            seconds = time.perf_counter() - start
            reserved = engine.working_bytes(SEAM_SIDE, SEAM_SIDE)
            rows.append({"model": subject.name, "side": SEAM_SIDE,
                         "thumbnail_pixels": engine.options.thumbnail_budget,
                         "psnr_db": psnr(tiled, untiled),
                         "max_abs": int(np.abs(tiled.astype(int) - untiled).max()),
                         "tiled_s": seconds,
                         "reserved_mb": reserved / 2**20})  # fmt: skip
    return rows


def _subjects(models: Models, teacher: str, student: str | None) -> list[Subject]:
    subjects = []
    for role, name in (("teacher", teacher), ("student", student)):
        if name is None:
            continue
        files = models[name].manifest.directions["AtoB"]
        subjects.append(Subject(role, name, "fp32"))
        if files.onnx_int8:
            subjects.append(Subject(role, name, "int8"))
    return subjects


def print_report(result: dict[str, Any]) -> None:
    table = Table("size", "model", "precision", "engine s (median)", "runs", "vs teacher fp32")
    base = {r["size"]: r["median_s"] for r in result["speed"]
            if r["role"] == "teacher" and r["precision"] == "fp32"}  # fmt: skip
    for r in result["speed"]:
        ratio = base[r["size"]] / r["median_s"] if r["size"] in base else float("nan")
        table.add_row(r["size"], r["model"], r["precision"], f"{r['median_s']:.3f}",
                      ", ".join(f"{t:.3f}" for t in r["seconds"]), f"{ratio:.1f}x")  # fmt: skip
    err.print(f"speed, one photo through the engine ({result['cpu']}, {result['threads']})")
    err.print(table)
    if result["fidelity"]:
        table = Table("held-out photo", "size", "student", "PSNR dB", "SSIM", "identity PSNR dB")
        for r in result["fidelity"]:
            table.add_row(r["photo"], r["size"], r["precision"], f"{r['psnr_db']:.2f}",
                          f"{r['ssim']:.4f}", f"{r['identity_psnr_db']:.2f}")  # fmt: skip
        err.print("fidelity to the teacher at full size")
        err.print(table)
    table = Table("model", "photo", "thumbnail px", "tiled vs untiled PSNR dB",
                  "max |diff| (levels)", "tiled s", "reserved MB")  # fmt: skip
    for r in result["seams"]:
        table.add_row(r["model"], f"{r['side']}x{r['side']}", str(r["thumbnail_pixels"]),
                      f"{r['psnr_db']:.2f}", str(r["max_abs"]), f"{r['tiled_s']:.1f}",
                      f"{r['reserved_mb']:.0f}")  # fmt: skip
    err.print("seams")
    err.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="model-store")
    parser.add_argument("--teacher", default="vintage")
    parser.add_argument("--student", help="a student of the teacher (distilled), if any")
    parser.add_argument("--sizes", default="256,1024,12mp", help=f"of {', '.join(SIZES)}")
    parser.add_argument("--quick", action="store_true", help="no 12 Mpx")
    parser.add_argument("--threads", type=int, help="engine threads (default: every CPU)")
    parser.add_argument(
        "--seam-thumbnails",
        default="default",
        help="thumbnail budgets (pixels, comma-separated; 'default': the service's) to tile "
        "the 2048x2048 photo with",
    )
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    sizes = [s for s in args.sizes.split(",") if not (args.quick and s == "12mp")]
    thumbnails = [None if b == "default" else int(b) for b in args.seam_thumbnails.split(",")]
    store = ModelStore(args.store)
    models = {name: store.open(name) for name in (args.teacher, args.student) if name}
    subjects = _subjects(models, args.teacher, args.student)
    err.print(f"measuring {', '.join(f'{s.name} {s.precision}' for s in subjects)} ...")
    students = [s for s in subjects if s.role == "student"]
    result = {
        "cpu": cpu_name(),
        "threads": args.threads or "every CPU",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "speed": measure_speed(models, subjects, sizes, args.threads),
        "fidelity": [r for s in students for r in measure_fidelity(models, args.teacher, s)],
        "seams": measure_seams(models, subjects, thumbnails),
    }
    print_report(result)
    report_json(result, args.json_out)


if __name__ == "__main__":
    main()
