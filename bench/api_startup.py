"""Start-up time and resident memory of the API process in distributed mode.

With `UNPAIRED_BROKER_URL` set, `unpaired serve` loads no model: it answers `/v1/models` from
the store's catalog and hands translations to the workers. How fast it comes up and how much
memory it holds decide how cheaply it scales out (and whether it needs torch at all).

Each run starts `python -m cli serve` the way users start it (`bench.harness.unpaired`: the
caller's `UNPAIRED_*` dropped; `UNPAIRED_BROKER_URL` of a private redis-server, never the
shared one, `UNPAIRED_STORE`, `UNPAIRED_PORT`, a fresh `UNPAIRED_JOBS_DIR`,
`UNPAIRED_LOG_LEVEL=warning`) and times it from just before the process is spawned to the first
200 answer of `GET /v1/models` (polled every 20 ms, 1 s per request). Half a second later it
reads the process's resident memory (VmRSS) and whether torch's or onnxruntime's libraries are
mapped into it (/proc/PID/maps), then stops it (SIGTERM). No worker runs: none is needed to
list the models. The store is a bench model exported into a temporary folder, or `--store`.
The medians of `--runs` runs are reported; `--baseline` shows an earlier result beside them
(this benchmark's JSON, or any with `startup_s` and `rss_mib` lists). Start-up is CPU-bound
(imports), so other work on the machine slows it: the 1-minute load average is recorded, and
`--source` measures another checkout (e.g. `git archive <commit>`) the same way, so that a
before and an after can be measured under the same conditions.

    python -m bench.api_startup                                   # 5 runs
    python -m bench.api_startup --store STORE --baseline before.json --json-out after.json
    python -m bench.api_startup --source /tmp/old --json-out before.json  # an older checkout
    python -m bench.api_startup --runs 1                          # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from bench.harness import (
    ROOT,
    cpu_name,
    err,
    export_bench_model,
    report_json,
    service_env,
    stop_all,
    terminate_on_sigterm,
    unpaired,
    wait_ready,
)
from cli.local_redis import LocalRedis, free_port

POLL_S = 0.02
SETTLE_S = 0.5  # between the first answer and reading the memory
LIBRARIES = ("libtorch", "onnxruntime")


def one_run(index: int, broker_url: str, store: Path, folder: Path, source: Path) -> dict[str, Any]:
    """Start `unpaired serve`, time it to its first /v1/models 200, read its memory, stop it."""
    port = free_port()
    env = service_env(
        {
            "broker_url": broker_url,
            "store": store,
            "port": port,
            "jobs_dir": folder / f"jobs-{index}",
            "log_level": "warning",
        }
    )
    started = time.perf_counter()
    server = unpaired(["serve"], env, folder / f"server-{index}.log", source)
    try:
        wait_ready(
            f"http://127.0.0.1:{port}",
            [server],
            path="/v1/models",
            poll_s=POLL_S,
            request_timeout_s=1.0,
        )
        startup = time.perf_counter() - started
        time.sleep(SETTLE_S)
        return {
            "startup_s": round(startup, 3),
            "rss_mib": round(server.rss_mib(), 1),
            "mapped": server.mapped(*LIBRARIES),
        }
    finally:
        stop_all([server])


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "startup_s": [r["startup_s"] for r in runs],
        "median_startup_s": round(statistics.median(r["startup_s"] for r in runs), 3),
        "rss_mib": [r["rss_mib"] for r in runs],
        "median_rss_mib": round(statistics.median(r["rss_mib"] for r in runs), 1),
        "torch_loaded": any(r["mapped"]["libtorch"] for r in runs),
        "onnxruntime_loaded": any(r["mapped"]["onnxruntime"] for r in runs),
    }


def print_report(result: dict[str, Any], baseline: dict[str, Any] | None) -> None:
    runs = Table("run", "start-up s", "RSS MiB", "torch", "onnxruntime", title="API start-up")
    for index, run in enumerate(result["runs"], 1):
        loaded = ["yes" if run["mapped"][lib] else "no" for lib in LIBRARIES]
        runs.add_row(str(index), f"{run['startup_s']:.3f}", f"{run['rss_mib']:.1f}", *loaded)
    err.print(runs)
    summary = Table("", "median start-up s", "median RSS MiB", "runs (s)", title="medians")
    if baseline is not None:
        summary.add_row(
            "before (--baseline)",
            f"{baseline['median_startup_s']:.3f}",
            f"{baseline['median_rss_mib']:.1f}",
            ", ".join(f"{s:.3f}" for s in baseline["startup_s"]),
        )
    summary.add_row(
        "this run",
        f"{result['median_startup_s']:.3f}",
        f"{result['median_rss_mib']:.1f}",
        ", ".join(f"{s:.3f}" for s in result["startup_s"]),
    )
    err.print(summary)
    load = result["load_average"]
    err.print(
        f"CPU: {result['cpu']} x {result['cores']} cores; load average (1 min) "
        f"{load['before']:.2f} before, {load['after']:.2f} after",
        highlight=False,
    )


def load_baseline(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    data.setdefault("median_startup_s", statistics.median(data["startup_s"]))
    data.setdefault("median_rss_mib", statistics.median(data["rss_mib"]))
    return data


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--store", type=Path, default=None, help="a model store (default: a bench model)"
    )
    parser.add_argument("--baseline", type=Path, default=None, help="an earlier result (JSON)")
    parser.add_argument(
        "--source",
        type=Path,
        default=ROOT,
        help="run `python -m cli serve` in this checkout of the project (e.g. an older commit "
        "from `git archive`), with this interpreter (default: this checkout)",
    )
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    terminate_on_sigterm()
    baseline = load_baseline(args.baseline)
    cores = len(os.sched_getaffinity(0))
    load_before = os.getloadavg()[0]
    err.print(f"CPU: {cpu_name()} x {cores} cores, load {load_before:.2f}", highlight=False)
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as scratch:
        folder = Path(scratch)
        store = args.store
        if store is None:
            err.print("exporting resnet_6blocks ngf 16 ...")
            store = export_bench_model(folder / "store", "resnet_6blocks", 16, fp16=False)
        runs = []
        with LocalRedis(folder / "redis") as redis_server:
            for index in range(args.runs):
                runs.append(
                    one_run(index, redis_server.url, store.resolve(), folder, args.source.resolve())
                )
                err.print(
                    f"  run {index + 1}: {runs[-1]['startup_s']:.3f} s, "
                    f"{runs[-1]['rss_mib']:.1f} MiB",
                    highlight=False,
                )
    result: dict[str, Any] = {
        "benchmark": "api_startup",
        "cpu": cpu_name(),
        "cores": cores,
        "python": platform.python_version(),
        "mode": "distributed (private redis-server, no worker)",
        "measured": "spawn of `python -m cli serve` to its first 200 of GET /v1/models; "
        f"VmRSS {SETTLE_S} s later",
        "source": "this checkout" if args.source.resolve() == ROOT else str(args.source),
        "store": "bench model (resnet_6blocks ngf 16)" if args.store is None else str(args.store),
        # other work on the machine slows start-up (imports are CPU-bound): 1-minute load
        "load_average": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        **summarise(runs),
        "runs": runs,
    }
    if baseline is not None:
        result["baseline"] = {k: v for k, v in baseline.items() if k not in ("runs", "baseline")}
    print_report(result, baseline)
    report_json(result, args.json_out)


if __name__ == "__main__":
    main()
