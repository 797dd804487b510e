"""What the soak found: counts of every outcome, latency outside the fault windows, each
process's memory and descriptors from warm-up to the end; a table, JSON and a plot."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from bench.soak.cluster import ProcessSample
from bench.soak.faults import FaultWindow
from bench.soak.load import JobRecord, RequestRecord

__all__ = ["plot", "summarise", "table"]

#: After a fault ends, the service recovers for this long: latency is not counted there.
SETTLE_S = 15.0


def _in_fault(at: float, windows: Sequence[FaultWindow]) -> bool:
    return any(w.start <= at <= w.end + SETTLE_S for w in windows)


def _latency(records: Sequence[RequestRecord], windows: Sequence[FaultWindow]) -> dict[str, Any]:
    quiet = [
        r.seconds for r in records if r.outcome == "correct" and not _in_fault(r.sent, windows)
    ]
    if not quiet:
        return {"requests": 0}
    ms = np.array(quiet) * 1000
    return {
        "requests": len(quiet),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
    }


def _processes(samples: Sequence[ProcessSample], warmup_s: float) -> list[dict[str, Any]]:
    """Per process (role and pid): RSS and descriptors after warm-up and at its last sample."""
    rows = []
    for role, pid in sorted({(s.role, s.pid) for s in samples}):
        mine = [s for s in samples if s.pid == pid and s.role == role]
        warm = [s for s in mine if s.at >= mine[0].at + warmup_s] or mine[-1:]
        first, last = warm[0], mine[-1]
        rows.append(
            {
                "role": role,
                "pid": pid,
                "from_s": round(first.at),
                "to_s": round(last.at),
                "rss_mb": [round(first.rss_mb, 1), round(last.rss_mb, 1)],
                "rss_growth_pct": round(100 * (last.rss_mb - first.rss_mb) / first.rss_mb, 1),
                "fds": [first.fds, last.fds],
            }
        )
    return rows


def summarise(
    *,
    minutes: float,
    requests: Sequence[RequestRecord],
    jobs: Sequence[JobRecord],
    windows: Sequence[FaultWindow],
    samples: Sequence[ProcessSample],
    restarts: dict[str, int],
    warmup_s: float,
) -> dict[str, Any]:
    outcomes = Counter(r.outcome for r in requests)
    totals = {
        k: sum(getattr(j, k) for j in jobs)
        for k in ("total", "done", "failed", "lost", "duplicated", "wrong_bytes")
    }
    processes = _processes(samples, warmup_s)
    return {
        "minutes": minutes,
        "targets": _targets(outcomes, totals, jobs, processes, minutes),
        "interactive": {"sent": len(requests), **{k: outcomes.get(k, 0) for k in (
            "correct", "wrong_bytes", "documented_error", "undocumented_error", "refused",
            "lost")}},
        "interactive_problems": sorted({r.detail for r in requests if r.outcome not in (
            "correct", "documented_error")})[:20],
        "latency_outside_faults": _latency(requests, windows),
        "jobs": {"jobs": len(jobs), "ended": sum(j.state != "never ended" for j in jobs),
                 "states": dict(Counter(j.state for j in jobs)), **totals},
        "faults": [asdict(w) for w in windows],
        "restarts": restarts,
        "processes": processes,
    }  # fmt: skip


def _targets(
    outcomes: Counter[str],
    totals: dict[str, int],
    jobs: Sequence[JobRecord],
    processes: list[dict[str, Any]],
    minutes: float,
) -> dict[str, Any]:
    """Issue 32's targets, each with what was measured. Memory and descriptors are judged on
    the processes that ran at least half the soak (the others were restarted by a fault)."""
    long_lived = [p for p in processes if p["to_s"] - p["from_s"] >= minutes * 30]
    growth = {f"{p['role']} {p['pid']}": p["rss_growth_pct"] for p in long_lived}
    fds = {f"{p['role']} {p['pid']}": p["fds"][1] - p["fds"][0] for p in long_lived}
    return {
        "interactive_lost_0": outcomes.get("lost", 0) == 0,
        "interactive_wrong_bytes_0": outcomes.get("wrong_bytes", 0) == 0,
        "job_images_lost_0": totals["lost"] == 0,
        "job_images_duplicated_0": totals["duplicated"] == 0,
        "every_job_finished": all(j.state != "never ended" for j in jobs),
        "rss_growth_under_5_pct": all(g < 5 for g in growth.values()),
        "rss_growth_pct": growth,
        "no_descriptor_growth": all(d <= 0 for d in fds.values()),
        "descriptor_growth": fds,
    }


def table(summary: dict[str, Any], cpu: str) -> Table:
    shown = Table("measure", "value", title=f"Soak, {summary['minutes']} minutes, {cpu}")
    for key, value in summary["interactive"].items():
        shown.add_row(f"interactive {key}", str(value))
    for key, value in summary["latency_outside_faults"].items():
        shown.add_row(f"outside faults: {key}", str(value))
    for key, value in summary["jobs"].items():
        shown.add_row(f"jobs {key}", str(value))
    shown.add_row("faults", str(dict(Counter(f["name"] for f in summary["faults"]))))
    for key, value in summary["targets"].items():
        shown.add_row(f"target {key}", str(value))
    for row in summary["processes"]:
        if row["to_s"] - row["from_s"] < 60:
            continue  # restarted by a fault soon after (all of them are in the JSON)
        shown.add_row(
            f"{row['role']} (pid {row['pid']}, {row['from_s']}-{row['to_s']} s)",
            f"RSS {row['rss_mb'][0]} -> {row['rss_mb'][1]} MB ({row['rss_growth_pct']:+}%), "
            f"fds {row['fds'][0]} -> {row['fds'][1]}",
        )
    return shown


def plot(
    path: Path,
    requests: Sequence[RequestRecord],
    windows: Sequence[FaultWindow],
    samples: Sequence[ProcessSample],
) -> None:
    """Latency of every request over time (by outcome) above each role's RSS, faults shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
    colours = {"correct": "tab:blue", "documented_error": "tab:orange", "refused": "tab:gray"}
    for outcome in sorted({r.outcome for r in requests}):
        mine = [r for r in requests if r.outcome == outcome]
        top.scatter([r.sent / 60 for r in mine], [r.seconds * 1000 for r in mine], s=3,
                    label=outcome, color=colours.get(outcome, "tab:red"))  # fmt: skip
    top.set_yscale("log")
    top.set_ylabel("latency (ms)")
    top.legend(loc="upper right", markerscale=4)
    for role in sorted({s.role for s in samples}):
        held = [s for s in samples if s.role == role]
        bottom.plot([s.at / 60 for s in held], [s.rss_mb for s in held], label=role)
    bottom.set_ylabel("RSS (MB)")
    bottom.set_xlabel("minutes")
    bottom.legend(loc="upper left")
    for window in windows:
        for axis in (top, bottom):
            axis.axvspan(window.start / 60, (window.end + SETTLE_S) / 60, color="0.9", zorder=0)
        top.annotate(window.name, (window.start / 60, 1.0), xycoords=("data", "axes fraction"),
                     rotation=90, fontsize=6, va="top")  # fmt: skip
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
