"""Hostile traffic against a live `unpaired serve`: a burst far beyond the queue, a huge upload.

(Hostile *files*, truncated, corrupt, bombs, empty, wrong types, are in test_translate_api.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.hostile import burst, streamed_multipart, tiny_png
from service.store.model_store import ModelStore
from tests.service.gates import Gate, failpoints
from tests.service.servers import Server, running_server, service_env
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

URL = "/v1/models/tiny/translate?direction=AtoB"


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> Gate:
    """The server's first engine batch waits here, so that the burst meets a full queue."""
    return Gate(tmp_path_factory.mktemp("gates") / "first-batch")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, exported_model: Path, held: Gate
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("hostile")
    ModelStore(root / "store").publish(exported_model)
    env = service_env(
        root / "store",
        max_queue=32,
        max_inflight=128,
        max_request_bytes=8 * 2**20,
        failpoints=failpoints(held.failpoint("batch", times=1)),
    )
    with running_server(env, root / "api.log") as live:
        yield live


def test_a_burst_beyond_the_queue_is_served_or_refused_at_once_and_nothing_else(
    server: Server, held: Gate
) -> None:
    """2,000 requests from 256 clients while the engine is held: the queue fills, the rest
    are refused with 503 + Retry-After; once the engine goes on, requests are served again.
    (Its speed and memory with 10,000 requests: `python -m bench.hostile`.)"""
    responses = asyncio.run(
        burst(server.url, 2_000, connections=256, path=URL, on_refused=held.open)
    )
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}, statuses  # served, or refused at once: nothing else
    assert statuses[200] > 0 and statuses[503] > 0, statuses
    assert held.reached == 1 and held.path.exists()
    refused = next(r for r in responses if r.status_code == 503)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] in {"overloaded", "queue_full"}
    after = httpx.post(server.url + URL, content=tiny_png(), headers={"content-type": "image/png"})
    assert after.status_code == 200  # and the server is fine afterwards


def test_a_huge_multipart_upload_is_refused_while_streaming(server: Server) -> None:
    """64 MiB without Content-Length: the server answers 413 once it has read 8 MiB. Whether
    the client still reads that answer or finds the connection closed under its upload is the
    kernel's timing, so the answer is checked where it is certain: the server's access log
    (the in-process tests check the JSON body of a streamed 413). Its memory: bench.hostile."""
    answered: httpx.Response | None = None
    # the server may answer and close the connection before the upload ends
    with contextlib.suppress(httpx.WriteError):
        answered = httpx.post(
            server.url + URL,
            content=streamed_multipart(64),
            headers={"content-type": "multipart/form-data; boundary=XyZ", "x-request-id": "huge"},
            timeout=30,
        )
    line = wait_until(
        lambda: next((e for e in _access_log(server) if e.get("request_id") == "huge"), None),
        "the upload's access log line",
    )
    assert line["status"] == 413 and line["error_code"] == "too_large"
    if answered is not None:
        assert answered.status_code == 413, answered.text
        assert answered.json()["error"]["code"] == "too_large"


def _access_log(server: Server) -> list[dict[str, object]]:
    entries = []
    for text in server.log.read_text().splitlines():
        if text.startswith("{"):
            entry = json.loads(text)
            if entry.get("logger") == "unpaired.access":
                entries.append(entry)
    return entries
