"""Bulk jobs (`/v1/jobs`) next to `unpaired translate` on the same folder, and what a running
job does to interactive latency.

One folder of `--images` PNGs (`--size` px) is written once: crops of real photos
(scikit-image's astronaut, chelsea, coffee, rocket; `bench.harness.photo_crops` at `--size` + 8)
cut at different offsets and mirrored, so no two of the first 2,592 are alike. A ResNet
generator with random weights (speed does not depend on them) is exported once into a temporary
store as model `bench`. Measured, in one run:

1. The reference, `unpaired translate`: `python -m cli translate bench <folder> --direction AtoB
   --out <dir> --store <store> --json` as a subprocess with `UNPAIRED_THREADS` = the thread
   budget (`--cores`), after one warm-up run on 16 of the images (file cache). Its images/s is
   wall-clock: images / (process start to exit), nothing subtracted. Its `--json` reports the
   seconds of its translate loop; the rest of the wall time (interpreter start, imports, opening
   the model, building the engine) is shown as "start + load", and the loop's own rate beside.
2. A bulk job per serving mode: the same folder as one zip (ZIP_STORED) in `POST /v1/jobs`
   (model, direction AtoB, format png), polled (`GET /v1/jobs/{id}`, every 0.2 s) until it ends.
   Its images/s = counts.total / (finished_at - started_at) from the job itself (first chunk
   started to last chunk recorded); the wall time from the submit request to the first poll that
   sees the job finished (upload, intake, queueing and polling included) is shown beside, with
   the CPU the service's processes used in it. "vs CLI" = job images/s / CLI wall images/s.
   Modes: `embedded` (`unpaired serve` runs the chunks itself, SQLite job state, engine threads
   = cores), `distributed-1` / `distributed-2` (`unpaired serve` + 1 or 2 `unpaired worker`s
   through a private redis-server, never the shared one; engine threads per worker = cores /
   workers). The job files live in the temporary folder, shared by the API and the workers.
3. Interactive latency (embedded and distributed-1): `POST /v1/models/bench/translate?
   direction=AtoB` with a raw PNG body, one request in flight (closed loop,
   `bench.harness.ClosedLoop`), first idle (a warm-up of `--warmup` s, then `--seconds`), then
   again while a second job runs: submitted, waited for until `running`, measured the same way,
   then cancelled (`DELETE /v1/jobs/{id}`) if still running. That job holds `--images` images,
   or more (the folder again under other names) when the throughput job's rate would finish
   them before 1.5 x (warm-up + window) + 3 s, so that the job outlasts the window. If it ends
   inside the window all the same, the window ends there (only requests sent while it ran
   count). "p95 ratio" = p95 during the job / p95 idle. Beside the latencies, the means of what
   the service says each answer spent waiting for its batch and in the engine (X-Queue-Seconds,
   X-Engine-Seconds): the rest is HTTP, decoding, encoding and waiting for a thread.

Every server and worker is started the way users start them (`python -m cli serve|worker` with
`UNPAIRED_*` variables; the caller's own `UNPAIRED_*` are dropped), used once `GET /readyz`
answers 200 (with every worker live), and stopped at the end (SIGTERM, then kill), also on
Ctrl-C or an error. A mode whose service fails is reported with its log tails and the run goes
on with the next mode.

Checks printed at the end (PASS/FAIL, with the numbers):
- bulk job images/s >= 90% of the CLI's (embedded; distributed-1);
- interactive p95 during a job <= 2x idle (embedded; distributed-1);
- every job correct: the throughput jobs `succeeded` with counts.done == total == images and
  failed == 0; the latency jobs failed == 0 (and done == images if they finished); the CLI wrote
  every image; every interactive answer a PNG of the input's size.

    python -m bench.bulk                                  # 1,000 images, every mode
    python -m bench.bulk --modes embedded --images 5000
    python -m bench.bulk --quick                          # smoke run, a few minutes
    python -m bench.bulk --json-out docs/bulk_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import math
import os
import resource
import shutil
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from rich.markup import escape
from rich.table import Column, Table

from bench.harness import (
    MODEL,
    PHOTOS,
    ClosedLoop,
    Service,
    ServiceFailure,
    answer_measures,
    answer_problem,
    cpu_name,
    err,
    export_bench_model,
    photo_crops,
    png_size,
    report_json,
    run_async,
    running_service,
    service_env,
    stop_all,
    tails,
    terminate_on_sigterm,
    unpaired,
)
from service.jobs.records import TERMINAL as JOB_FINISHED

MARGIN = 8  # the photo crops are made this much larger, then cut at offsets 0..MARGIN
TERMINAL = {state.value for state in JOB_FINISHED}
POLL_S = 0.2
STALL_S = 120.0  # a job whose counts do not move for this long is reported as stuck
REQUEST_TIMEOUT_S = 120.0
THROUGHPUT_TARGET = 0.9
LATENCY_TARGET = 2.0


@dataclass(frozen=True)
class Mode:
    name: str
    workers: int  # 0: embedded
    latency: bool  # measure interactive latency during a job

    @property
    def engine_processes(self) -> int:
        return max(1, self.workers)


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("embedded", 0, True),
        Mode("distributed-1", 1, True),
        Mode("distributed-2", 2, False),
    )
}


# --- inputs -------------------------------------------------------------------------------------


def write_inputs(folder: Path, count: int, size: int) -> list[Path]:
    """`count` PNGs of `size` px: the 16 photo crops cycled, each turn at another offset inside
    a crop made MARGIN px larger, every other turn mirrored."""
    from PIL import Image

    bases = [Image.open(io.BytesIO(data)).convert("RGB") for data in photo_crops(size + MARGIN)]
    offsets = [(dx, dy) for dy in range(MARGIN + 1) for dx in range(MARGIN + 1)]
    folder.mkdir(parents=True)
    paths = []
    for index in range(count):
        turn, base = divmod(index, len(bases))
        dx, dy = offsets[(turn // 2) % len(offsets)]
        image = bases[base].crop((dx, dy, dx + size, dy + size))
        if turn % 2:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"img-{index:05d}.png"
        image.save(path, format="PNG")
        paths.append(path)
    return paths


def zipped(paths: Sequence[Path], count: int | None = None) -> bytes:
    """A zip (stored) of `count` entries (default: one per path): the paths, then again as
    `r1-<name>`, `r2-<name>`, ... until there are `count`."""
    count = len(paths) if count is None else count
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index in range(count):
            turn, position = divmod(index, len(paths))
            path = paths[position]
            archive.write(path, f"r{turn}-{path.name}" if turn else path.name)
    return buffer.getvalue()


def latency_job_size(images: int, rate: float | None, args: argparse.Namespace) -> int:
    """Images for the job that runs under the latency window: `images`, or more if the
    throughput job's rate would finish them before the warm-up and window are over (with
    room: waiting until `running` and the interactive requests slow the job down)."""
    if not rate:
        return images
    return max(images, math.ceil(rate * (1.5 * (args.warmup + args.seconds) + 3)))


# --- the CLI reference --------------------------------------------------------------------------


def run_cli(
    folder: Path, out: Path, store: Path, env: Mapping[str, str], log: Path, device: str
) -> dict[str, Any]:
    """`unpaired translate` over `folder`, timed from process start to exit."""
    argv = ["translate", MODEL, str(folder), "--direction", "AtoB", "--out", str(out)]
    argv += ["--store", str(store), "--device", device, "--json"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    child = unpaired(argv, env, log)
    try:
        code = child.popen.wait()
    finally:
        stop_all([child])
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary: dict[str, Any] | None = None
    for line in reversed(child.tail(10**7).splitlines()):  # stdout and stderr share the log
        with suppress(ValueError):
            if isinstance(parsed := json.loads(line), dict):
                summary = parsed
                break
    if summary is None:
        raise ServiceFailure(f"`unpaired translate` exited with {code}, no JSON:\n{child.tail()}")
    return {
        "exit_code": code,
        "wall_s": wall,
        "loop_s": float(summary["seconds"]),
        "written": len(summary["written"]),
        "failed": summary["failed"],
        "files_out": sum(1 for _ in out.rglob("*.png")),
        "cpu_s": cpu,
        "engine": {k: v for k, v in summary.items() if k not in ("written", "failed", "seconds")},
    }


# --- jobs ---------------------------------------------------------------------------------------


def answer(response: httpx.Response, expected: int, service: Service) -> dict[str, Any]:
    """The JSON body of an answer with the `expected` status; anything else is a failure."""
    if response.status_code != expected:
        request = response.request
        raise ServiceFailure(
            f"{request.method} {request.url.path} answered {response.status_code}: "
            f"{response.text[:2000]}\n" + tails(service.processes)
        )
    body: dict[str, Any] = response.json()
    return body


def submit(client: httpx.Client, service: Service, archive: bytes) -> dict[str, Any]:
    response = client.post(
        "/v1/jobs",
        data={"model": MODEL, "direction": "AtoB", "format": "png"},
        files={"archive": ("images.zip", archive, "application/zip")},
    )
    return answer(response, 202, service)


def get_job(client: httpx.Client, service: Service, job_id: str) -> dict[str, Any]:
    return answer(client.get(f"/v1/jobs/{job_id}"), 200, service)


def wait_job(
    client: httpx.Client, service: Service, job_id: str, *, until_running: bool = False
) -> dict[str, Any]:
    """Poll until the job has finished (or, with `until_running`, has left `queued`); a job
    whose counts stay still for STALL_S is a ServiceFailure."""
    progress, moved = -1, time.monotonic()
    while True:
        service.check_alive()
        job = get_job(client, service, job_id)
        if job["state"] in TERMINAL or (until_running and job["state"] != "queued"):
            return job
        counted = job["counts"]["done"] + job["counts"]["failed"]
        if counted != progress:
            progress, moved = counted, time.monotonic()
        elif time.monotonic() - moved > STALL_S:
            raise ServiceFailure(
                f"job {job_id} has not moved for {STALL_S:.0f} s: {json.dumps(job)[:2000]}\n"
                + tails(service.processes)
            )
        time.sleep(POLL_S)


def seconds_between(start: str | None, end: str | None) -> float | None:
    if start is None or end is None:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def job_problem(job: dict[str, Any], images: int, *, may_cancel: bool) -> str | None:
    """None when the job's outcome is right; else what is wrong with it."""
    counts, state = job["counts"], job["state"]
    problems = []
    if counts["total"] != images:
        problems.append(f"total {counts['total']} != {images}")
    if counts["failed"]:
        errors = "; ".join(f"{e['item']}: {e['error']}" for e in job.get("errors", [])[:3])
        problems.append(f"{counts['failed']} failed ({errors})")
    if state == "cancelled" and may_cancel:
        pass
    elif state != "succeeded":
        problems.append(f"state {state}")
    elif counts["done"] != images:
        problems.append(f"done {counts['done']} != {images}")
    return "; ".join(problems) or None


