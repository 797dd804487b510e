"""Distributed mode end to end: a private redis-server, real `unpaired worker` and `unpaired
serve` processes, real HTTP. Nothing is mocked."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import msgpack
import numpy as np
import psutil
import pytest
import redis
from PIL import Image
from skimage import data

from cli.launch import API_COMMAND
from cli.local_redis import LocalRedis, free_port
from service.inference.engine import Engine, EngineOptions
from service.inference.image_io import decode_image, encode_image
from service.store.model_store import ModelStore
from tests.cli.test_cli import unpaired
from tests.service.gates import Gate, failpoints
from tests.service.servers import (
    running_server,
    running_workers,
    service_env,
    stop_process,
    unpaired_process,
    wait_for_workers,
    worker_process,
)
from tests.waiting import eventually, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

URL = "/v1/models/tiny/translate?direction=AtoB"
PNG = {"content-type": "image/png"}


def photos(folder: Path, count: int, side: int = 64) -> list[Path]:
    """`count` different real photo crops, as PNG files."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = [data.astronaut(), data.chelsea(), data.coffee()]
    paths = []
    for i in range(count):
        image = sources[i % 3]
        y, x = (7 * i) % (image.shape[0] - side), (11 * i) % (image.shape[1] - side)
        path = folder / f"photo-{i:03d}.png"
        Image.fromarray(np.ascontiguousarray(image[y : y + side, x : x + side])).save(path)
        paths.append(path)
    return paths


def expected_outputs(store: Path, paths: list[Path]) -> list[bytes]:
    """What `unpaired translate` writes for these files (same engine, same encoder)."""
    engine = Engine(ModelStore(store).open("tiny"), "AtoB", EngineOptions(threads=1))
    return [
        encode_image(engine.translate([decode_image(p.read_bytes())])[0], format="png")
        for p in paths
    ]


