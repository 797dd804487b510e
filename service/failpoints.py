"""Faults on purpose, at named places, for the fault tests and the soak (never in production).

A fault that must happen at an exact point of a real process (a worker killed while it holds a
chunk, an image that crashes whatever translates it, a storage error on the second attempt)
cannot be timed from outside without races. ``UNPAIRED_FAILPOINTS`` (a JSON list of
:class:`~service.settings.Failpoint`) arms such faults in every process that reads the settings,
in the way of etcd's gofail or TiKV's fail-rs; unset, :func:`hit` is one dictionary lookup.

Places (``at``), each passed the name of what it is about to handle:

- ``decode``: a request's image is about to be decoded (its name and request id);
- ``batch``: the engine is about to run a batch (its model, and ``bulk`` or ``interactive``);
- ``step``: a large image is about to run its next tile step (``<height>x<width>``);
- ``chunk``: a bulk chunk is about to run (``<job id>/<chunk index>``).

Actions (``do``): ``wait`` until the file ``path`` exists (after writing ``<path>.reached``,
so a test knows the process got there), ``error`` (the place's own kind of failure), or
``crash`` (SIGKILL of this process, as a segfault or the OOM killer would).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from service.settings import Failpoint, FailpointSite

__all__ = ["FailpointError", "arm", "disarm", "hit"]

log = logging.getLogger("unpaired.failpoints")

_armed: dict[FailpointSite, list[Failpoint]] = {}
_passes: dict[int, int] = defaultdict(int)  # id(failpoint) -> matching hits so far
_lock = threading.Lock()


class FailpointError(RuntimeError):
    """An error a failpoint raised where the place has no kind of its own."""


def arm(failpoints: Iterable[Failpoint]) -> Callable[[], None]:
    """Arm these failpoints in this process (replacing any armed before); returns what
    disarms them again (nothing, when there were none to arm)."""
    failpoints = list(failpoints)
    if not failpoints:
        return lambda: None
    armed: dict[FailpointSite, list[Failpoint]] = defaultdict(list)
    for failpoint in failpoints:
        armed[failpoint.at].append(failpoint)
    with _lock:
        _armed.clear()
        _armed.update(armed)
        _passes.clear()
    for failpoint in failpoints:
        log.warning("failpoint armed: %s", failpoint.model_dump(exclude_defaults=True))
    return disarm


def disarm() -> None:
    with _lock:
        _armed.clear()
        _passes.clear()


def hit(
    site: FailpointSite, names: str | Sequence[str], *, error: type[Exception] = FailpointError
) -> None:
    """Act on the failpoints armed at `site` whose `match` is in one of `names`."""
    if not _armed:
        return
    shown = [names] if isinstance(names, str) else list(names)
    for failpoint in _triggered(site, shown):
        what = f"failpoint {site} ({failpoint.do}) at {', '.join(shown)}"
        log.warning(what)
        if failpoint.do == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        elif failpoint.do == "error":
            raise error(f"{what}: an injected fault")
        else:
            _wait(failpoint, what)


def _triggered(site: FailpointSite, names: list[str]) -> list[Failpoint]:
    """The failpoints of `site` that act on this hit (counting it against `after`/`times`)."""
    acting = []
    with _lock:
        for failpoint in _armed.get(site, ()):
            if not any(failpoint.match in name for name in names):
                continue
            _passes[id(failpoint)] += 1
            seen = _passes[id(failpoint)] - failpoint.after
            if seen >= 1 and (failpoint.times is None or seen <= failpoint.times):
                acting.append(failpoint)
    return acting


def _wait(failpoint: Failpoint, what: str) -> None:
    assert failpoint.path is not None  # the settings require a path for `wait`
    gate = Path(failpoint.path)
    with Path(f"{gate}.reached").open("a") as reached:
        reached.write(f"{os.getpid()} {what}\n")
    deadline = time.monotonic() + failpoint.timeout_s
    while not gate.exists():
        if time.monotonic() > deadline:
            raise FailpointError(f"{what}: {gate} did not appear in {failpoint.timeout_s} s")
        time.sleep(0.01)  # simulated work: this failpoint holds the process here