def throughput_job(service: Service, archive: bytes, images: int) -> dict[str, Any]:
    with httpx.Client(base_url=service.url, timeout=REQUEST_TIMEOUT_S) as client:
        cpu_before = service.cpu_seconds()
        started = time.perf_counter()
        job = submit(client, service, archive)
        submitted = time.perf_counter() - started
        job = wait_job(client, service, job["id"])
        wall = time.perf_counter() - started
        cpu = service.cpu_seconds() - cpu_before
    span = seconds_between(job["started_at"], job["finished_at"])
    total = job["counts"]["total"]
    return {
        "job": job["id"],
        "state": job["state"],
        "counts": job["counts"],
        "problem": job_problem(job, images, may_cancel=False),
        "submit_s": round(submitted, 3),
        "job_s": round(span, 3) if span is not None else None,
        "images_per_s": round(total / span, 3) if span else None,
        "reported_throughput": job["throughput"],
        "wall_s": round(wall, 3),
        "wall_images_per_s": round(total / wall, 3),
        "service_cores": round(cpu / wall, 2),
    }


# --- interactive latency ------------------------------------------------------------------------


async def closed_loop(
    url: str,
    payloads: Sequence[tuple[bytes, tuple[int, int]]],
    load: ClosedLoop,
    job_id: str | None,
) -> dict[str, Any]:
    """One request in flight (`load.concurrency` of them) until the window ends; with `job_id`,
    the job is watched and the window ends when the job does."""
    path = f"/v1/models/{MODEL}/translate"
    params = {"direction": "AtoB"}
    headers = {"Content-Type": "image/png", "Accept": "image/png"}
    counter = itertools.count()
    watched: dict[str, Any] = {}
    async with httpx.AsyncClient(
        base_url=url, timeout=REQUEST_TIMEOUT_S, http1=True, http2=False
    ) as client:

        async def one() -> None:
            while (phase := load.advance(time.perf_counter())) != "stop":
                data, size = payloads[next(counter) % len(payloads)]
                sent = time.perf_counter()
                try:
                    response = await client.post(path, params=params, content=data, headers=headers)
                except httpx.HTTPError as exc:
                    load.finish(phase, sent, type(exc).__name__)
                    continue
                problem = answer_problem(response, size)
                load.finish(
                    phase, sent, problem, answer_measures(response) if problem is None else None
                )

        async def watch() -> None:
            assert job_id is not None
            while load.phase != "stop":
                response = await client.get(f"/v1/jobs/{job_id}")
                if response.status_code == 200:
                    job = response.json()
                    if load.phase == "measure" and "first" not in watched:
                        watched["first"] = job["counts"]["done"]
                    watched["last"] = job["counts"]["done"]
                    if job["state"] in TERMINAL:
                        watched["ended"] = load.phase
                        if load.phase == "measure":  # the window ends with the job
                            load.seconds = time.perf_counter() - load.window[0]
                        return
                await asyncio.sleep(0.25)

        tasks = [one() for _ in range(load.concurrency)]
        if job_id is not None:
            tasks.append(watch())
        await asyncio.gather(*tasks)
    return watched