async def post_all(url: str, bodies: list[bytes], timeout: float = 120) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        return list(
            await asyncio.gather(*(client.post(URL, content=b, headers=PNG) for b in bodies))
        )


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def test_concurrent_requests_are_batched_by_workers_and_match_the_cli(
    redis_server: LocalRedis, model_store: Path, tmp_path: Path
) -> None:
    paths = photos(tmp_path / "in", 64)
    cli = unpaired(
        "translate", "tiny", tmp_path / "in", "--direction", "AtoB", "--out", tmp_path / "cli",
        "--store", model_store,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    expected = [(tmp_path / "cli" / p.name).read_bytes() for p in paths]
    env = service_env(model_store, broker_url=redis_server.url, max_wait_ms=20)
    with (
        running_workers(env, tmp_path, count=2),
        running_server(env, tmp_path / "api.log", ready=False) as server,
    ):
        wait_for_workers(server.url, 2)
        responses = asyncio.run(post_all(server.url, [p.read_bytes() for p in paths]))
        corrupt = httpx.post(server.url + URL, content=b"\x89PNG\r\n\x1a\n...", headers=PNG)
        ico = io.BytesIO()
        Image.new("RGB", (8, 8)).save(ico, "ICO")
        refused = httpx.post(server.url + URL, content=ico.getvalue(), headers=PNG)
        metrics = httpx.get(server.url + "/metrics").text
    assert [r.status_code for r in responses] == [200] * 64
    assert [r.content for r in responses] == expected  # byte-equal to `unpaired translate`
    assert {r.headers["x-worker"] for r in responses} <= {"w0", "w1"}
    assert metric(metrics, "unpaired_batch_size_count") == 64
    assert metric(metrics, 'unpaired_batch_size_bucket{le="1.0"}') < 64  # batches above one
    assert metric(metrics, "unpaired_workers") == 2
    # a worker's refusal becomes the same HTTP error as in embedded mode
    assert corrupt.status_code == 400 and corrupt.json()["error"]["code"] == "corrupt"
    assert refused.status_code == 415 and refused.json()["error"]["code"] == "unsupported_format"


def test_a_worker_killed_mid_flight_loses_no_request(
    redis_server: LocalRedis, model_store: Path, tmp_path: Path
) -> None:
    paths = photos(tmp_path / "in", 160, side=192)
    expected = expected_outputs(model_store, paths)
    env = service_env(
        model_store, broker_url=redis_server.url, visibility_timeout_s=3, request_timeout_s=90
    )
    held = Gate(tmp_path / "held")  # the doomed worker's fourth batch waits here, never let go
    first = worker_process(
        {**env, "UNPAIRED_FAILPOINTS": failpoints(held.failpoint("batch", after=3))},
        tmp_path / "doomed.log",
        "doomed",
    )
    try:
        with running_server(env, tmp_path / "api.log", ready=False) as server:
            wait_for_workers(server.url, 1)

            async def scenario() -> list[httpx.Response]:
                limits = httpx.Limits(max_connections=len(paths))
                async with httpx.AsyncClient(timeout=120, limits=limits) as http:
                    requests = [
                        asyncio.ensure_future(
                            http.post(server.url + URL, content=p.read_bytes(), headers=PNG)
                        )
                        for p in paths
                    ]
                    await eventually(lambda: held.reached, "the doomed worker's fourth batch")
                    assert not all(r.done() for r in requests)
                    os.kill(first.pid, signal.SIGKILL)  # with requests in its hands
                    first.wait()
                    with running_workers(env, tmp_path, count=1):
                        return list(await asyncio.gather(*requests))

            responses = asyncio.run(scenario())
    finally:
        stop_process(first)
    assert Counter(r.status_code for r in responses) == {200: 160}
    assert [r.content for r in responses] == expected
    served_by = Counter(r.headers["x-worker"] for r in responses)
    assert served_by["w0"] > 0  # the replacement took over, redelivered requests included


def test_a_redis_outage_is_a_quick_503_and_everything_recovers_by_itself(
    tmp_path: Path, model_store: Path, make_redis: Callable[..., LocalRedis]
) -> None:
    server_redis = make_redis(tmp_path / "redis").start()
    env = service_env(model_store, broker_url=server_redis.url)  # requests may wait 60 s
    try:
        with (
            running_workers(env, tmp_path, count=1) as (worker,),
            running_server(env, tmp_path / "api.log", ready=False) as server,
        ):
            wait_for_workers(server.url, 1)
            body = photos(tmp_path / "in", 1)[0].read_bytes()
            assert httpx.post(server.url + URL, content=body, headers=PNG).status_code == 200
            server_redis.stop()
            # answered at once, not after the request's 60 s deadline in a queue nobody reads
            down = httpx.post(server.url + URL, content=body, headers=PNG, timeout=30)
            assert down.status_code == 503 and int(down.headers["retry-after"]) >= 1
            assert down.json()["error"]["code"] == "broker_unavailable"
            assert httpx.get(server.url + "/readyz", timeout=30).status_code == 503
            assert httpx.get(server.url + "/healthz", timeout=30).status_code == 200
            server_redis.start()
            wait_for_workers(server.url, 1)  # neither the API nor the worker was restarted
            again = httpx.post(server.url + URL, content=body, headers=PNG, timeout=30)
            assert again.status_code == 200
            assert worker.poll() is None and server.process.poll() is None
    finally:
        server_redis.stop()


def test_restarting_the_api_needs_no_worker_restart(
    redis_server: LocalRedis, model_store: Path, tmp_path: Path
) -> None:
    env = service_env(model_store, broker_url=redis_server.url)
    body = photos(tmp_path / "in", 1)[0].read_bytes()
    with running_workers(env, tmp_path, count=1) as (worker,):
        for attempt in range(2):
            with running_server(env, tmp_path / f"api-{attempt}.log", ready=False) as server:
                wait_for_workers(server.url, 1)
                response = httpx.post(server.url + URL, content=body, headers=PNG, timeout=30)
                assert response.status_code == 200 and response.headers["x-worker"] == "w0"
        assert worker.poll() is None


def _queued_payloads(client: redis.Redis, queue: str) -> list[tuple[int, dict[str, object]]]:
    """(message size, task payload) of each message waiting in a Celery queue on Redis."""
    found = []
    for raw in client.lrange(queue, 0, -1):
        message = json.loads(raw)
        args, _kwargs, _embed = msgpack.unpackb(base64.b64decode(message["body"]))
        found.append((len(raw), args[0]))
    return found


def test_large_images_travel_by_reference_and_the_queue_is_bounded(
    redis_server: LocalRedis, model_store: Path, tmp_path: Path
) -> None:
    env = service_env(
        model_store, broker_url=redis_server.url, blob_threshold_bytes=2000, max_queue=2
    )
    small, large, third = photos(tmp_path / "in", 3, side=128)
    small_bytes = small.read_bytes()[:1500]  # not an image, but small: travels inline
    client = redis.Redis.from_url(redis_server.url)
    with running_server(env, tmp_path / "api.log", ready=False) as server:

        async def scenario() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
                waiting = [
                    asyncio.ensure_future(http.post(URL, content=body, headers=PNG))
                    for body in (large.read_bytes(), small_bytes)
                ]
                await eventually(  # no worker yet: they wait
                    lambda: client.llen("unpaired.interactive") == 2, "two requests queued"
                )
                await http.get("/metrics")  # the API looks at the queue's length afresh
                full = await http.post(URL, content=third.read_bytes(), headers=PNG)
                queued = _queued_payloads(client, "unpaired.interactive")
                sizes = {"blob" in p["image"]: size for size, p in queued}  # type: ignore[operator]
                assert sizes[True] < 2000 < len(large.read_bytes())  # a key, not the image
                assert sizes[False] > 1500  # the small one inside the message
                with running_workers(env, tmp_path, count=1):
                    return [full, *(await asyncio.gather(*waiting))]

        full, large_done, small_done = asyncio.run(scenario())
    assert full.status_code == 503 and full.json()["error"]["code"] == "queue_full"
    assert "retry-after" in full.headers
    assert large_done.status_code == 200
    assert large_done.content == expected_outputs(model_store, [large])[0]
    assert small_done.status_code == 400  # the truncated file, refused by the worker
    assert client.keys("unpaired:blob:*") == []  # inputs and outputs cleaned up


def test_serve_with_workers_runs_a_private_redis_and_stops_it(
    model_store: Path, tmp_path: Path
) -> None:
    port = free_port()
    stack = unpaired_process(  # the one-machine form: `unpaired serve --workers 1`
        (*API_COMMAND, "--workers", "1"),
        {**service_env(model_store), "UNPAIRED_PORT": str(port)},
        tmp_path / "log",
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def one_worker() -> bool:
            with contextlib.suppress(httpx.TransportError):
                ready = httpx.get(f"{url}/readyz", timeout=5)  # ready before any worker is
                return ready.status_code == 200 and ready.json()["checks"]["workers"] == 1
            return False

        wait_until(one_worker, "the API and its worker are up", timeout=90)
        children = psutil.Process(stack.pid).children(recursive=True)
        names = [" ".join(c.cmdline()) for c in children]
        assert any("redis-server" in n for n in names) and any("cli worker" in n for n in names)
        body = photos(tmp_path / "in", 1)[0].read_bytes()
        response = httpx.post(url + URL, content=body, headers=PNG, timeout=30)
        assert response.status_code == 200 and response.headers["x-worker"]
    finally:
        stop_process(stack)
    _, alive = psutil.wait_procs(children, timeout=30)
    assert alive == []  # the workers and the private Redis stopped with it
