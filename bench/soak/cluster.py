"""The processes of a distributed deployment on one machine, kept running as an orchestrator
keeps its pods: Redis with AOF on a fixed port, one `unpaired serve`, workers started again when
they die; and what a fault does to them (SIGKILL, SIGTERM, SIGSTOP/SIGCONT, restarts)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import Child, service_env, unpaired, wait_ready
from cli.local_redis import LocalRedis, free_port

__all__ = ["Cluster", "ProcessSample"]


@dataclass(frozen=True)
class ProcessSample:
    at: float  # seconds into the soak
    role: str  # api, worker-0, worker-1, redis
    pid: int
    rss_mb: float
    fds: int


def _sample(role: str, pid: int, at: float) -> ProcessSample | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None  # it ended between the listing and the read
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return ProcessSample(at, role, pid, rss / 1024, fds)


@dataclass
class Cluster:
    """Redis (AOF), the API and `workers` workers, in `folder`."""

    folder: Path
    settings: Mapping[str, object]
    workers: int = 2
    redis: LocalRedis = field(init=False)
    api: Child | None = field(init=False, default=None)
    slots: list[Child | None] = field(init=False)
    port: int = field(default_factory=free_port)
    restarts: dict[str, int] = field(default_factory=dict)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _keepers: list[threading.Thread] = field(default_factory=list)
    _generation: int = 0

    def __post_init__(self) -> None:
        self.redis = LocalRedis(self.folder / "redis", persistent=True)
        self.slots = [None] * self.workers

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return service_env({**self.settings, "broker_url": self.redis.url})

    def start(self) -> None:
        self.redis.start()
        for slot in range(self.workers):
            keeper = threading.Thread(target=self._keep, args=(slot,), daemon=True)
            keeper.start()
            self._keepers.append(keeper)
        self.start_api()
        wait_ready(self.url, [c for c in (self.api,) if c], workers=self.workers)

    def _keep(self, slot: int) -> None:
        """Worker `slot`, started again whenever it exits (after a SIGKILL, or a SIGTERM)."""
        generation = 0
        while not self._stopping.is_set():
            log = self.folder / f"worker-{slot}.{generation}.log"
            child = unpaired(["worker", "--name", f"w{slot}.{generation}"], self.env, log)
            self.slots[slot] = child
            child.popen.wait()
            if not self._stopping.is_set():
                self.restarts[f"worker-{slot}"] = self.restarts.get(f"worker-{slot}", 0) + 1
            generation += 1

    def start_api(self) -> None:
        self._generation += 1
        log = self.folder / f"api.{self._generation}.log"
        self.api = unpaired(["serve", "--port", str(self.port)], self.env, log)

    def restart_api(self) -> None:
        """SIGTERM (in-flight requests are answered), then a new API process on the port."""
        assert self.api is not None
        self.api.terminate()
        self.api.wait_or_kill(90)
        self.restarts["api"] = self.restarts.get("api", 0) + 1
        self.start_api()
        wait_ready(self.url, [self.api])

    def signal_worker(self, slot: int, signum: signal.Signals) -> None:
        child = self.slots[slot]
        if child is not None and child.popen.poll() is None:
            child.popen.send_signal(signum)

    def restart_redis(self) -> None:
        self.redis.restart()  # SIGTERM: it writes its AOF; the same port, the same queue
        self.restarts["redis"] = self.restarts.get("redis", 0) + 1

    def samples(self, at: float) -> list[ProcessSample]:
        """Memory and descriptors of every process now (a worker's own children included
        in neither: the workers use threads)."""
        found = []
        processes = {"api": self.api, "redis": self.redis}
        processes |= {f"worker-{i}": child for i, child in enumerate(self.slots)}
        for role, process in processes.items():
            pid = _pid(process)
            if pid is not None and (sample := _sample(role, pid, at)) is not None:
                found.append(sample)
        return found

    def stop(self) -> None:
        self._stopping.set()
        for child in self.slots:
            if child is not None:
                child.popen.send_signal(signal.SIGCONT)  # a paused one could not stop
                child.terminate()
        for child in self.slots:
            if child is not None:
                child.wait_or_kill(60)
        if self.api is not None:
            self.api.terminate()
            self.api.wait_or_kill(60)
        self.redis.stop()


def _pid(process: object) -> int | None:
    if isinstance(process, Child):
        return process.popen.pid if process.popen.poll() is None else None
    if isinstance(process, LocalRedis):
        return process.pid
    return None
