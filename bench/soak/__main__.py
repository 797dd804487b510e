"""The soak: distributed mode (Redis with AOF, one `unpaired serve`, two `unpaired worker`s kept
running) for `--minutes`, under interactive requests at a steady rate and bulk jobs one after
another, while faults arrive on a schedule that overlaps their recoveries: SIGKILL and SIGTERM
of a worker, a Redis restart, an API restart, a worker paused (SIGSTOP) past the visibility
timeout and resumed.

It reports interactive requests sent, answered correctly (bytes equal to `unpaired translate`'s),
answered with a documented error, refused (no connection while the API restarted) and lost (no
answer by the deadline and no error); job images done, failed, lost and duplicated, with wrong
bytes; p50/p99 latency outside the fault windows; each process's RSS and open descriptors
after warm-up and at the end. A table, JSON, and a plot of latency and RSS over time.

    python -m bench.soak                                  # 20 minutes (make soak)
    python -m bench.soak --minutes 3 --every 20           # a short look

Targets (issue 32): 0 interactive requests lost, 0 job images lost or duplicated, every job
finished, RSS growth under 5% per process after warm-up, no descriptor growth.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

from bench.harness import (
    MODEL,
    cpu_name,
    err,
    export_bench_model,
    photo_crops,
    report_json,
    run_unpaired,
    terminate_on_sigterm,
)
from bench.soak.cluster import Cluster, ProcessSample
from bench.soak.faults import FaultWindow, run_schedule, schedule
from bench.soak.load import Interactive, Jobs
from bench.soak.report import plot, summarise, table

VISIBILITY_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 60.0
WARMUP_S = 120.0


def _cli_outputs(store: Path, folder: Path, out: Path) -> dict[str, bytes]:
    """What `unpaired translate` writes for every image of `folder`, by file name."""
    done = run_unpaired(["translate", MODEL, str(folder), "--direction", "AtoB", "--store",
                         str(store), "--out", str(out)])  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"unpaired translate failed:\n{done.stderr[-3000:]}")
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.png")}


def _inputs(folder: Path, count: int, size: int) -> Path:
    """`count` different photo crops as PNG files in `folder` (cycling the 16 crops, flipped
    and shifted so that no two are alike)."""
    from PIL import Image, ImageOps

    folder.mkdir(parents=True)
    crops: list[Image.Image] = [Image.open(io.BytesIO(d)) for d in photo_crops(size + 16)]
    for i in range(count):
        image = crops[i % len(crops)]
        if (i // len(crops)) % 2:
            image = ImageOps.mirror(image)
        shift = (i // (2 * len(crops))) % 16
        image.crop((shift, shift, shift + size, shift + size)).save(folder / f"{i:04d}.png")
    return folder


def _zip(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.glob("*.png")):
            archive.write(path, path.name)
    return buffer.getvalue()


def _sampler(cluster: Cluster, started: float, stop: threading.Event,
             samples: list[ProcessSample], every: float = 5.0) -> None:  # fmt: skip
    while not stop.wait(every):
        samples.extend(cluster.samples(time.monotonic() - started))


def soak(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    store = export_bench_model(folder / "store", "resnet_6blocks", 8, fp16=False)
    asked = _inputs(folder / "interactive", 32, 96)
    expected = _cli_outputs(store, asked, folder / "interactive-cli")
    bulk = _inputs(folder / "bulk", args.job_images, 64)
    settings = {
        "store": store,
        "threads": 1,
        "jobs_dir": folder / "jobs",
        "chunk_size": 16,
        "visibility_timeout_s": VISIBILITY_TIMEOUT_S,
        "request_timeout_s": REQUEST_TIMEOUT_S,
        "heartbeat_s": 1.0,
        "log_level": "warning",
    }
    cluster = Cluster(folder / "cluster", settings, workers=2)
    (folder / "cluster").mkdir()
    cluster.start()
    started = time.monotonic()
    stop = threading.Event()
    interactive = Interactive(
        cluster.url,
        [((asked / name).read_bytes(), data) for name, data in expected.items()],
        rate=args.rate,
        clients=args.clients,
        deadline_s=REQUEST_TIMEOUT_S + 30,
        started=started,
    )
    jobs = Jobs(cluster.url, _zip(bulk), _cli_outputs(store, bulk, folder / "bulk-cli"),
                folder / "jobs", started, job_timeout_s=1800)  # fmt: skip
    windows: list[FaultWindow] = []
    samples: list[ProcessSample] = []
    seconds = args.minutes * 60
    plan = schedule(min(WARMUP_S, seconds / 4), args.every, seconds - args.every / 2)
    threads = [
        threading.Thread(target=interactive.run, name="interactive"),
        threading.Thread(target=jobs.run, name="jobs"),
        threading.Thread(target=_sampler, args=(cluster, started, stop, samples)),
        threading.Thread(
            target=run_schedule,
            args=(cluster, plan),
            kwargs={
                "started": started,
                "visibility_timeout_s": VISIBILITY_TIMEOUT_S,
                "stop": stop,
                "windows": windows,
            },
        ),
    ]
    try:
        for thread in threads:
            thread.start()
        stop.wait(seconds)
        err.print("the soak is over: the last requests and the running job finish")
    finally:
        interactive.stop()
        jobs.stop()
        stop.set()
        for thread in threads:
            thread.join()
        samples.extend(cluster.samples(time.monotonic() - started))
        cluster.stop()
    summary = summarise(minutes=args.minutes, requests=interactive.records, jobs=jobs.records,
                        windows=windows, samples=samples, restarts=cluster.restarts,
                        warmup_s=min(WARMUP_S, seconds / 4))  # fmt: skip
    if args.plot:
        plot(args.plot, interactive.records, windows, samples)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--every", type=float, default=45.0, help="seconds between faults")
    parser.add_argument("--rate", type=float, default=4.0, help="interactive requests a second")
    parser.add_argument("--clients", type=int, default=8, help="interactive connections")
    parser.add_argument("--job-images", type=int, default=300, help="images per bulk job")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--plot", type=Path, help="PNG of latency and memory over time")
    parser.add_argument("--keep", type=Path, help="work in this new folder and keep it (logs)")
    args = parser.parse_args()
    terminate_on_sigterm()
    cpu = cpu_name()
    if args.keep:
        args.keep.mkdir(parents=True)
        summary = {"cpu": cpu, **soak(args, args.keep)}
    else:
        with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
            summary = {"cpu": cpu, **soak(args, Path(tmp))}
    err.print(table(summary, cpu))
    report_json(summary, args.json_out)


if __name__ == "__main__":
    main()
