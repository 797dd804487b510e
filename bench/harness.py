"""What every benchmark shares, so that every table is measured the same way: the machine's
name, a bench model exported into a temporary store, real-photo inputs, child processes started
the way users start them (`unpaired serve`, `unpaired worker`, a private redis-server), waiting
until a service is ready, a closed-loop load with its summary, and the JSON report.

The benchmarks are modules of the package `bench`, run from the repository root:
`python -m bench.http_service --quick` (docs/benchmarks.md lists them all).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import platform
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import httpx
import numpy as np
from rich.console import Console

from cli.local_redis import LocalRedis, free_port

#: Where the benchmarks print tables: stderr, whole tables in logs (not cut at 80 columns).
err = Console(stderr=True, width=None if sys.stderr.isatty() else 150)

ROOT = Path(__file__).resolve().parents[1]
MODEL = "bench"
IDENTITY = "identity"  # the generator name of a graph that costs nothing (export_bench_model)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


class _HasKey(Protocol):
    @property
    def key(self) -> str: ...


Keyed = TypeVar("Keyed", bound=_HasKey)


def pick(available: Sequence[Keyed], keys: str | None, option: str) -> list[Keyed]:
    """The items named (comma-separated, by `.key`) in `keys`, in their own order; all of them
    when `keys` is empty. An unknown name stops the benchmark, listing the choices."""
    if not keys:
        return list(available)
    wanted = keys.split(",")
    unknown = set(wanted) - {item.key for item in available}
    if unknown:
        choices = ", ".join(item.key for item in available)
        raise SystemExit(f"{option}: no {sorted(unknown)} here; choose from {choices}")
    return [item for item in available if item.key in wanted]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def export_bench_model(
    folder: Path,
    generator: str,
    ngf: int,
    *,
    fp16: bool,
    int8: bool = False,
    tiled: bool = False,
) -> Path:
    """A generator with seeded random weights (speed does not depend on them), exported as
    model `bench` (AtoB) into the store at `folder`; returns `folder`. With `int8`, also the
    statically quantized graph, with no fidelity floor: a random-init network is far more
    sensitive to quantization than a trained one. With `tiled`, the graph large images are
    tiled with (shared statistics). Generator `identity`: a graph that costs nothing
    (`identity_model`), to measure what serving costs around the network."""
    if generator == IDENTITY:
        return identity_model(folder)
    import torch

    from models import build_generator
    from models.manifest import Architecture
    from training.export import ExportOptions, export_generators

    arch = Architecture(generator=generator, ngf=ngf, norm="instance")
    torch.manual_seed(0)
    net = build_generator(generator, ngf=ngf).eval()
    options = ExportOptions(fp16=fp16, tiled=tiled, int8=int8, int8_min_psnr=0.0)
    export_generators({"AtoB": net}, folder / MODEL, name=MODEL, architecture=arch, options=options)
    return folder


def identity_model(folder: Path) -> Path:
    """Model `bench` whose graph returns its input (one ONNX Identity node), published the way a
    user publishes any ONNX graph (`unpaired export --from-onnx`); returns `folder`."""
    import onnx
    from onnx import TensorProto, helper

    from training.onnx_import import import_onnx

    shape: list[str | int | None] = ["N", 3, "H", "W"]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["translated"])],
        "identity",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("translated", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    source = folder / "identity.onnx"
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, source)
    import_onnx({"AtoB": source}, folder / MODEL, name=MODEL)
    source.unlink()
    return folder


def photo_crops(size: int, image_format: str = "PNG") -> list[bytes]:
    """16 PNGs (or JPEGs, quality 90): four square crops (centre, two corners, a zoom) of four
    real photos that ship with scikit-image, resized to `size`."""
    from PIL import Image

    from models.sample_photos import load_photo

    out = []
    for name in PHOTOS:
        rgb = load_photo(name)
        h, w = rgb.shape[:2]
        s = min(h, w)
        boxes = [
            ((w - s) // 2, (h - s) // 2, s),
            (0, 0, s * 3 // 4),
            (w - s * 3 // 4, h - s * 3 // 4, s * 3 // 4),
            ((w - s // 2) // 2, (h - s // 2) // 2, s // 2),
        ]
        for x, y, side in boxes:
            crop = Image.fromarray(rgb[y : y + side, x : x + side])
            buffer = io.BytesIO()
            resized = crop.resize((size, size), Image.Resampling.LANCZOS)
            quality = {"quality": 90} if image_format == "JPEG" else {}
            resized.save(buffer, format=image_format, **quality)
            out.append(buffer.getvalue())
    return out


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR, or None if `data` is not a PNG."""
    if len(data) < 24 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG (its IHDR) or a JPEG (its frame header, read by Pillow without
    decoding), or None if `data` is neither."""
    if data[:2] == JPEG_SIGNATURE:
        from PIL import Image

        with suppress(Exception), Image.open(io.BytesIO(data)) as image:
            return image.size
        return None
    return png_size(data)


def png_problem(data: bytes, size: tuple[int, int]) -> str | None:
    """None when `data` is a PNG (or a JPEG) of `size`; else what is wrong with it."""
    got = image_size(data)
    if got is None:
        return "not a PNG or JPEG"
    return None if got == size else f"wrong size {got[0]}x{got[1]}"


def answer_problem(response: httpx.Response, size: tuple[int, int]) -> str | None:
    """None for a 200 PNG (or JPEG) of the input's size; else what is wrong with the answer
    (`HTTP 503 overloaded`, `not a PNG`, `wrong size 64x60`)."""
    if response.status_code != 200:
        problem = f"HTTP {response.status_code}"
        with suppress(Exception):
            problem += f" {response.json()['error']['code']}"
        return problem
    return png_problem(response.content, size)


def answer_measures(response: httpx.Response) -> dict[str, float]:
    """Where a translation's time went, as the service reports it in its headers."""
    h = response.headers
    return {
        "batch": int(h.get("x-batch-size", 0)),
        "queue_ms": 1000 * float(h.get("x-queue-seconds", 0)),
        "engine_ms": 1000 * float(h.get("x-engine-seconds", 0)),
    }


