"""Large photos against the running service: time, memory, work after a deadline, fairness.

A demo-size model (ResNet-6, ngf 16, seeded random weights: speed and memory do not depend on
them) is exported with its tiled graph into a temporary store as model `bench`. For each mode
(`embedded`: `unpaired serve` alone; `distributed`: `unpaired serve` + one `unpaired worker`
on a private redis-server), with `UNPAIRED_THREADS` = `--cores`, measured in one run:

1. Per image size (1, 12 and 64 Mpx JPEGs, smooth gradients with grain, as photos compress):
   `POST /v1/models/bench/translate?format=jpeg` alone, its wall time, the peak resident memory
   of the process that holds the image (the server embedded, the worker distributed) above its
   idle size (VmHWM after resetting it through /proc/PID/clear_refs), and the resident size 2 s
   after the answer, above idle.
2. A forced deadline: a second service with `UNPAIRED_REQUEST_TIMEOUT_S` = `--deadline`; the
   64 Mpx image gets its 504, then the CPU seconds that process spends in the 2 s after it
   (idle: ~0), and in the 2 s after that.
3. Fairness: small requests (256x256 PNG, one at a time) while the 64 Mpx image runs, p50 and
   p95, next to the same requests on the idle service; and one tile step's engine time (the
   bound a small request should wait) from the model in this process.

    python -m bench.heavy                        # both modes, ~15 minutes on 2 cores
    python -m bench.heavy --modes embedded --sizes 1,12
    python -m bench.heavy --json-out docs/heavy_cpu.json

Targets (issue 23): peak growth <= 1.5 GB for 64 Mpx; resident within 200 MB of idle after a
12 Mpx image; CPU idle within 2 s of a 504; small requests wait at most about one tile step.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import httpx
import numpy as np
from PIL import Image
from rich.table import Table

from bench.harness import (
    MODEL,
    Service,
    cpu_name,
    err,
    export_bench_model,
    process_cpu_seconds,
    report_json,
    running_service,
    terminate_on_sigterm,
)

__all__ = ["ProcessMemory", "photo_jpeg", "small_png", "tile_step_seconds"]

MEGAPIXEL_SIDES: Final = {1: (1000, 1000), 12: (4000, 3000), 64: (8000, 8000)}
_GRAIN: Final = 24


def photo_jpeg(width: int, height: int, *, seed: int = 0, quality: int = 90) -> bytes:
    """A JPEG of smooth gradients with grain: sizes like a photo's (17 MB at 64 Mpx)."""
    rng = np.random.default_rng(seed)
    columns = np.linspace(0, 255, width, dtype=np.float32)
    image = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, 512):  # in bands: no full-size float copy
        rows = np.linspace(0, 255, height, dtype=np.float32)[top : top + 512, None]
        band = np.stack(
            [columns[None, :] + 0 * rows, rows + 0 * columns[None, :], (rows + columns) / 2], -1
        )
        grain = rng.integers(0, _GRAIN, band.shape, dtype=np.uint8)
        image[top : top + 512] = np.clip(band, 0, 255 - _GRAIN).astype(np.uint8) + grain
    out = io.BytesIO()
    Image.fromarray(image).save(out, "JPEG", quality=quality)
    return out.getvalue()


def small_png(side: int = 256, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


class ProcessMemory:
    """Resident memory and CPU time of one process, read from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def _status(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no {key} for process {self.pid}")

    def rss(self) -> int:
        return self._status("VmRSS")

    def reset_peak(self) -> None:
        """VmHWM starts again from the resident size now (Linux >= 4.0)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def peak(self) -> int:
        return self._status("VmHWM")

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)


def tile_step_seconds(store: Path, *, threads: int) -> float:
    """Engine seconds of one tile step (tile_batch tiles of 512x512) of the bench model."""
    from service.inference.engine import Engine, EngineOptions
    from service.store.model_store import ModelStore

    engine = Engine(
        ModelStore(store).open(MODEL), "AtoB", EngineOptions(device="cpu", threads=threads)
    )
    # before UNPAIRED_TILE_BATCH existed, tiles ran max_batch at a time (a before/after run)
    batch = getattr(engine, "tile_batch", engine.options.max_batch)
    tiles = np.zeros((batch, 3, 512, 512), np.float32)
    engine.runner.run_shared(tiles, None)
    started = time.perf_counter()
    for _ in range(3):
        engine.runner.run_shared(tiles, None)
    return (time.perf_counter() - started) / 3


