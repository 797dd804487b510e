"""Served throughput and latency of the REST API, next to the engine's own throughput.

Drives the real `POST /v1/models/{name}/translate` over HTTP/1.1 (keep-alive, httpx) with a
closed-loop client holding exactly `concurrency` requests in flight, for each serving mode:

- `embedded`: `unpaired serve`, models in the API process, micro-batching on (max batch 8,
  max wait 5 ms: the defaults);
- `embedded-nobatch`: the same with `UNPAIRED_MAX_BATCH=1`;
- `distributed-1` / `distributed-2`: `unpaired serve` handing requests to 1 or 2
  `unpaired worker`s through a private redis-server (never the shared one).

The reference is the engine alone, in this process: `service.inference.engine.Engine.translate` on
already-decoded images (no HTTP, no decode/encode), batch = the mode's max batch, with the same
thread budget; "served / engine" is the headline ratio. A ResNet generator with random weights
(speed does not depend on them) is exported once into a temporary store; the inputs are crops
of real photos (scikit-image's astronaut, chelsea, coffee, rocket) resized to `--size` and
encoded as PNG once. Every server and worker is started the way users start them
(`python -m cli serve|worker` with `UNPAIRED_*` variables; the caller's own `UNPAIRED_*` are
dropped), measured once `GET /readyz` answers 200 (with every worker live), and stopped at the
end (SIGTERM, then kill), also on Ctrl-C or an error.

Thread budget: engine threads per process (`UNPAIRED_THREADS`) = cores / engine processes (1
in embedded mode and with one worker, 2 with two workers). The client, the API process and
redis run on the same cores: the table shows how many cores the client and the service used.

Each cell (mode x concurrency): a warm-up (at least `--warmup` seconds and `concurrency`
answers, discarded), then `--seconds` (or `--requests`) of measurement. Throughput counts the
200 answers completed inside the measurement window (exactly `concurrency` requests in flight
throughout); latencies are those of the requests sent inside it (time.perf_counter around each
request). Every 200 answer must be a PNG of its input's size (signature + IHDR); non-200
answers, transport errors and wrong images are counted as errors, never dropped.

Checks printed at the end (PASS/FAIL, with the numbers):
- served / engine >= 80% at concurrency 32 (embedded mode, batching on);
- batching on beats batching off at every concurrency >= 8;
- p99 / p50 < 3 below saturation: at every concurrency up to the first that reaches 90% of
  the mode's peak throughput;
- every answer correct (no errors).

    python -m bench.http_service                          # every mode, c = 1,8,32,128
    python -m bench.http_service --modes embedded,embedded-nobatch --concurrency 8,32
    python -m bench.http_service --quick                  # smoke run, about a minute
    python -m bench.http_service --json-out docs/service_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

from bench.harness import (
    JPEG_SIGNATURE,
    MODEL,
    PHOTOS,
    ClosedLoop,
    Profile,
    Service,
    answer_measures,
    answer_problem,
    cpu_name,
    err,
    export_bench_model,
    image_size,
    photo_crops,
    report_json,
    run_async,
    running_service,
    terminate_on_sigterm,
)
from service.inference.engine import Engine, EngineOptions
from service.inference.image_io import DecodedImage, decode_image
from service.store.model_store import ModelStore

REQUEST_TIMEOUT_S = 120.0
VISIBILITY_TIMEOUT_S = 60.0
SATURATION = 0.9  # a cell at >= 90% of its mode's peak throughput is saturated


@dataclass(frozen=True)
class Mode:
    name: str
    workers: int  # 0: embedded
    batching: bool
    api_processes: int = 1  # `unpaired serve --processes N` (distributed mode)

    @property
    def engine_processes(self) -> int:
        return max(1, self.workers)


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("embedded", 0, True),
        Mode("embedded-nobatch", 0, False),
        Mode("distributed-1", 1, True),
        Mode("distributed-2", 2, True),
        Mode("distributed-1-api2", 1, True, api_processes=2),
    )
}


# --- the engine alone -------------------------------------------------------------------------


def engine_rate(
    store: ModelStore,
    images: Sequence[DecodedImage],
    *,
    processes: int,
    threads: int,
    batch: int,
    device: str,
    seconds: float,
) -> tuple[float, dict[str, object]]:
    """Images/s of `processes` engines running at once (one Python thread each, as separate
    processes would), each `threads` threads, on batches of `batch` decoded images."""
    model = store.open(MODEL)
    options = EngineOptions(device=device, max_batch=batch, threads=threads)  # type: ignore[arg-type]
    engines = [Engine(model, "AtoB", options) for _ in range(processes)]
    work = [list(itertools.islice(itertools.cycle(images), i, i + batch)) for i in range(4)]
    for engine in engines:
        engine.translate(work[0])  # sessions allocate and optimise on first run
    done = [0] * processes
    barrier = threading.Barrier(processes + 1)
    stop = threading.Event()

    def loop(index: int) -> None:
        barrier.wait()
        for call in itertools.count():
            if stop.is_set():
                return
            engines[index].translate(work[call % len(work)])
            done[index] += batch

    threads_ = [threading.Thread(target=loop, args=(i,)) for i in range(processes)]
    for thread in threads_:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    counted = sum(done)  # images finished by the deadline; calls in progress are not counted
    elapsed = time.perf_counter() - start
    stop.set()
    for thread in threads_:
        thread.join()
    return counted / elapsed, engines[0].describe()


# --- the client ---------------------------------------------------------------------------------


async def drive(
    url: str, payloads: Sequence[tuple[bytes, tuple[int, int]]], load: ClosedLoop
) -> None:
    limits = httpx.Limits(
        max_connections=load.concurrency, max_keepalive_connections=load.concurrency
    )
    path = f"/v1/models/{MODEL}/translate"
    params = {"direction": "AtoB"}
    kind = "image/jpeg" if payloads[0][0][:2] == JPEG_SIGNATURE else "image/png"
    headers = {"Content-Type": kind, "Accept": kind}
    counter = itertools.count()
    async with httpx.AsyncClient(
        base_url=url, limits=limits, timeout=REQUEST_TIMEOUT_S + 30, http1=True, http2=False
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
                    phase,
                    sent,
                    problem,
                    answer_measures(response) if problem is None else None,
                    response.headers.get("x-worker"),
                )

        await asyncio.gather(*(one() for _ in range(load.concurrency)))


def measure_cell(
    service: Service,
    payloads: Sequence[tuple[bytes, tuple[int, int]]],
    concurrency: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    marks: dict[str, tuple[float, list[float]]] = {}

    def on_window(edge: str) -> None:  # CPU time of the client and of each service process
        marks[edge] = (time.process_time(), [p.cpu_seconds() for p in service.processes])

    load = ClosedLoop(concurrency, args.warmup, args.seconds, args.requests, on_window)
    run_async(drive(service.url, payloads, load))
    row = load.summary()
    span = row["window_s"]
    used = [end - start for start, end in zip(marks["start"][1], marks["end"][1], strict=True)]
    row["client_cores"] = round((marks["end"][0] - marks["start"][0]) / span, 2) if span else None
    row["service_cores"] = round(sum(used) / span, 2) if span else None
    answered = row["images_per_s"] * span  # the answers completed inside the window
    if answered:  # CPU milliseconds per answer: the API process(es), then each worker
        row["api_cpu_ms"] = round(1000 * used[0] / answered, 3)
        row["worker_cpu_ms"] = [round(1000 * u / answered, 3) for u in used[1:]]
    if load.tags:
        row["answers_per_worker"] = dict(load.tags)
    return row


# --- report -------------------------------------------------------------------------------------


def knee(rows: Sequence[dict[str, Any]]) -> int:
    """The lowest concurrency reaching SATURATION x the peak throughput of these rows."""
    peak = max(r["images_per_s"] for r in rows)
    return min(r["concurrency"] for r in rows if r["images_per_s"] >= SATURATION * peak)


Check = dict[str, Any]


def check_vs_engine(
    rows: Sequence[dict[str, Any]], by_mode: dict[str, list[dict[str, Any]]], target_c: int
) -> Check:
    """1. served / engine at concurrency 32, batching on."""
    name = f"served / engine >= 80% at c={target_c} (embedded)"
    cell = next((r for r in by_mode.get("embedded", []) if r["concurrency"] == target_c), None)
    if cell is None or cell.get("vs_engine") is None:
        detail = f"not measured (needs mode embedded at concurrency {target_c})"
        return {"name": name, "passed": None, "detail": detail}
    others = ", ".join(
        f"{r['mode']} {r['vs_engine']:.0%}"
        for r in rows
        if r["concurrency"] == target_c and r["mode"] != "embedded" and r.get("vs_engine")
    )
    return {
        "name": name,
        "passed": cell["vs_engine"] >= 0.8,
        "value": cell["vs_engine"],
        "detail": f"{cell['images_per_s']:.1f} / {cell['engine_images_per_s']:.1f} img/s"
        f" = {cell['vs_engine']:.0%}" + (f" (others: {others})" if others else ""),
    }


def check_batching(by_mode: dict[str, list[dict[str, Any]]]) -> Check:
    """2. batching on beats off at c >= 8."""
    name = "batching on beats off at c >= 8"
    on = {r["concurrency"]: r for r in by_mode.get("embedded", [])}
    off = {r["concurrency"]: r for r in by_mode.get("embedded-nobatch", [])}
    pairs = [(c, on[c], off[c]) for c in sorted(on) if c >= 8 and c in off]
    if not pairs:
        detail = "not measured (needs embedded and embedded-nobatch at c >= 8)"
        return {"name": name, "passed": None, "detail": detail}
    return {
        "name": name,
        "passed": all(a["images_per_s"] > b["images_per_s"] for _, a, b in pairs),
        "detail": "; ".join(
            f"c={c}: {a['images_per_s']:.1f} vs {b['images_per_s']:.1f} img/s "
            f"({a['images_per_s'] / max(b['images_per_s'], 1e-9):.2f}x)"
            for c, a, b in pairs
        ),
    }


def check_tail_latency(by_mode: dict[str, list[dict[str, Any]]]) -> Check:
    """3. p99 / p50 < 3 below saturation."""
    name = "p99/p50 < 3x below saturation"
    below = []
    for cells in by_mode.values():
        limit = knee(cells)
        below += [r for r in cells if r["concurrency"] <= limit and r["p99_over_p50"]]
    if not below:
        return {"name": name, "passed": None, "detail": "no data"}
    worst = max(below, key=lambda r: r["p99_over_p50"])
    failing = [r for r in below if r["p99_over_p50"] >= 3]
    detail = (
        f"worst {worst['p99_over_p50']:.2f}x ({worst['mode']} c={worst['concurrency']}, "
        f"p50 {worst['p50_ms']:.0f} ms, p99 {worst['p99_ms']:.0f} ms) over "
        + ", ".join(f"{r['mode']} c={r['concurrency']}" for r in below)
    )
    if failing:
        detail += "; over 3x: " + ", ".join(
            f"{r['mode']} c={r['concurrency']} {r['p99_over_p50']:.2f}x" for r in failing
        )
    return {"name": name, "passed": not failing, "detail": detail}


def check_answers(rows: Sequence[dict[str, Any]]) -> Check:
    """4. correctness."""
    bad = [r for r in rows if r["errors"] or r["warmup_errors"]]
    return {
        "name": "every answer a PNG of the input's size",
        "passed": not bad,
        "detail": "; ".join(
            f"{r['mode']} c={r['concurrency']}: {r['error_kinds'] or ''}"
            f"{' warm-up ' + str(r['warmup_errors']) if r['warmup_errors'] else ''}"
            for r in bad
        )
        or f"{sum(r['ok'] for r in rows)} answers checked",
    }


def checks(rows: Sequence[dict[str, Any]], target_c: int = 32) -> list[Check]:
    by_mode: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_mode.setdefault(r["mode"], []).append(r)
    return [
        check_vs_engine(rows, by_mode, target_c),
        check_batching(by_mode),
        check_tail_latency(by_mode),
        check_answers(rows),
    ]


def print_report(result: dict[str, Any]) -> None:
    engine = Table("engine (in-process)", "threads", "batch", "img/s", title="reference")
    for r in result["engine"]:
        label = f"{r['processes']} x Engine.translate"
        again = f" (after: {r['images_per_s_after']:.1f})" if "images_per_s_after" in r else ""
        engine.add_row(label, str(r["threads"]), str(r["batch"]), f"{r['images_per_s']:.1f}{again}")
    err.print(engine)
    table = Table(
        "mode",
        "c",
        "img/s",
        "vs engine",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "p99/p50",
        "batch",
        "errors",
        "client cores",
        "service cores",
        "API CPU ms",
        "worker CPU ms",
        title=f"served over HTTP ({result['size']}x{result['size']} {result['format']})",
    )
    for r in result["rows"]:
        table.add_row(
            r["mode"],
            str(r["concurrency"]),
            f"{r['images_per_s']:.1f}",
            f"{r['vs_engine']:.0%}" if r.get("vs_engine") is not None else "",
            f"{r['p50_ms']:.0f}",
            f"{r['p95_ms']:.0f}",
            f"{r['p99_ms']:.0f}",
            f"{r['p99_over_p50']:.2f}" if r["p99_over_p50"] else "",
            f"{r['mean_batch']:.1f}" if r.get("mean_batch") else "",
            str(r["errors"]) if not r["warmup_errors"] else f"{r['errors']} (+warm-up)",
            f"{r['client_cores']:.2f}" if r["client_cores"] is not None else "",
            f"{r['service_cores']:.2f}" if r["service_cores"] is not None else "",
            f"{r['api_cpu_ms']:.2f}" if "api_cpu_ms" in r else "",
            ", ".join(f"{ms:.2f}" for ms in r.get("worker_cpu_ms", [])),
        )
    err.print(table)
    for r in result["rows"]:
        for role, found in r.get("profile", {}).items():
            err.print(f"profile {r['mode']} c={r['concurrency']} {role}: {found['samples']} "
                      "samples; on the stack: " + ", ".join(
                          f"{name} {share:.0%}" for name, share in found["inclusive"][:12]),
                      highlight=False, markup=False)  # fmt: skip
    err.print(
        f"CPU: {result['cpu']} x {result['cores']} cores; engine threads per process: "
        + ", ".join(
            f"{m} {t['engine_processes']}x{t['engine_threads']}"
            for m, t in result["threads"].items()
        )
    )
    for check in result["checks"]:
        verdict = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "[yellow]SKIP[/]"}
        err.print(f"{verdict[check['passed']]} {check['name']}: {check['detail']}", highlight=False)


# --- main ---------------------------------------------------------------------------------------

FULL = {"concurrency": "1,8,32,128", "size": 128, "seconds": 10.0, "warmup": 2.0}
QUICK = {"concurrency": "1,8", "size": 64, "seconds": 1.5, "warmup": 0.5}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated, of " + ", ".join(MODES)
    )
    parser.add_argument("--concurrency", default=None, help=f"default {FULL['concurrency']}")
    parser.add_argument(
        "--size", type=int, default=None, help=f"image side (default {FULL['size']})"
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="measured per cell (default 10)"
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help="measure this many requests per cell instead of --seconds",
    )
    parser.add_argument(
        "--warmup", type=float, default=None, help="warm-up seconds per cell (default 2)"
    )
    parser.add_argument(
        "--generator",
        default="resnet_6blocks",
        help="or `identity`: a graph that costs nothing, to measure serving's own cost",
    )
    parser.add_argument("--format", default="png", choices=["png", "jpeg"], help="of requests")
    parser.add_argument("--ngf", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=8, help="batching on (UNPAIRED_MAX_BATCH)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="UNPAIRED_MAX_WAIT_MS")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--cores",
        type=int,
        default=None,
        help="thread budget (default: the CPUs this process may use)",
    )
    parser.add_argument(
        "--engine-seconds",
        type=float,
        default=None,
        help="engine reference per row (default --seconds)",
    )
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="sample every service process with py-spy during each cell; raw stacks here",
    )
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy server/worker logs here")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 64 px, c = 1,8, 1.5 s cells"
    )
    args = parser.parse_args()
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.engine_seconds is None:
        args.engine_seconds = min(args.seconds, 5.0) if args.requests is None else 5.0
    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    return args


@dataclass
class Reference:
    """The engine alone, in this process, on the decoded inputs: one rate per (engine
    processes, threads per engine, batch)."""

    store: ModelStore
    decoded: Sequence[DecodedImage]
    device: str
    seconds: float
    described: dict[str, object] = field(default_factory=dict)

    def rate(self, key: tuple[int, int, int]) -> float:
        processes, threads, batch = key
        rate, described = engine_rate(
            self.store,
            self.decoded,
            processes=processes,
            threads=threads,
            batch=batch,
            device=self.device,
            seconds=self.seconds,
        )
        self.described.update(described)
        return rate

    def rows(self, keys: Sequence[tuple[int, int, int]]) -> list[dict[str, Any]]:
        out = []
        for key in keys:
            rate = self.rate(key)
            out.append(
                {
                    "processes": key[0],
                    "threads": key[1],
                    "batch": key[2],
                    "images_per_s": round(rate, 3),
                }
            )
            err.print(
                f"engine {key[0]} x {key[1]} threads, batch {key[2]}: {rate:.1f} img/s",
                highlight=False,
            )
        return out


def measure_mode(
    mode: Mode,
    settings: dict[str, object],
    folder: Path,
    payloads: Sequence[tuple[bytes, tuple[int, int]]],
    reference_rate: float,
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """Every concurrency level of one mode, on one service started for it."""
    rows = []
    err.print(f"starting {mode.name} ...", highlight=False)
    with running_service(mode.workers, settings, folder, mode.api_processes) as service:
        for level in [int(c) for c in args.concurrency.split(",")]:
            profile = None
            if args.profile:
                profile = Profile(service, args.profile / f"{mode.name}-c{level}")
            row = {"mode": mode.name, **measure_cell(service, payloads, level, args)}
            if profile:
                row["profile"] = profile.summary()
            row["engine_images_per_s"] = reference_rate
            row["vs_engine"] = round(row["images_per_s"] / reference_rate, 3)
            rows.append(row)
            err.print(
                f"  c={level:4d}: {row['images_per_s']:7.1f} img/s "
                f"({row['vs_engine']:.0%} of engine), p50 {row['p50_ms']:.0f} ms, "
                f"p99 {row['p99_ms']:.0f} ms, batch {row.get('mean_batch')}, "
                f"errors {row['errors']}",
                highlight=False,
            )
            if row["errors"] or row["warmup_errors"]:
                err.print(f"  errors: {row['error_kinds']} {row['warmup_errors']}")
                for process in service.processes:
                    err.print(process.tail(1500), highlight=False, markup=False)
    return rows


def service_settings(folder: Path, args: argparse.Namespace) -> dict[str, object]:
    """The settings every mode shares (`UNPAIRED_*` of its processes)."""
    levels = [int(c) for c in args.concurrency.split(",")]
    return {
        "store": folder / "store",
        "cache_dir": folder / "cache",
        "models": MODEL,
        "device": args.device,
        "max_wait_ms": args.max_wait_ms,
        "max_queue": max(256, 4 * max(levels)),
        "request_timeout_s": REQUEST_TIMEOUT_S,
        "visibility_timeout_s": VISIBILITY_TIMEOUT_S,
        "log_level": "warning",
        "log_format": "text",
    }


def describe_run(
    args: argparse.Namespace,
    cores: int,
    inputs: int,
    max_queue: object,
    described: dict[str, object],
    threads: dict[str, dict[str, int]],
) -> dict[str, Any]:
    """What the result's numbers were measured on and with."""
    return {
        "benchmark": "service",
        "cpu": cpu_name(),
        "cores": cores,
        "engine_device": described,
        "model": f"{args.generator} ngf {args.ngf} (random weights)",
        "size": args.size,
        "format": args.format.upper(),
        "inputs": f"{inputs} {args.format.upper()} crops of skimage {', '.join(PHOTOS)}",
        "settings": {
            "max_batch": args.max_batch,
            "max_wait_ms": args.max_wait_ms,
            "max_queue": max_queue,
            "request_timeout_s": REQUEST_TIMEOUT_S,
            "visibility_timeout_s": VISIBILITY_TIMEOUT_S,
        },
        "threads": threads,
        "client": {
            "library": f"httpx {httpx.__version__}",
            "protocol": "HTTP/1.1 keep-alive, one connection per in-flight request",
            "warmup_s": args.warmup,
            **({"requests": args.requests} if args.requests else {"seconds": args.seconds}),
        },
    }


