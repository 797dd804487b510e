"""Real processes for end-to-end tests: `unpaired serve`, `unpaired worker`, a private Redis.

Everything is started the way a user (or docker-compose) starts it: the `unpaired` command with
`UNPAIRED_*` variables, nothing else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from cli.launch import API_COMMAND, WORKER_COMMAND, python_command
from cli.local_redis import free_port
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def service_env(store: Path, **settings: object) -> dict[str, str]:
    """The environment of a server or worker: this one, plus UNPAIRED_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNPAIRED_")}
    env.update(
        {
            "UNPAIRED_STORE": str(store),
            "UNPAIRED_THREADS": "1",
            "UNPAIRED_LOG_FORMAT": "json",
            "UNPAIRED_CACHE_DIR": str(store.parent / "cache"),
            # each server its own job folder and database (one server per SQLite database)
            "UNPAIRED_JOBS_DIR": tempfile.mkdtemp(prefix="jobs-", dir=store.parent),
        }
    )
    env.update({f"UNPAIRED_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def unpaired_process(
    command: tuple[str, ...], env: Mapping[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """`command` (see cli.launch) as deployments run it: configured by `env` alone."""
    handle = log.open("ab")
    return subprocess.Popen(
        python_command(command), env=dict(env), cwd=ROOT, stdout=handle, stderr=handle
    )


def worker_process(env: Mapping[str, str], log: Path, name: str) -> subprocess.Popen[bytes]:
    return unpaired_process(WORKER_COMMAND, {**env, "UNPAIRED_WORKER_NAME": name}, log)


class Server:
    """A running `unpaired serve`."""

    def __init__(
        self,
        env: Mapping[str, str],
        log: Path,
        port: int | None = None,
        command: tuple[str, ...] = API_COMMAND,
    ) -> None:
        self.env = env
        self.log = log
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = unpaired_process(command, {**env, "UNPAIRED_PORT": str(self.port)}, log)

    def wait_started(self, timeout: float = 60) -> None:
        """Until the server answers /healthz (models loaded: the lifespan ran)."""
        wait_until(
            lambda: self._answers("/healthz") is not None,
            lambda: f"the server did not start:\n{self.log.read_text()[-3000:]}",
            timeout=timeout,
            interval=0.1,
        )

    def wait_ready(self, timeout: float = 60) -> dict[str, object]:
        return wait_until(
            lambda: self._answers("/readyz"),
            lambda: f"not ready:\n{self.log.read_text()[-3000:]}",
            timeout=timeout,
            interval=0.1,
        )

    def _answers(self, path: str) -> dict[str, object] | None:
        """The JSON of a 200 from `path`, or None (not yet); an exited server fails here."""
        if self.process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{self.log.read_text()[-3000:]}")
        try:
            response = httpx.get(f"{self.url}{path}", timeout=5)
        except httpx.TransportError:
            return None
        if response.status_code != 200:
            return None
        body: dict[str, object] = response.json()
        return body

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running_server(
    env: Mapping[str, str],
    log: Path,
    *,
    ready: bool = True,
    command: tuple[str, ...] = API_COMMAND,
) -> Iterator[Server]:
    server = Server(env, log, command=command)
    try:
        server.wait_ready() if ready else server.wait_started()
        yield server
    finally:
        server.stop()


@contextmanager
def running_workers(
    env: Mapping[str, str], logs: Path, count: int = 1
) -> Iterator[list[subprocess.Popen[bytes]]]:
    processes = [worker_process(env, logs / f"worker-{i}.log", f"w{i}") for i in range(count)]
    try:
        yield processes
    finally:
        for process in processes:
            stop_process(process)


def wait_for_workers(
    url: str,
    count: int,
    timeout: float = 60,
    processes: Sequence[subprocess.Popen[bytes]] = (),
) -> None:
    """Until the server's /readyz counts `count` live workers (each has loaded its models and
    consumes); readiness alone does not say so (workers may be scaled to zero)."""
    last: list[str] = [""]

    def counted() -> bool:
        assert all(p.poll() is None for p in processes), "a worker exited"
        response = httpx.get(f"{url}/readyz", timeout=5)
        last[0] = response.text
        return response.status_code == 200 and response.json()["checks"]["workers"] == count

    wait_until(counted, lambda: f"{count} workers never became live: {last[0]}", timeout=timeout)


class Supervised:
    """Worker processes kept running, as Kubernetes keeps a Deployment's pods: one that dies
    is started again at once. Each slot waits on its process's exit (no polling)."""

    def __init__(self, env: Mapping[str, str], logs: Path, count: int) -> None:
        self.env, self.logs = env, logs
        self.deaths: list[int] = []  # exit codes of the processes that died on their own
        self.processes: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._slots = [
            threading.Thread(target=self._keep, args=(i,), daemon=True) for i in range(count)
        ]

    def _keep(self, slot: int) -> None:
        generation = 0
        while not self._stopping.is_set():
            with self._lock:
                if self._stopping.is_set():
                    return
                process = worker_process(
                    self.env, self.logs / f"worker-{slot}.{generation}.log", f"w{slot}.{generation}"
                )
                self.processes.append(process)
            code = process.wait()
            if not self._stopping.is_set():
                self.deaths.append(code)
            generation += 1

    def __enter__(self) -> Supervised:
        for slot in self._slots:
            slot.start()
        return self

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self._stopping.set()
        for process in self.processes:
            stop_process(process)
        for slot in self._slots:
            slot.join(60)