def _translate(client: httpx.Client, url: str, data: bytes, fmt: str) -> httpx.Response:
    return client.post(
        f"{url}/v1/models/{MODEL}/translate",
        params={"direction": "AtoB", "format": fmt},
        content=data,
        headers={"Content-Type": "image/jpeg" if data[:2] == b"\xff\xd8" else "image/png"},
    )


def _holder(service: Service) -> ProcessMemory:
    """The process that decodes and translates: the worker when there is one."""
    return ProcessMemory(service.processes[-1].popen.pid)


def _settle(memory: ProcessMemory, seconds: float = 2.0) -> int:
    time.sleep(seconds)
    return memory.rss()


def measure_sizes(
    service: Service, images: dict[int, bytes], client: httpx.Client
) -> list[dict[str, Any]]:
    memory = _holder(service)
    rows = []
    for megapixels, data in images.items():
        idle = _settle(memory)
        memory.reset_peak()
        started = time.perf_counter()
        response = _translate(client, service.url, data, "jpeg")
        seconds = time.perf_counter() - started
        peak = memory.peak()
        after = _settle(memory)
        rows.append(
            {
                "megapixels": megapixels,
                "status": response.status_code,
                "seconds": round(seconds, 2),
                "idle_mb": round(idle / 2**20),
                "peak_growth_mb": round((peak - idle) / 2**20),
                "after_growth_mb": round((after - idle) / 2**20),
            }
        )
        err.print(f"  {megapixels} Mpx: {rows[-1]}")
    return rows


def measure_fairness(
    service: Service, huge: bytes, client: httpx.Client, *, seconds: float
) -> dict[str, Any]:
    small = small_png()

    def latencies(window_s: float, until: threading.Event | None = None) -> list[float]:
        found: list[float] = []
        end = time.monotonic() + window_s
        while time.monotonic() < end and not (until is not None and until.is_set()):
            started = time.perf_counter()
            response = _translate(client, service.url, small, "png")
            if response.status_code == 200:
                found.append(time.perf_counter() - started)
        return found

    idle = latencies(min(seconds, 10.0))
    finished = threading.Event()
    outcome: dict[str, Any] = {}

    def run_huge() -> None:
        with httpx.Client(timeout=600) as own:
            outcome["status"] = _translate(own, service.url, huge, "jpeg").status_code
        finished.set()

    thread = threading.Thread(target=run_huge)
    thread.start()
    time.sleep(3.0)  # past the upload, the decode and the thumbnail: tiles are running
    during = latencies(seconds, finished)
    running = not finished.is_set()
    thread.join()

    def summary(values: list[float]) -> dict[str, float]:
        ms = np.array(values) * 1000
        if not len(ms):
            return {"n": 0}
        return {
            "n": len(ms),
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1),
        }

    return {
        "idle": summary(idle),
        "during_huge": summary(during),
        "huge_status": outcome.get("status"),
        "huge_still_running_at_end": running,
    }


def measure_deadline(service: Service, huge: bytes, client: httpx.Client) -> dict[str, Any]:
    memory = _holder(service)
    _settle(memory, 1.0)
    started = time.perf_counter()
    response = _translate(client, service.url, huge, "jpeg")
    answered = time.perf_counter() - started
    cpu_0 = memory.cpu_seconds()
    time.sleep(2.0)
    cpu_2 = memory.cpu_seconds()
    time.sleep(2.0)
    cpu_4 = memory.cpu_seconds()
    return {
        "status": response.status_code,
        "answered_s": round(answered, 2),
        "cpu_s_0_to_2s_after": round(cpu_2 - cpu_0, 2),
        "cpu_s_2_to_4s_after": round(cpu_4 - cpu_2, 2),
    }


def settings_for(store: Path, args: argparse.Namespace, **more: object) -> dict[str, object]:
    return {
        "store": store,
        "threads": args.cores,
        "log_level": "warning",
        "request_timeout_s": args.timeout,
        "visibility_timeout_s": min(30.0, args.timeout / 2),
        **more,
    }


