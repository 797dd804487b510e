"""Batching across requests in Celery workers: our design next to `celery-batches`, measured.

A design record. The distributed workers batch with our own approach: `unpaired worker` runs
a Celery worker with the threads pool in which each request is an ordinary task (late ack, its
own result, its own retry) that submits its decoded image to the in-process micro-batcher
(`service/inference/batcher.py`, the same one the embedded API uses) and blocks until its batch
has run (`service/distributed/interactive_task.py`, `service/distributed/worker.py`). The
alternative is the `celery-batches` package: a `Batches` task class that buffers delivered
messages and calls the task once with the list of requests every `flush_every` messages or
every `flush_interval` seconds.

Both are driven with the same load, on the same model, Redis and thread budget: a plain Python
publisher in this process, which is the API's own
`service.distributed.remote_translator.RemoteTranslator` without HTTP (publish, delivery ledger,
answers through the result backend's pub/sub), keeps exactly `concurrency` requests in flight,
and reads every answer the way the API does; every answer must be a PNG of its input's size.
Ours runs through the real `unpaired worker`. The celery-batches worker is a minimal but fair
one written here (this script re-run with `--batches-worker`): same Celery configuration
(`service.distributed.celery_app.make_celery`: msgpack, late acks, the same prefetch of 2 x max
batch: 2 pool threads x prefetch multiplier 8), same engines
(`service.inference.engine_pool.EnginePool`, one engine call at a time under a lock, as our one
dispatcher thread), decode and encode in a thread pool beside the engine, the same reply format
stored per request with `app.backend.mark_as_done`, and the same receipt
(`service.distributed.delivery.mark_received`) so the API side does not re-send its requests.
`flush_every` = max batch (8); `flush_interval` = max wait (5 ms), and once more at 50 ms
(`--flush-ms`), since a periodic 5 ms timer flushes small batches (see "timing" below).

Reported per approach and concurrency (8 and 32): throughput (answers/s inside the measurement
window), p50/p95/p99 latency, the mean batch size the answers ran in (request-weighted, from
each answer's `batch_size`), errors, and the CPU the worker process used.

What the numbers do not show (why a throughput tie goes to our design):
- results: celery-batches stores none; the task must call `mark_as_done` per request. If the
  batch task raises, celery-batches logs it, stores nothing and still acknowledges every
  late-ack message of the flush: those requests are lost and their callers wait until their
  deadline. Ours stores each request's own result (or its own error reply).
- retry: a `Batches` task has no retry (`autoretry_for`, `self.retry` do not apply per
  request); ours retries a request on a Redis error with backoff, alone.
- acknowledgement: celery-batches acks all late-ack requests of a flush together when the flush
  returns; ours acks each request when its result is stored. `reject_on_worker_lost`,
  expiry (`expires`, which the API sets to the request's deadline) and revocation are not
  applied to buffered requests either: an expired request is still run.
- grouping: ours batches per (model, direction, padded shape) and never mixes shapes;
  celery-batches hands over whatever the flush holds, and the task must group it itself.
- timing: `flush_interval` is a periodic timer started by the first buffered message, not a
  bound on the oldest request's wait as our `max_wait`; a count-triggered flush happens when
  the message counter reaches a multiple of `flush_every`.

    .venv/bin/pip install celery-batches      # not a project dependency
    python -m bench.celery_batching           # c = 8,32, 128 px, 10 s per cell
    python -m bench.celery_batching --quick   # smoke run, under a minute
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import itertools
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from rich.table import Table

from bench.harness import (
    MODEL,
    Child,
    ClosedLoop,
    ServiceFailure,
    cpu_name,
    err,
    export_bench_model,
    photo_crops,
    png_problem,
    png_size,
    report_json,
    run_async,
    service_env,
    stop_all,
    terminate_on_sigterm,
    unpaired,
)
from cli.local_redis import LocalRedis
from service.inference.image_io import DecodedImage
from service.inference.requests import OutputSpec, TranslationRequest
from service.settings import Settings, load_settings

Reply = dict[str, Any]
Run = tuple[float, float, int]  # an engine call: started (monotonic), seconds, batch size

REQUEST_TIMEOUT_S = 120.0
VISIBILITY_TIMEOUT_S = 60.0
APPROACHES = ("ours", "celery-batches")


# --- the celery-batches worker (this script with --batches-worker) ------------------------------


class BatchesWorker:
    """A Celery worker whose translate task is a celery-batches `Batches` task: what this
    module runs with --batches-worker."""

    def __init__(self, settings: Settings) -> None:
        import redis

        from service.distributed.celery_app import CONNECT_TIMEOUT_S, make_celery
        from service.distributed.messages import ImageCarrier
        from service.inference.engine import EngineOptions
        from service.inference.engine_pool import EnginePool
        from service.store.model_store import ModelStore

        assert settings.broker_url is not None
        self.settings = settings
        self.name = f"batches-{os.getpid()}@{socket.gethostname()}"
        self.app = make_celery(settings, role="worker")
        self.pool = EnginePool(
            ModelStore(settings.store, cache_dir=settings.cache_dir),
            EngineOptions.from_settings(settings),
        )
        self.pool.load(settings.models)
        self.client = redis.Redis.from_url(
            settings.broker_url, socket_connect_timeout=CONNECT_TIMEOUT_S
        )
        self.codec = concurrent.futures.ThreadPoolExecutor(len(os.sched_getaffinity(0)))
        self.engine_lock = threading.Lock()  # one engine call at a time, like our dispatcher
        self.received: dict[str, float] = {}  # task id -> when delivered (for queue_seconds)
        self.carrier = ImageCarrier(settings.blob_threshold_bytes)

    def decode(self, payload: dict[str, Any]) -> tuple[TranslationRequest, DecodedImage] | Reply:
        """The request and its decoded image, or the reply that ends it here."""
        from service.distributed.messages import deadline_reply, error_reply, request_from_payload
        from service.inference import image_io

        if time.time() > payload["deadline"]:
            return deadline_reply()
        data = self.carrier.get(self.client, payload["image"])
        if data is None:
            return deadline_reply()
        request = request_from_payload(payload, data)
        try:
            limits = image_io.ImageLimits.from_settings(self.settings)
            return request, image_io.decode_image(data, limits=limits)
        except Exception as exc:
            reply = error_reply(exc)
            if reply is None:
                raise
            return reply

    def encode(
        self, task_id: str, request: TranslationRequest, out: DecodedImage | Exception, run: Run
    ) -> Reply:
        """The reply for one image of an engine call `run` = (started, seconds, batch size)."""
        from service.distributed.messages import error_reply, success_reply
        from service.inference import image_io
        from service.inference.requests import Translated

        if isinstance(out, Exception):
            reply = error_reply(out)
            return reply or {"ok": False, "error": {"type": "WorkerError", "message": repr(out)}}
        data = image_io.encode_image(
            out, format=request.output.format, quality=request.output.quality
        )
        started, seconds, size = run
        result = Translated(
            data=data,
            media_type=request.output.media_type,
            width=out.width,
            height=out.height,
            batch_size=size,
            queue_seconds=started - self.received.pop(task_id, started),
            engine_seconds=seconds,
            worker=self.name,
        )
        expires = self.settings.result_expires_s
        image = self.carrier.put(self.client, task_id, "out", data, expires)
        return success_reply(result, image)

    def translate(self, requests: list[Any]) -> None:
        """One flush: decode, group by (model, direction, padded shape) as our batcher does,
        run each group, encode, and store every request's reply."""
        replies: dict[int, Reply] = {}
        ready: dict[int, tuple[TranslationRequest, DecodedImage]] = {}
        for i, decoded in enumerate(self.codec.map(lambda r: self.decode(r.args[0]), requests)):
            if isinstance(decoded, dict):
                replies[i] = decoded
            else:
                ready[i] = decoded
        groups: dict[tuple[str, str, Any], list[int]] = {}
        for i, (request, image) in ready.items():
            engine = self.pool.engine(request.model, request.direction)
            shape = engine.batch_shape(image.height, image.width)
            groups.setdefault((request.model, request.direction, shape), []).append(i)
        for (model, direction, _), members in groups.items():
            engine = self.pool.engine(model, direction)
            with self.engine_lock:
                started = time.monotonic()
                outputs = engine.translate_each([ready[i][1] for i in members])
                run = (started, time.monotonic() - started, len(members))

            def encode(i: int, out: DecodedImage | Exception, run: Run = run) -> Reply:
                return self.encode(requests[i].id, ready[i][0], out, run)

            encoded = self.codec.map(encode, members, outputs)
            for i, reply in zip(members, encoded, strict=True):
                replies[i] = reply
        for i, request in enumerate(requests):  # celery-batches stores no result itself
            self.app.backend.mark_as_done(request.id, replies[i], request=request)

    def on_received(self, request: Any, **_: Any) -> None:
        from service.distributed.delivery import mark_received

        self.received[request.id] = time.monotonic()
        try:
            queue = request.delivery_info.get("routing_key") or self.settings.queue
            mark_received(self.client, request.id, request.args[0], queue)
        except Exception as exc:
            print(f"could not record receiving {request.id}: {exc}", file=sys.stderr)

    def run(self, flush_interval: float) -> None:
        from celery.signals import task_received
        from celery_batches import Batches

        from service.distributed.messages import TRANSLATE_TASK

        @self.app.task(
            name=TRANSLATE_TASK,
            base=Batches,
            flush_every=self.settings.max_batch,
            flush_interval=flush_interval,
            acks_late=True,
        )
        def translate(requests: list[Any]) -> None:
            self.translate(requests)

        task_received.connect(self.on_received, weak=False)
        threads = 2  # one flush in the engine while the next one decodes / encodes
        self.app.conf.worker_prefetch_multiplier = max(1, self.settings.prefetch // threads)
        self.app.worker_main(
            [
                "worker",
                f"--hostname={self.name}",
                "--pool=threads",
                f"--concurrency={threads}",
                f"--queues={self.settings.queue}",
                f"--loglevel={self.settings.log_level.upper()}",
                "--without-mingle",
                "--without-gossip",
            ]
        )


def run_batches_worker(flush_interval: float) -> None:
    """A Celery worker whose translate task is a celery-batches `Batches` task."""
    from service.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    BatchesWorker(settings).run(flush_interval)


# --- processes ----------------------------------------------------------------------------------


@contextmanager
def running_worker(
    approach: str, settings: Mapping[str, object], folder: Path, flush_interval: float | None
) -> Iterator[Child]:
    env = service_env(settings)
    log = folder / f"{approach.replace(' ', '-')}.log"
    if flush_interval is None:
        process = unpaired(["worker", "--name", "bench-ours"], env, log)
    else:  # this module again, as a worker
        argv = ["--batches-worker", "--flush-interval", str(flush_interval)]
        process = Child([sys.executable, "-m", "bench.celery_batching", *argv], env, log)
    try:
        yield process
    finally:
        stop_all([process])


# --- the publisher ------------------------------------------------------------------------------


def new_request(data: bytes, index: int) -> TranslationRequest:
    return TranslationRequest(
        model=MODEL,
        direction="AtoB",
        data=data,
        output=OutputSpec(format="png"),
        deadline=time.time() + REQUEST_TIMEOUT_S,
        name=f"crop-{index}.png",
        request_id=uuid.uuid4().hex,
    )


async def wait_answering(settings: Settings, payload: bytes, worker: Child) -> None:
    """Until one request comes back (the worker has loaded its model and consumes)."""
    from service.distributed.remote_translator import RemoteTranslator

    translator = await RemoteTranslator.connect(settings)
    try:
        task = asyncio.ensure_future(translator.translate(new_request(payload, 0)))
        deadline = time.monotonic() + 180
        while not task.done():
            worker.check_alive()
            if time.monotonic() > deadline:
                task.cancel()
                raise ServiceFailure(f"the worker did not answer:\n{worker.tail()}")
            await asyncio.wait({task}, timeout=0.2)
        task.result()
    finally:
        await translator.close()


async def drive(
    settings: Settings, payloads: Sequence[tuple[bytes, tuple[int, int]]], load: ClosedLoop
) -> None:
    from service.distributed.remote_translator import RemoteTranslator

    translator = await RemoteTranslator.connect(settings)
    counter = itertools.count()

    async def one() -> None:
        while (phase := load.advance(time.perf_counter())) != "stop":
            index = next(counter) % len(payloads)
            data, size = payloads[index]
            sent = time.perf_counter()
            try:
                result = await asyncio.wait_for(
                    translator.translate(new_request(data, index)), REQUEST_TIMEOUT_S
                )
            except Exception as exc:
                load.finish(phase, sent, type(exc).__name__)
                continue
            problem = png_problem(result.data, size)
            load.finish(phase, sent, problem, {"batch": result.batch_size})

    try:
        await asyncio.gather(*(one() for _ in range(load.concurrency)))
    finally:
        await translator.close()


def measure_cell(
    settings: Settings,
    worker: Child,
    payloads: Sequence[tuple[bytes, tuple[int, int]]],
    concurrency: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    marks: dict[str, tuple[float, float]] = {}

    def on_window(edge: str) -> None:
        marks[edge] = (time.process_time(), worker.cpu_seconds())

    load = ClosedLoop(concurrency, args.warmup, args.seconds, args.requests, on_window)
    run_async(drive(settings, payloads, load))
    row = load.summary()
    span = row["window_s"]
    row["worker_cores"] = round((marks["end"][1] - marks["start"][1]) / span, 2) if span else None
    row["publisher_cores"] = (
        round((marks["end"][0] - marks["start"][0]) / span, 2) if span else None
    )
    return row


# --- main ---------------------------------------------------------------------------------------

FULL = {"concurrency": "8,32", "size": 128, "seconds": 10.0, "warmup": 2.0}
QUICK = {"concurrency": "8,32", "size": 64, "seconds": 2.0, "warmup": 0.5}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--approaches", default=",".join(APPROACHES))
    parser.add_argument(
        "--flush-ms",
        default="5,50",
        help="celery-batches flush_interval(s) in ms, one run each (default 5 = max wait, 50)",
    )
    parser.add_argument("--concurrency", default=None, help="default 8,32")
    parser.add_argument("--size", type=int, default=None, help="image side (default 128)")
    parser.add_argument("--seconds", type=float, default=None, help="per cell (default 10)")
    parser.add_argument(
        "--requests", type=int, default=None, help="measure this many per cell instead"
    )
    parser.add_argument("--warmup", type=float, default=None, help="seconds (default 2)")
    parser.add_argument("--generator", default="resnet_6blocks")
    parser.add_argument("--ngf", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=8, help="= celery-batches flush_every")
    parser.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="UNPAIRED_MAX_WAIT_MS (ours)"
    )
    parser.add_argument("--cores", type=int, default=None, help="engine threads (default: all)")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 px, 2 s cells")
    parser.add_argument("--batches-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--flush-interval", type=float, default=0.005, help=argparse.SUPPRESS)
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    unknown = set(args.approaches.split(",")) - set(APPROACHES)
    if unknown:
        parser.error(f"unknown approaches {sorted(unknown)}; choose from {APPROACHES}")
    return args


Approach = tuple[str, float | None]  # (label, flush interval in s: None for ours)


def parse_approaches(args: argparse.Namespace) -> list[Approach]:
    approaches: list[Approach] = []
    for approach in args.approaches.split(","):
        if approach == "ours":
            approaches.append(("ours", None))
        else:
            approaches += [
                (f"celery-batches {float(ms):g} ms", float(ms) / 1000)
                for ms in args.flush_ms.split(",")
            ]
    return approaches


def measure_approach(
    approach: Approach,
    common: Mapping[str, object],
    publisher: Settings,
    folder: Path,
    pngs: Sequence[bytes],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """Every concurrency level of one approach, on one worker started for it."""
    label, flush_s = approach
    payloads = [(data, png_size(data) or (0, 0)) for data in pngs]
    rows = []
    err.print(f"starting {label} ...", highlight=False)
    with running_worker(label, common, folder, flush_s) as worker:
        run_async(wait_answering(publisher, pngs[0], worker))
        for level in [int(c) for c in args.concurrency.split(",")]:
            row = {"approach": label, **measure_cell(publisher, worker, payloads, level, args)}
            rows.append(row)
            err.print(
                f"  c={level:3d}: {row['images_per_s']:7.1f} img/s, p50 "
                f"{row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms, batch "
                f"{row.get('mean_batch')}, errors {row['errors']}",
                highlight=False,
            )
            if row["errors"] or row["warmup_errors"]:
                err.print(f"  errors: {row['error_kinds']} {row['warmup_errors']}")
                err.print(worker.tail(1500), highlight=False, markup=False)
    return rows


def print_table(rows: Sequence[dict[str, Any]], size: int, cores: int) -> None:
    table = Table(
        "approach",
        "c",
        "img/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "mean batch",
        "errors",
        "worker cores",
        "publisher cores",
        title=f"Celery batching ({size}x{size} PNG, {cores} engine threads)",
    )
    for r in rows:
        table.add_row(
            r["approach"],
            str(r["concurrency"]),
            f"{r['images_per_s']:.1f}",
            f"{r['p50_ms']:.0f}",
            f"{r['p95_ms']:.0f}",
            f"{r['p99_ms']:.0f}",
            f"{r['mean_batch']:.2f}" if r.get("mean_batch") else "",
            str(r["errors"] + sum(r["warmup_errors"].values())),
            f"{r['worker_cores']:.2f}",
            f"{r['publisher_cores']:.2f}",
        )
    err.print(table)


def compare(
    rows: Sequence[dict[str, Any]], approaches: Sequence[Approach], levels: Sequence[int]
) -> list[dict[str, Any]]:
    """Ours over each celery-batches run, per concurrency (printed too)."""
    comparison = []
    by = {(r["approach"], r["concurrency"]): r for r in rows}
    for (approach, _), level in itertools.product(
        [a for a in approaches if a[1] is not None], levels
    ):
        ours, theirs = by.get(("ours", level)), by.get((approach, level))
        if ours and theirs:
            line = {
                "against": approach,
                "concurrency": level,
                "throughput_ours_over_batches": round(
                    ours["images_per_s"] / max(theirs["images_per_s"], 1e-9), 3
                ),
                "p99_ours_over_batches": round(ours["p99_ms"] / max(theirs["p99_ms"], 1e-9), 3),
            }
            comparison.append(line)
            err.print(
                f"c={level}: ours / {approach}: throughput "
                f"{line['throughput_ours_over_batches']:.2f}x, p99 "
                f"{line['p99_ours_over_batches']:.2f}x",
                highlight=False,
            )
    return comparison


def worker_settings(
    folder: Path, broker_url: str, cores: int, args: argparse.Namespace
) -> dict[str, object]:
    """What both workers and the publisher are given (`UNPAIRED_*`)."""
    levels = [int(c) for c in args.concurrency.split(",")]
    return {
        "store": folder / "store",
        "cache_dir": folder / "cache",
        "models": MODEL,
        "broker_url": broker_url,
        "threads": cores,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "max_queue": max(256, 4 * max(levels)),
        "request_timeout_s": REQUEST_TIMEOUT_S,
        "visibility_timeout_s": VISIBILITY_TIMEOUT_S,
        "log_level": "warning",
        "log_format": "text",
    }


def main() -> None:
    args = parse_args()
    if args.batches_worker:
        run_batches_worker(args.flush_interval)
        return
    import importlib.util

    if importlib.util.find_spec("celery_batches") is None:
        sys.exit("celery-batches is not installed: .venv/bin/pip install celery-batches")
    terminate_on_sigterm()
    approaches = parse_approaches(args)
    levels = [int(c) for c in args.concurrency.split(",")]
    cores = args.cores or len(os.sched_getaffinity(0))
    err.print(f"CPU: {cpu_name()} x {cores} cores", highlight=False)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-celery-") as scratch, ExitStack() as stack:
        folder = Path(scratch)
        err.print(f"exporting {args.generator} ngf {args.ngf} ...")
        import torch

        export_bench_model(
            folder / "store", args.generator, args.ngf, fp16=torch.cuda.is_available()
        )
        pngs = photo_crops(args.size)
        redis_server = stack.enter_context(LocalRedis(folder / "redis"))
        common = worker_settings(folder, redis_server.url, cores, args)
        publisher = Settings(  # the API side's settings, as its environment would give them
            **{**common, "store": str(common["store"]), "models": (MODEL,)}  # type: ignore[arg-type]
        )
        for approach in approaches:
            rows += measure_approach(approach, common, publisher, folder, pngs, args)

    print_table(rows, args.size, cores)
    comparison = compare(rows, approaches, levels)
    import celery
    import celery_batches

    result = {
        "benchmark": "celery_batching",
        "cpu": cpu_name(),
        "cores": cores,
        "model": f"{args.generator} ngf {args.ngf} (random weights)",
        "size": args.size,
        "versions": {
            "celery": celery.__version__,
            "celery_batches": getattr(celery_batches, "__version__", _version("celery-batches")),
        },
        "settings": {
            "engine_threads": cores,
            "max_batch": args.max_batch,
            "flush_every": args.max_batch,
            "max_wait_ms": args.max_wait_ms,
            "flush_interval_ms": [s * 1000 for _, s in approaches if s is not None],
            "prefetch": 2 * args.max_batch,
        },
        "publisher": "service.distributed.remote_translator.RemoteTranslator (the API's "
        "distributed path, no HTTP)",
        **({"requests": args.requests} if args.requests else {"seconds": args.seconds}),
        "warmup_s": args.warmup,
        "rows": rows,
        "comparison": comparison,
    }
    report_json(result, args.json_out)


def _version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


if __name__ == "__main__":
    main()
