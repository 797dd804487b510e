"""Workers scaled to zero: the API stays ready, a request waits in the queue for a worker that
starts after it was accepted, and one whose deadline passes first gets its 504.

A private redis-server, real `unpaired serve` and `unpaired worker` processes, real HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import cast

import httpx
import msgpack
import pytest
import redis

from cli.local_redis import LocalRedis
from service.distributed.remote_translator import (
    ACTIVITY_WINDOW_S,
    RemoteTranslator,
    activity_key,
)
from service.errors import DeadlineExceeded
from service.inference.requests import OutputSpec, TranslationRequest
from service.settings import Settings
from tests.service.distributed.test_distributed import (
    PNG,
    URL,
    expected_outputs,
    metric,
    photos,
)
from tests.service.servers import running_server, running_workers, service_env, wait_for_workers
from tests.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

QUEUE = "unpaired.interactive"


def test_ready_with_no_worker_and_a_request_waits_for_one_started_later(
    redis_server: LocalRedis, model_store: Path, tmp_path: Path
) -> None:
    body = photos(tmp_path / "in", 1)[0]
    env = service_env(model_store, broker_url=redis_server.url)
    client = redis.Redis.from_url(redis_server.url)
    with running_server(env, tmp_path / "api.log") as server:  # waits for /readyz 200
        ready = httpx.get(server.url + "/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        checks = ready.json()["checks"]
        assert checks["broker"] == "ok"
        assert checks["workers"] == 0 and checks["worker_names"] == []
        assert metric(httpx.get(server.url + "/metrics").text, "unpaired_workers") == 0

        async def scenario() -> httpx.Response:
            async with httpx.AsyncClient(base_url=server.url, timeout=90) as http:
                pending = asyncio.ensure_future(
                    http.post(URL, content=body.read_bytes(), headers=PNG)
                )
                # accepted and queued (a refusal for want of workers would come before)
                await eventually(lambda: client.llen(QUEUE) == 1, "the request is queued")
                assert not pending.done()
                with running_workers(env, tmp_path, count=1):  # only now a worker starts
                    response = await pending
                    wait_for_workers(server.url, 1)
                    report = httpx.get(server.url + "/readyz", timeout=5).json()["checks"]
                    assert report["worker_names"] == ["w0"]
                    metrics = httpx.get(server.url + "/metrics").text
                    assert metric(metrics, "unpaired_workers") == 1
                return response

        response = asyncio.run(scenario())
    assert response.status_code == 200, response.text
    assert response.headers["x-worker"] == "w0"
    assert response.content == expected_outputs(model_store, [body])[0]
    assert client.llen(QUEUE) == 0
    # what keeps KEDA's last worker while requests come (deploy/k8s/autoscaling.yaml): the
    # seconds with a request, for the window only
    recent = activity_key(QUEUE)
    assert client.type(recent) == b"zset" and client.zcard(recent) >= 1
    assert 0 < client.ttl(recent) <= ACTIVITY_WINDOW_S
    seconds = cast(list[tuple[bytes, float]], client.zrange(recent, 0, -1, withscores=True))
    newest = max(score for _, score in seconds)
    assert time.time() - 120 < newest <= time.time()


def _queued_task_ids(client: redis.Redis) -> list[str]:
    return [json.loads(raw)["headers"]["id"] for raw in client.lrange(QUEUE, 0, -1)]


def test_a_deadline_that_passes_with_no_worker_is_a_504_and_its_task_expires(
    redis_server: LocalRedis, model_store: Path, tmp_path: Path
) -> None:
    body = photos(tmp_path / "in", 1)[0].read_bytes()
    env = service_env(
        model_store, broker_url=redis_server.url, request_timeout_s=3, visibility_timeout_s=2
    )
    client = redis.Redis.from_url(redis_server.url)
    with running_server(env, tmp_path / "api.log") as server:
        late = httpx.post(server.url + URL, content=body, headers=PNG, timeout=30)
        # it waited for a worker until its deadline: not refused for want of workers
        assert late.status_code == 504, late.text
        assert late.json()["error"]["code"] == "deadline_exceeded"
        (expired,) = _queued_task_ids(client)  # still queued: no worker ever took it
        with running_workers(env, tmp_path, count=1):
            wait_for_workers(server.url, 1)
            again = httpx.post(server.url + URL, content=body, headers=PNG, timeout=30)
            assert again.status_code == 200, again.text
            assert client.llen(QUEUE) == 0
    # the worker skipped the expired request instead of translating it for nobody
    stored = client.get(f"celery-task-meta-{expired}")
    assert stored is not None, "the worker never reached the expired request"
    meta = msgpack.unpackb(stored)  # the result backend's serializer
    assert meta["status"] == "REVOKED", meta


def test_the_translator_itself_gives_up_at_the_deadline(
    redis_server: LocalRedis, model_store: Path
) -> None:
    """Without the router's own timeout around it, RemoteTranslator answers DeadlineExceeded
    (a 504), not a refusal for lack of workers nor a BrokerUnavailable (DeadlineExceeded is a
    TimeoutError, hence an OSError, like a lost connection)."""
    settings = Settings(store=str(model_store), broker_url=redis_server.url)

    async def scenario() -> tuple[bool, BaseException | None]:
        translator = await RemoteTranslator.connect(settings)
        try:
            ready = (await translator.readiness()).ready
            request = TranslationRequest(
                model="tiny",
                direction="AtoB",
                data=b"\x89PNG not translated",
                output=OutputSpec(),
                deadline=time.time() + 1.5,
            )
            try:
                await translator.translate(request)
            except Exception as exc:
                return ready, exc
            return ready, None
        finally:
            await translator.close()

    ready, error = asyncio.run(scenario())
    assert ready, "no worker is needed to be ready"
    assert isinstance(error, DeadlineExceeded), repr(error)