def latency_cell(
    service: Service,
    payloads: Sequence[tuple[bytes, tuple[int, int]]],
    args: argparse.Namespace,
    job_id: str | None = None,
) -> dict[str, Any]:
    load = ClosedLoop(1, args.warmup, args.seconds, None)
    watched: dict[str, Any] = {}

    async def run() -> None:
        watched.update(await closed_loop(service.url, payloads, load, job_id))

    run_async(run())
    row = load.summary()
    if job_id is not None:
        row["job_ended_in"] = watched.get("ended")  # None: ran past the window
        if "first" in watched:
            row["job_done_in_window"] = watched["last"] - watched["first"]
    return row


def latency_during_job(
    service: Service,
    archive: bytes,
    images: int,
    payloads: Sequence[tuple[bytes, tuple[int, int]]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    with httpx.Client(base_url=service.url, timeout=REQUEST_TIMEOUT_S) as client:
        job = submit(client, service, archive)
        job = wait_job(client, service, job["id"], until_running=True)
        if job["state"] != "running":
            row: dict[str, Any] = {"job_ended_in": "before-measuring"}
        else:
            row = latency_cell(service, payloads, args, job["id"])
        job = get_job(client, service, job["id"])
        cancelled = job["state"] not in TERMINAL
        if cancelled:
            answer(client.delete(f"/v1/jobs/{job['id']}"), 200, service)
        job = wait_job(client, service, job["id"])
    row["job"] = {
        "id": job["id"],
        "state": job["state"],
        "counts": job["counts"],
        "cancelled_by_bench": cancelled,
        "problem": job_problem(job, images, may_cancel=True),
    }
    return row


# --- report -------------------------------------------------------------------------------------


Check = dict[str, Any]


def check_throughput(mode: str, row: dict[str, Any] | None, cli: dict[str, Any]) -> Check:
    name = f"bulk {mode} >= {THROUGHPUT_TARGET:.0%} of the CLI's images/s"
    if row is None:
        return {"name": name, "passed": None, "detail": "not measured"}
    if row.get("error") or not (row.get("bulk") or {}).get("images_per_s"):
        return {"name": name, "passed": False, "detail": row.get("error", "no rate")}
    bulk = row["bulk"]
    return {
        "name": name,
        "passed": bulk["vs_cli"] >= THROUGHPUT_TARGET,
        "value": bulk["vs_cli"],
        "detail": f"{bulk['images_per_s']:.1f} / {cli['images_per_s']:.1f} img/s = "
        f"{bulk['vs_cli']:.0%} (vs the CLI's loop alone: {bulk['vs_cli_loop']:.0%})",
    }


def check_latency(mode: str, row: dict[str, Any] | None) -> Check:
    name = f"interactive p95 during a job <= {LATENCY_TARGET:g}x idle ({mode})"
    if row is None:
        return {"name": name, "passed": None, "detail": "not measured"}
    if row.get("error") and not row.get("latency"):
        return {"name": name, "passed": False, "detail": row["error"]}
    latency = row.get("latency") or {}
    idle, during = latency.get("idle"), latency.get("during")
    if not idle or not during or not during.get("ok") or not idle.get("ok"):
        return {
            "name": name,
            "passed": None if not row.get("error") else False,
            "detail": "no measurement"
            + (f" (job ended {during['job_ended_in']})" if during else ""),
        }
    if during.get("job_ended_in") == "warmup":
        return {
            "name": name,
            "passed": None,
            "detail": "the job ended during the warm-up: nothing measured during a job "
            "(use more --images)",
        }
    ratio = latency["p95_ratio"]
    detail = (
        f"p95 {during['p95_ms']:.1f} ms during / {idle['p95_ms']:.1f} ms idle = {ratio:.2f}x "
        f"(p50 {during['p50_ms']:.1f} / {idle['p50_ms']:.1f} ms; {during['ok']} requests "
        f"in {during['window_s']:.1f} s"
    )
    if during.get("job_ended_in") == "measure":
        detail += ", the job ended inside the window: window cut short"
    return {"name": name, "passed": ratio <= LATENCY_TARGET, "value": ratio, "detail": detail + ")"}


def row_problems(row: dict[str, Any]) -> tuple[list[str], int]:
    """What is wrong with one mode's jobs and answers, and how many jobs were checked."""
    problems, checked = [], 0
    if row.get("error"):
        problems.append(f"{row['mode']}: {row['error'].splitlines()[0]}")
    bulk = row.get("bulk")
    if bulk:
        checked += 1
        if bulk["problem"]:
            problems.append(f"{row['mode']} job: {bulk['problem']}")
    for phase, cell in (row.get("latency") or {}).items():
        if not isinstance(cell, dict):
            continue
        if cell.get("errors") or cell.get("warmup_errors"):
            problems.append(
                f"{row['mode']} interactive {phase}: {cell['error_kinds']} {cell['warmup_errors']}"
            )
        if "job" in cell:
            checked += 1
            if cell["job"]["problem"]:
                problems.append(f"{row['mode']} latency job: {cell['job']['problem']}")
    return problems, checked


def check_correct(result: dict[str, Any]) -> Check:
    cli = result["cli"]
    problems = []
    wrote = {cli["written"], cli["files_out"], result["images"]}
    if cli["exit_code"] or cli["failed"] or len(wrote) != 1:
        problems.append(
            f"CLI: exit {cli['exit_code']}, wrote {cli['written']}/{result['images']} "
            f"({cli['files_out']} files), failed {cli['failed'][:3]}"
        )
    checked = 0
    for row in result["rows"]:
        found, counted = row_problems(row)
        problems += found
        checked += counted
    return {
        "name": "every job correct (done == images, failed == 0), every answer a PNG",
        "passed": not problems,
        "detail": "; ".join(problems) or f"{checked} jobs and the CLI run checked",
    }


def checks(result: dict[str, Any]) -> list[Check]:
    rows = {r["mode"]: r for r in result["rows"]}
    modes = ("embedded", "distributed-1")
    return [
        *(check_throughput(mode, rows.get(mode), result["cli"]) for mode in modes),
        *(check_latency(mode, rows.get(mode)) for mode in modes),
        check_correct(result),
    ]


def reference_table(result: dict[str, Any]) -> Table:
    cli = result["cli"]
    reference = Table(
        "images",
        "threads",
        "wall s",
        "img/s (wall)",
        "start + load s",
        "loop s",
        "img/s (loop)",
        "CPU cores",
        "written",
        title="reference: unpaired translate (CLI, one process)",
    )
    reference.add_row(
        str(result["images"]),
        str(cli["threads"]),
        f"{cli['wall_s']:.2f}",
        f"{cli['images_per_s']:.1f}",
        f"{cli['start_and_load_s']:.2f}",
        f"{cli['loop_s']:.2f}",
        f"{cli['loop_images_per_s']:.1f}",
        f"{cli['cpu_s'] / cli['wall_s']:.2f}",
        f"{cli['written']}" + (f" (exit {cli['exit_code']})" if cli["exit_code"] else ""),
    )
    return reference


def bulk_table(result: dict[str, Any]) -> Table:
    bulk = Table(
        Column("mode", no_wrap=True),
        "engines",
        "submit s",
        "job s",
        "img/s",
        "vs CLI",
        "vs CLI loop",
        "wall s",
        "img/s (wall)",
        "service cores",
        "state",
        "done / failed",
        title=f"bulk job: {result['images']} PNG {result['size']}x{result['size']} in one zip",
    )
    for row in result["rows"]:
        engines = f"{row['engine_processes']} x {row['engine_threads']} threads"
        b = row.get("bulk")
        if not b:
            bulk.add_row(row["mode"], engines, *[""] * 8, "[red]error[/]", "")
            continue
        bulk.add_row(
            row["mode"],
            engines,
            f"{b['submit_s']:.2f}",
            f"{b['job_s']:.2f}" if b["job_s"] is not None else "",
            f"{b['images_per_s']:.1f}" if b["images_per_s"] else "",
            f"{b['vs_cli']:.0%}" if b.get("vs_cli") is not None else "",
            f"{b['vs_cli_loop']:.0%}" if b.get("vs_cli_loop") is not None else "",
            f"{b['wall_s']:.2f}",
            f"{b['wall_images_per_s']:.1f}",
            f"{b['service_cores']:.2f}",
            b["state"],
            f"{b['counts']['done']} / {b['counts']['failed']}",
        )
    return bulk


def latency_table(result: dict[str, Any]) -> Table:
    latency = Table(
        Column("mode", no_wrap=True),
        Column("load", no_wrap=True),
        "requests",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "p95 ratio",
        "queue ms",
        "engine ms",
        "errors",
        "window s",
        "job images in window",
        "job",
        title="interactive latency, 1 request in flight (queue, engine: mean of the "
        "service's X-Queue-Seconds, X-Engine-Seconds)",
    )
    for row in result["rows"]:
        cells = row.get("latency") or {}
        for phase in ("idle", "during"):
            cell = cells.get(phase)
            if not cell:
                continue
            job = cell.get("job")
            job_text = ""
            if job:
                job_text = f"{job['state']} {job['counts']['done']}/{job['counts']['total']}"
                if cell.get("job_ended_in"):
                    job_text += f" (ended in {cell['job_ended_in']})"
            if "p95_ms" not in cell:
                latency.add_row(row["mode"], "during job", *[""] * 10, job_text)
                continue
            latency.add_row(
                row["mode"],
                "idle" if phase == "idle" else "during job",
                str(cell["ok"]),
                f"{cell['p50_ms']:.1f}",
                f"{cell['p95_ms']:.1f}",
                f"{cell['p99_ms']:.1f}",
                f"{cells['p95_ratio']:.2f}" if phase == "during" and cells.get("p95_ratio") else "",
                f"{cell['mean_queue_ms']:.1f}" if "mean_queue_ms" in cell else "",
                f"{cell['mean_engine_ms']:.1f}" if "mean_engine_ms" in cell else "",
                str(cell["errors"] + sum(cell["warmup_errors"].values())),
                f"{cell['window_s']:.1f}",
                str(cell.get("job_done_in_window", "")),
                job_text,
            )
    return latency


def print_report(result: dict[str, Any]) -> None:
    err.print(reference_table(result))
    err.print(bulk_table(result))
    latency = latency_table(result)
    if latency.row_count:
        err.print(latency)
    err.print(
        f"CPU: {result['cpu']} x {result['cores']} cores; model {result['model']}; "
        f"chunk size {result['settings']['chunk_size']}, max batch "
        f"{result['settings']['max_batch']}",
        highlight=False,
    )
    for row in result["rows"]:
        if row.get("error"):
            err.print(f"[red]{row['mode']} failed:[/] {escape(row['error'])}", highlight=False)
    verdict = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "[yellow]SKIP[/]"}
    for check in result["checks"]:
        err.print(
            f"{verdict[check['passed']]} {escape(check['name'])}: {escape(check['detail'])}",
            highlight=False,
        )


# --- main ---------------------------------------------------------------------------------------

FULL = {"images": 1000, "seconds": 10.0, "warmup": 1.0, "modes": ",".join(MODES)}
QUICK = {"images": 120, "seconds": 3.0, "warmup": 0.5, "modes": "embedded,distributed-1"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--modes", default=None, help="comma-separated, of " + ", ".join(MODES) + " (default all)"
    )
    parser.add_argument("--images", type=int, default=None, help="images per job (default 1000)")
    parser.add_argument("--size", type=int, default=64, help="image side (default 64)")
    parser.add_argument(
        "--seconds", type=float, default=None, help="each latency window (default 10)"
    )
    parser.add_argument(
        "--warmup", type=float, default=None, help="warm-up before each latency window (1)"
    )
    parser.add_argument("--generator", default="resnet_6blocks")
    parser.add_argument("--ngf", type=int, default=16)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--cores",
        type=int,
        default=None,
        help="thread budget (default: the CPUs this process may use)",
    )
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy server/worker logs here")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 120 images, 3 s latency windows, embedded and distributed-1",
    )
    args = parser.parse_args()
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    if args.images < 16:
        parser.error("--images must be at least 16")
    return args


