"""The fault schedule: one fault every `every` seconds, in a fixed cycle, each lasting long
enough that the next arrives while the service is still recovering from it."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.soak.cluster import Cluster

__all__ = ["FAULTS", "FaultWindow", "run_schedule", "schedule"]


@dataclass(frozen=True)
class FaultWindow:
    name: str
    start: float  # seconds into the soak
    end: float  # when the fault itself was over (the recovery goes on after it)


def _kill_worker(cluster: Cluster, slot: int) -> None:
    cluster.signal_worker(slot, signal.SIGKILL)  # OOM killer, a node lost


def _stop_worker(cluster: Cluster, slot: int) -> None:
    cluster.signal_worker(slot, signal.SIGTERM)  # a rolling update, a scale-down


def _pause_worker(cluster: Cluster, slot: int, seconds: float) -> None:
    """SIGSTOP past the visibility timeout (a VM frozen, a GC pause), then SIGCONT."""
    cluster.signal_worker(slot, signal.SIGSTOP)
    time.sleep(seconds)  # the pause itself
    cluster.signal_worker(slot, signal.SIGCONT)


#: name -> what it does (the cluster, the worker slot it hits, the visibility timeout)
FAULTS: dict[str, Callable[[Cluster, int, float], None]] = {
    "SIGKILL worker": lambda c, slot, vt: _kill_worker(c, slot),
    "restart Redis": lambda c, slot, vt: c.restart_redis(),
    "SIGTERM worker": lambda c, slot, vt: _stop_worker(c, slot),
    "pause worker": lambda c, slot, vt: _pause_worker(c, slot, vt + 5),
    "restart API": lambda c, slot, vt: c.restart_api(),
}


def schedule(first: float, every: float, until: float) -> list[tuple[float, str]]:
    """(seconds in, fault) from `first` on, one every `every`, cycling through the worker and
    Redis faults; the API is restarted once, a quarter of the way in, so that the API that
    follows runs long enough to show any growth of its memory."""
    cycle = [name for name in FAULTS if name != "restart API"]
    times = [first + k * every for k in range(int((until - first) // every) + 1)]
    plan = [(at, cycle[k % len(cycle)]) for k, at in enumerate(times)]
    if plan:
        quarter = min(range(len(plan)), key=lambda k: abs(plan[k][0] - until / 4))
        plan[quarter] = (plan[quarter][0], "restart API")
    return plan


def run_schedule(
    cluster: Cluster,
    plan: list[tuple[float, str]],
    *,
    started: float,
    visibility_timeout_s: float,
    stop: threading.Event,
    windows: list[FaultWindow],
) -> None:
    """The faults of `plan` at their times; worker faults hit worker 1, so worker 0 runs the
    whole soak and shows any growth of its memory."""
    for at, name in plan:
        if stop.wait(max(0.0, started + at - time.monotonic())):
            return
        begin = time.monotonic() - started
        FAULTS[name](cluster, 1, visibility_timeout_s)
        windows.append(FaultWindow(name, begin, time.monotonic() - started))
