"""One clip as a bulk job in distributed mode: one worker against two, side by side.

The worker that runs the clip shares its frames with the others
(:mod:`service.distributed.frame_sharing`); this measures what that buys on this machine: the
same clip (a pan over a real photo) submitted to a fresh deployment (Redis, `unpaired serve`,
N workers of `--threads` threads each) with one worker, then with two. Reported: seconds from
submission to the finished job, frames/s, and how many frames each worker translated.

    python -m bench.video_workers --store model-store --model vintage --frames 24 --side 256
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from bench.clips import pan_frames, write_clip
from bench.harness import cpu_name, report_json
from bench.soak.cluster import Cluster
from models.sample_photos import load_photo

err = Console(stderr=True)


def run_job(url: str, clip: Path, model: str, timeout: float) -> tuple[float, dict[str, Any]]:
    """Seconds from submission to the finished job, and the clip's report."""
    started = time.perf_counter()
    with clip.open("rb") as handle:
        answer = httpx.post(
            f"{url}/v1/jobs",
            data={"model": model},
            files=[("files", (clip.name, handle, "video/mp4"))],
            timeout=120,
        )
    answer.raise_for_status()
    job_id = answer.json()["id"]
    while True:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()
        if job["state"] not in ("queued", "running"):
            break
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"job {job_id} still {job['state']} after {timeout:.0f} s")
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    if job["state"] != "succeeded":
        raise RuntimeError(f"job {job_id} ended {job['state']}: {job['errors']}")
    result = httpx.get(f"{url}/v1/jobs/{job_id}/result", timeout=120)
    with zipfile.ZipFile(io.BytesIO(result.content)) as archive:
        report: dict[str, Any] = json.loads(archive.read(f"{clip.stem}.mp4.json"))
    return seconds, report


def measure(workers: int, clip: Path, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    settings = {
        "store": str(Path(args.store).resolve()),
        "models": f'["{args.model}"]',
        "threads": args.threads,
        "jobs_dir": str(folder / "jobs"),
        "log_format": "json",
    }
    cluster = Cluster(folder, settings, workers=workers)
    cluster.start()
    try:
        seconds, report = run_job(cluster.url, clip, args.model, args.timeout)
    finally:
        cluster.stop()
    row = {
        "workers": workers,
        "seconds": round(seconds, 2),
        "frames": report["frames"],
        "frames_per_second": round(report["frames"] / seconds, 3),
        "frames_by_worker": report.get("frames_by_worker", {}),
    }
    err.print(f"  {workers} worker(s): {row['seconds']} s, {row['frames_by_worker']}")
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="model-store")
    parser.add_argument("--model", default="vintage")
    parser.add_argument("--photo", default="astronaut")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="engine threads per worker")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    cpu = cpu_name()
    err.print(f"[bold]one clip, one worker against two[/] on {cpu}")
    with tempfile.TemporaryDirectory(prefix="bench-video-workers-") as scratch:
        root = Path(scratch)
        clip = root / "pan.mp4"
        write_clip(str(clip), pan_frames(load_photo(args.photo), args.frames, args.side))
        rows = [measure(n, clip, args, root / f"workers-{n}") for n in (1, 2)]
    table = Table(title=f"{args.frames} frames at {args.side}x{args.side}, {args.model}")
    for column in ("workers", "seconds", "frames/s", "frames by worker"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["workers"]),
            f"{row['seconds']:.1f}",
            f"{row['frames_per_second']:.2f}",
            ", ".join(f"{k}: {v}" for k, v in sorted(row["frames_by_worker"].items())),
        )
    err.print(table)
    speedup = rows[0]["seconds"] / rows[1]["seconds"]
    err.print(f"two workers: {speedup:.2f}x the speed of one")
    result = {
        "cpu": cpu,
        "model": args.model,
        "frames": args.frames,
        "side": args.side,
        "threads_per_worker": args.threads,
        "rows": rows,
        "speedup": round(speedup, 3),
    }
    report_json(result, args.json_out)


if __name__ == "__main__":
    main()