def measure_mode(
    mode: Mode,
    settings: Mapping[str, object],
    folder: Path,
    paths: Sequence[Path],
    archive: bytes,
    payloads: Sequence[tuple[bytes, tuple[int, int]]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    row: dict[str, Any] = {"mode": mode.name}
    with running_service(mode.workers, settings, folder / "logs") as service:
        if mode.latency:
            row["latency"] = {"idle": latency_cell(service, payloads, args)}
            idle = row["latency"]["idle"]
            err.print(
                f"  idle: p50 {idle['p50_ms']:.1f} ms, p95 {idle['p95_ms']:.1f} ms "
                f"({idle['ok']} requests, {idle['errors']} errors)",
                highlight=False,
            )
        row["bulk"] = throughput_job(service, archive, args.images)
        b = row["bulk"]
        err.print(
            f"  job: {b['state']} {b['counts']}, {b['images_per_s']} img/s over {b['job_s']} s "
            f"(wall {b['wall_s']:.2f} s, submit {b['submit_s']:.2f} s)",
            highlight=False,
        )
        if b["problem"]:
            err.print(f"  [red]job problem:[/] {escape(b['problem'])}", highlight=False)
            err.print(escape(tails(service.processes)), highlight=False)
        if mode.latency:
            count = latency_job_size(args.images, b["images_per_s"], args)
            err.print(f"  a job of {count} images under the latency window ...", highlight=False)
            during = latency_during_job(service, zipped(paths, count), count, payloads, args)
            row["latency"]["during"] = during
            idle_p95 = row["latency"]["idle"]["p95_ms"]
            if during.get("ok") and idle_p95:
                row["latency"]["p95_ratio"] = round(during["p95_ms"] / idle_p95, 3)
            err.print(
                f"  during job: p50 {during.get('p50_ms')} ms, p95 {during.get('p95_ms')} ms "
                f"({during.get('ok')} requests, job ended in {during.get('job_ended_in')}; "
                f"job {during['job']['state']} {during['job']['counts']})",
                highlight=False,
            )
            if during.get("errors") or during["job"]["problem"]:
                err.print(escape(tails(service.processes)), highlight=False)
    return row


def mode_row(
    mode: Mode,
    settings: Mapping[str, object],
    folder: Path,
    paths: Sequence[Path],
    archive: bytes,
    payloads: Sequence[tuple[bytes, tuple[int, int]]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One mode's row; a mode whose service fails is a row with its error (the run goes on)."""
    err.print(f"starting {mode.name} ...", highlight=False)
    try:
        row = measure_mode(mode, settings, folder, paths, archive, payloads, args)
    except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:  # ServiceFailure too
        text = f"{type(exc).__name__}: {exc}"
        err.print(f"[red]{mode.name} failed:[/] {escape(text)}", highlight=False)
        row = {"mode": mode.name, "error": text}
    finally:
        if args.keep_logs and (folder / "logs").exists():
            shutil.copytree(folder / "logs", args.keep_logs / mode.name, dirs_exist_ok=True)
    return row


def measure_cli(
    folder: Path,
    paths: Sequence[Path],
    store: Path,
    env: Mapping[str, str],
    cores: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """`unpaired translate` on the whole folder, after a warm-up run on 16 of the images."""
    warm = folder / "warm-in"
    warm.mkdir()
    for path in paths[:16]:
        shutil.copy(path, warm / path.name)
    err.print("unpaired translate: warm-up on 16 images ...")
    run_cli(warm, folder / "warm-out", store, env, folder / "cli-warm.log", args.device)
    err.print(f"unpaired translate: {args.images} images ...")
    cli = run_cli(folder / "in", folder / "cli-out", store, env, folder / "cli.log", args.device)
    cli["threads"] = cores
    cli["images_per_s"] = round(args.images / cli["wall_s"], 3)
    cli["loop_images_per_s"] = round(args.images / cli["loop_s"], 3)
    cli["start_and_load_s"] = round(cli["wall_s"] - cli["loop_s"], 3)
    err.print(
        f"  {cli['images_per_s']:.1f} img/s wall ({cli['wall_s']:.2f} s, of which "
        f"{cli['start_and_load_s']:.2f} s start + load); loop alone "
        f"{cli['loop_images_per_s']:.1f} img/s",
        highlight=False,
    )
    return cli


def main() -> None:
    args = parse_args()
    terminate_on_sigterm()
    modes = [MODES[m] for m in args.modes.split(",")]
    cores = args.cores or len(os.sched_getaffinity(0))
    import torch

    from service.settings import Settings

    fp16 = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    defaults = Settings.model_fields
    err.print(f"CPU: {cpu_name()} x {cores} cores", highlight=False)

    with tempfile.TemporaryDirectory(prefix="bench-bulk-") as scratch:
        folder = Path(scratch)
        err.print(f"exporting {args.generator} ngf {args.ngf} ...")
        store = export_bench_model(folder / "store", args.generator, args.ngf, fp16=fp16)
        err.print(f"writing {args.images} PNGs of {args.size} px ...")
        paths = write_inputs(folder / "in", args.images, args.size)
        archive = zipped(paths)
        pngs = [paths[i].read_bytes() for i in range(16)]
        payloads = [(data, png_size(data) or (0, 0)) for data in pngs]
        base: dict[str, object] = {
            "store": store,
            "cache_dir": folder / "cache",
            "models": MODEL,
            "device": args.device,
            "log_level": "warning",
            "log_format": "text",
        }

        # 1. the CLI, after a warm-up run on 16 images (file cache, model cache)
        cli_env = service_env({**base, "threads": cores})
        cli = measure_cli(folder, paths, store, cli_env, cores, args)

        # 2-4. each mode
        rows: list[dict[str, Any]] = []
        for mode in modes:
            threads = max(1, cores // mode.engine_processes)
            settings = {**base, "threads": threads, "jobs_dir": folder / mode.name / "jobs"}
            row = mode_row(mode, settings, folder / mode.name, paths, archive, payloads, args)
            row["engine_processes"] = mode.engine_processes
            row["engine_threads"] = threads
            b = row.get("bulk")
            if b and b["images_per_s"]:
                b["vs_cli"] = round(b["images_per_s"] / cli["images_per_s"], 3)
                b["vs_cli_loop"] = round(b["images_per_s"] / cli["loop_images_per_s"], 3)
            rows.append(row)

    result: dict[str, Any] = {
        "benchmark": "bulk",
        "cpu": cpu_name(),
        "cores": cores,
        "model": f"{args.generator} ngf {args.ngf} (random weights)",
        "engine": cli["engine"],
        "size": args.size,
        "images": args.images,
        "inputs": f"{args.images} PNG crops (offsets, mirrored) of skimage {', '.join(PHOTOS)}",
        "archive_bytes": len(archive),
        "settings": {
            "chunk_size": defaults["chunk_size"].default,
            "max_batch": defaults["max_batch"].default,
            "poll_s": POLL_S,
            "latency_warmup_s": args.warmup,
            "latency_seconds": args.seconds,
        },
        "cli": cli,
        "rows": rows,
    }
    result["checks"] = checks(result)
    print_report(result)
    report_json(result, args.json_out)


if __name__ == "__main__":
    main()