def measure_mode(
    mode: str, store: Path, images: dict[int, bytes], args: argparse.Namespace, folder: Path
) -> dict[str, Any]:
    workers = 1 if mode == "distributed" else 0
    huge = images[max(images)]
    row: dict[str, Any] = {"mode": mode}
    with httpx.Client(timeout=600) as client:
        with running_service(workers, settings_for(store, args), folder / mode) as service:
            err.print(f"[bold]{mode}[/]: one image at a time")
            row["sizes"] = measure_sizes(service, images, client)
            err.print(f"[bold]{mode}[/]: small requests during {max(images)} Mpx")
            row["fairness"] = measure_fairness(service, huge, client, seconds=args.fairness_s)
            err.print(f"  {row['fairness']}")
        short = settings_for(
            store,
            args,
            request_timeout_s=args.deadline,
            visibility_timeout_s=args.deadline / 2,
        )
        with running_service(workers, short, folder / f"{mode}-deadline") as service:
            err.print(f"[bold]{mode}[/]: {max(images)} Mpx with a {args.deadline} s deadline")
            row["deadline"] = measure_deadline(service, huge, client)
            err.print(f"  {row['deadline']}")
    return row


def print_report(result: dict[str, Any]) -> None:
    table = Table(title=f"large images, one at a time ({result['cpu']}, {result['cores']} cores)")
    for column in ("mode", "Mpx", "status", "s", "idle MB", "peak +MB", "after +MB"):
        table.add_column(column, justify="right")
    for row in result["modes"]:
        for size in row["sizes"]:
            table.add_row(
                row["mode"],
                str(size["megapixels"]),
                str(size["status"]),
                f"{size['seconds']:.1f}",
                str(size["idle_mb"]),
                str(size["peak_growth_mb"]),
                str(size["after_growth_mb"]),
            )
    err.print(table)
    table = Table(title="a forced deadline, and small requests during a huge image")
    for column in (
        "mode",
        "504 after s",
        "CPU s 0-2 s after",
        "CPU s 2-4 s after",
        "small idle p50/p95 ms",
        "small during p50/p95 ms",
        "tile step s",
    ):
        table.add_column(column, justify="right")
    for row in result["modes"]:
        fair, dead = row["fairness"], row["deadline"]
        idle, during = fair["idle"], fair["during_huge"]
        table.add_row(
            row["mode"],
            f"{dead['status']} {dead['answered_s']}",
            str(dead["cpu_s_0_to_2s_after"]),
            str(dead["cpu_s_2_to_4s_after"]),
            f"{idle.get('p50_ms')}/{idle.get('p95_ms')}",
            f"{during.get('p50_ms')}/{during.get('p95_ms')} (n={during['n']})",
            f"{result['tile_step_s']:.2f}",
        )
    err.print(table)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="embedded,distributed")
    parser.add_argument("--sizes", default="1,12,64", help="megapixels: any of 1, 12, 64")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300.0, help="deadline, seconds")
    parser.add_argument("--deadline", type=float, default=5.0, help="the forced deadline")
    parser.add_argument("--fairness-s", type=float, default=15.0)
    parser.add_argument("--json-out", type=Path)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    terminate_on_sigterm()
    args = parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    images = {mp: photo_jpeg(*MEGAPIXEL_SIDES[mp], seed=mp) for mp in sizes}
    with tempfile.TemporaryDirectory(prefix="bench-heavy-") as tmp:
        folder = Path(tmp)
        store = export_bench_model(folder / "store", "resnet_6blocks", 16, fp16=False, tiled=True)
        result: dict[str, Any] = {
            "cpu": cpu_name(),
            "cores": args.cores,
            "model": "resnet_6blocks ngf 16 (demo size), tiled graph",
            "tile_step_s": round(tile_step_seconds(store, threads=args.cores), 3),
            "image_bytes": {str(mp): len(data) for mp, data in images.items()},
            "modes": [
                measure_mode(mode, store, images, args, folder) for mode in args.modes.split(",")
            ],
        }
    print_report(result)
    report_json(result, args.json_out)


if __name__ == "__main__":
    main()