def service_env(settings: Mapping[str, object]) -> dict[str, str]:
    """This environment without the caller's UNPAIRED_* variables, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNPAIRED_")}
    env.update({f"UNPAIRED_{k.upper()}": str(v) for k, v in settings.items()})
    return env


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (threads included); 0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


class Child:
    """A child process with its own log file and its own session (Ctrl-C reaches only the
    benchmark, which then stops its children in order)."""

    def __init__(
        self, argv: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path = ROOT
    ) -> None:
        self.argv = list(argv)
        self.log = log
        with log.open("ab") as handle:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (threads and child processes included: the API
        processes of `serve --processes N`)."""
        return sum(process_cpu_seconds(pid) for pid in self.pids())

    def pids(self) -> list[int]:
        """This process and its descendants."""
        import psutil

        try:
            children = psutil.Process(self.popen.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return [self.popen.pid]
        return [self.popen.pid, *(c.pid for c in children)]

    def rss_mib(self) -> float:
        """Resident memory now (VmRSS), in MiB."""
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for process {self.popen.pid}")

    def mapped(self, *needles: str) -> dict[str, bool]:
        """Whether a file whose path holds each needle (`libtorch`) is mapped into the process:
        what it has loaded, seen from outside."""
        maps = Path(f"/proc/{self.popen.pid}/maps").read_text()
        return {needle: needle in maps for needle in needles}

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(
                f"`{' '.join(self.argv[1:])}` exited with {self.popen.returncode}:\n{self.tail()}"
            )

    def terminate(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def wait_or_kill(self, timeout: float = 30.0) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def unpaired(args: Sequence[str], env: Mapping[str, str], log: Path, source: Path = ROOT) -> Child:
    """`unpaired ARGS...`, started as users start it (`python -m cli`), from the checkout at
    `source` (default: this one)."""
    return Child([sys.executable, "-m", "cli", *args], env, log, cwd=source)


def run_unpaired(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """`unpaired ARGS...` to its end, as users run it, its stdout and stderr captured."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def stop_all(children: Sequence[Child]) -> None:
    """SIGTERM to all at once, then wait for each (kill after 30 s)."""
    for child in children:
        child.terminate()
    for child in children:
        child.wait_or_kill()


class ServiceFailure(RuntimeError):
    """The service misbehaved: it did not get ready, answered wrongly, stalled or died."""


def tails(processes: Sequence[Child], chars: int = 2500) -> str:
    """The end of each process's log, to show with a failure."""
    return "\n".join(
        f"--- {p.log.name} (last {chars} chars) ---\n{p.tail(chars)}" for p in processes
    )


def wait_ready(
    url: str,
    processes: Sequence[Child],
    *,
    workers: int = 0,
    path: str = "/readyz",
    poll_s: float = 0.2,
    request_timeout_s: float = 2.0,
    timeout_s: float = 180.0,
) -> float:
    """Until GET `url``path` answers 200 (for /readyz with `workers`, naming that many live
    workers); returns the seconds waited. A process that exits, or no answer in `timeout_s`,
    is a ServiceFailure with the logs' tails."""
    started = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        for process in processes:
            try:
                process.check_alive()
            except RuntimeError as exc:
                raise ServiceFailure(f"{exc}\n{tails(processes)}") from None
        try:
            response = httpx.get(f"{url}{path}", timeout=request_timeout_s)
            last = response.text
            if response.status_code == 200:
                live = response.json().get("checks", {}).get("workers", 0) if workers else 0
                if live >= workers:
                    return time.perf_counter() - started
        except httpx.TransportError as exc:
            last = exc
        time.sleep(poll_s)
    raise ServiceFailure(f"the service did not get ready: {last}\n{tails(processes)}")


@dataclass
class Service:
    """A running `unpaired serve` (with its workers, if any) at `url`."""

    url: str
    processes: list[Child]  # the server first

    def cpu_seconds(self) -> float:
        return sum(p.cpu_seconds() for p in self.processes)

    def check_alive(self) -> None:
        for process in self.processes:
            try:
                process.check_alive()
            except RuntimeError as exc:
                raise ServiceFailure(f"{exc}\n{tails(self.processes)}") from None


@contextmanager
def running_service(
    workers: int, settings: Mapping[str, object], folder: Path, api_processes: int = 1
) -> Iterator[Service]:
    """`unpaired serve` on a free port, ready: embedded with `workers` = 0, else distributed
    with that many `unpaired worker`s on a private redis-server (never the shared one), and
    `api_processes` API processes (`serve --processes`).
    Everything is stopped on the way out (SIGTERM, then kill), also on an error or Ctrl-C."""
    folder.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:  # unwinds in reverse: server, then workers, then redis
        settings = dict(settings)
        started: list[Child] = []
        if workers:
            redis_server = stack.enter_context(LocalRedis(folder / "redis"))
            settings["broker_url"] = redis_server.url
            env = service_env(settings)
            started = [
                unpaired(["worker", "--name", f"bench-{i}"], env, folder / f"worker-{i}.log")
                for i in range(workers)
            ]
            stack.callback(stop_all, started)
        port = free_port()
        server = unpaired(
            ["serve", "--port", str(port), "--processes", str(api_processes)],
            service_env(settings),
            folder / "server.log",
        )
        stack.callback(stop_all, [server])
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, [server, *started], workers=workers)
        yield Service(url, [server, *started])


class Profile:
    """py-spy sampling every process of a service (API processes and workers, not idle
    threads) from now until `summary()`: where serving's CPU time goes. Sampling costs CPU
    itself, so profiled cells are not the ones to quote for speed."""

    def __init__(self, service: Service, prefix: Path, rate: int = 100) -> None:
        import shutil

        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        prefix.parent.mkdir(parents=True, exist_ok=True)
        self.files: list[tuple[str, Path]] = []
        self.spies: list[subprocess.Popen[bytes]] = []
        for index, process in enumerate(service.processes):
            role = "api" if index == 0 else f"worker-{index}"
            out = prefix.with_name(f"{prefix.name}-{role}.txt")
            self.files.append((role, out))
            argv = [spy, "record", "--pid", str(process.popen.pid), "--subprocesses",
                    "--rate", str(rate), "--format", "raw",
                    "--output", str(out)]  # fmt: skip
            self.spies.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )

    def summary(self, top: int = 20) -> dict[str, Any]:
        """Per process: samples, and the functions most often on the stack (inclusive) and
        at its top (self), as shares of the samples."""
        for spy in self.spies:
            spy.send_signal(signal.SIGINT)
        for spy in self.spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
        return {role: _stack_shares(out, top) for role, out in self.files if out.exists()}


#: Top frames of a thread that waits: py-spy cannot always tell idle threads here (they show
#: up parked in these), so their samples are counted as idle, not as work.
IDLE_FRAMES = frozenset({
    "Condition.wait (threading.py)", "Event.wait (threading.py)", "Queue.get (queue.py)",
    "_worker (thread.py)", "Runner.run (runners.py)", "select (selectors.py)",
    "Thread.join (threading.py)", "_wait_for_tstate_lock (threading.py)",
})  # fmt: skip


def _stack_shares(raw: Path, top: int) -> dict[str, Any]:
    """py-spy's raw output (`frame;frame;... count` per line) as shares per function of the
    samples that were working (not parked in one of IDLE_FRAMES)."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";")[1:]]  # not the process's
        if not frames or frames[-1] in IDLE_FRAMES:
            idle += count
            continue
        total += count
        for name in set(frames):
            inclusive[name] += count
        leaf[frames[-1]] += count
    share = (lambda n: round(n / total, 4)) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "idle_samples": idle,
        "inclusive": [[name, share(n)] for name, n in inclusive.most_common(top)],
        "self": [[name, share(n)] for name, n in leaf.most_common(top)],
    }


def _function(frame: str) -> str:
    """`translate (service/inference/engine.py:427)` -> `translate (engine.py)`."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    return f"{name} ({Path(path).name})" if path else name


def report_json(result: Mapping[str, Any], out: Path | None) -> None:
    """The result as one JSON document on stdout (the tables go to stderr), and into `out`
    when given (docs/*.json)."""
    text = json.dumps(result, indent=2)
    print(text, flush=True)
    if out:
        out.write_text(text + "\n")


def terminate_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so that the ExitStacks stop every child in order."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


@dataclass
class ClosedLoop:
    """One cell of a closed-loop load: `concurrency` requests in flight throughout; a warm-up
    (at least `warmup_s` and `concurrency` answers, discarded), then a measurement window of
    `seconds` (or `requests`), then the drain. Latencies count requests sent in the window;
    throughput counts good answers finished in it. Errors are counted, never dropped."""

    concurrency: int
    warmup_s: float
    seconds: float | None
    requests: int | None
    on_window: Callable[[str], None] = lambda edge: None  # "start" / "end" of the window
    phase: Literal["warmup", "measure", "stop"] = "warmup"
    started: float = field(default_factory=time.perf_counter)
    window: tuple[float, float] = (0.0, 0.0)
    completed: int = 0
    issued: int = 0  # in the measurement window
    done: list[tuple[float, bool]] = field(default_factory=list)  # (finished, ok): all
    latencies: list[float] = field(default_factory=list)
    measures: dict[str, list[float]] = field(default_factory=dict)  # per good answer
    tags: Counter[str] = field(default_factory=Counter)  # e.g. which worker answered
    errors: Counter[str] = field(default_factory=Counter)
    warmup_errors: Counter[str] = field(default_factory=Counter)

    def advance(self, now: float) -> str:
        """The phase a request sent `now` belongs to (counts it when measured)."""
        if (
            self.phase == "warmup"
            and now - self.started >= self.warmup_s
            and self.completed >= self.concurrency
        ):
            self.phase = "measure"
            self.window = (now, now)
            self.on_window("start")
        elif self.phase == "measure" and (
            (self.requests is not None and self.issued >= self.requests)
            or (self.requests is None and now - self.window[0] >= (self.seconds or 0))
        ):
            self.phase = "stop"
            self.window = (self.window[0], now)
            self.on_window("end")
        if self.phase == "measure":
            self.issued += 1
        return self.phase

    def finish(
        self,
        phase: str,
        sent: float,
        problem: str | None,
        measures: Mapping[str, float] | None = None,
        tag: str | None = None,
    ) -> None:
        """Record one answer: `problem` is None for a good one."""
        finished = time.perf_counter()
        self.completed += 1
        self.done.append((finished, problem is None))
        if problem is not None:
            (self.errors if phase == "measure" else self.warmup_errors)[problem] += 1
            return
        if phase != "measure":
            return
        self.latencies.append(finished - sent)
        for name, value in (measures or {}).items():
            self.measures.setdefault(name, []).append(value)
        if tag is not None:
            self.tags[tag] += 1

    def summary(self) -> dict[str, Any]:
        start, end = self.window
        span = end - start
        ok_in_window = sum(1 for t, ok in self.done if ok and start <= t <= end)
        lat = np.array(self.latencies) * 1000
        p50, p95, p99 = (
            (float(np.percentile(lat, q)) for q in (50, 95, 99)) if len(lat) else (0.0,) * 3
        )
        row: dict[str, Any] = {
            "concurrency": self.concurrency,
            "images_per_s": round(ok_in_window / span, 3) if span > 0 else 0.0,
            "p50_ms": round(p50, 2),
            "p95_ms": round(p95, 2),
            "p99_ms": round(p99, 2),
            "p99_over_p50": round(p99 / p50, 3) if p50 else None,
            "window_s": round(span, 3),
            "requests": self.issued,
            "ok": len(self.latencies),
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "warmup_errors": dict(self.warmup_errors),
        }
        for name, values in self.measures.items():
            row[f"mean_{name}"] = round(float(np.mean(values)), 4)
        return row


def run_async(coroutine: Any) -> None:
    """uvloop where installed (as uvicorn uses), asyncio otherwise."""
    try:
        import uvloop

        uvloop.run(coroutine)
    except ImportError:
        asyncio.run(coroutine)