def main() -> None:
    args = parse_args()
    terminate_on_sigterm()
    modes = [MODES[m] for m in args.modes.split(",")]
    cores = args.cores or len(os.sched_getaffinity(0))
    import torch

    fp16 = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    err.print(f"CPU: {cpu_name()} x {cores} cores", highlight=False)

    def key(mode: Mode) -> tuple[int, int, int]:  # (engine processes, threads, batch)
        threads = max(1, cores // mode.engine_processes)
        return mode.engine_processes, threads, args.max_batch if mode.batching else 1

    with tempfile.TemporaryDirectory(prefix="bench-service-") as scratch:
        folder = Path(scratch)
        err.print(f"exporting {args.generator} ngf {args.ngf} ...")
        store = ModelStore(
            export_bench_model(folder / "store", args.generator, args.ngf, fp16=fp16)
        )
        pngs = photo_crops(args.size, args.format.upper())
        payloads = [(data, image_size(data) or (0, 0)) for data in pngs]
        reference = Reference(
            store, [decode_image(data) for data in pngs], args.device, args.engine_seconds
        )
        # the reference: one row per (engine processes, threads, batch) the modes need
        engine_rows = reference.rows(sorted({key(m) for m in modes}))
        rates = {(r["processes"], r["threads"], r["batch"]): r["images_per_s"] for r in engine_rows}
        base = service_settings(folder, args)
        rows: list[dict[str, Any]] = []
        for mode in modes:
            _, threads, batch = key(mode)
            settings = {**base, "threads": threads, "max_batch": batch}
            logs = folder / "logs" / mode.name
            rows += measure_mode(mode, settings, logs, payloads, rates[key(mode)], args)
            if args.keep_logs:
                shutil.copytree(folder / "logs", args.keep_logs, dirs_exist_ok=True)
        # the reference again: did the machine change speed while we measured?
        for r in engine_rows:
            r["images_per_s_after"] = round(
                reference.rate((r["processes"], r["threads"], r["batch"])), 3
            )

    used = {
        m.name: {"engine_processes": m.engine_processes, "engine_threads": key(m)[1]} for m in modes
    }
    result = describe_run(args, cores, len(pngs), base["max_queue"], reference.described, used)
    result.update(engine=engine_rows, rows=rows, checks=checks(rows))
    print_report(result)
    report_json(result, args.json_out)


if __name__ == "__main__":
    main()
