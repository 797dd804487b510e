"""Hostile traffic against a live `unpaired serve`: a burst of 10,000 requests and a huge upload.

(Hostile *files*, truncated, corrupt, bombs, empty, wrong types, are in test_translate_api.)
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from PIL import Image

from service.store.model_store import ModelStore
from tests.service.servers import Server, running_server, service_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

URL = "/v1/models/tiny/translate?direction=AtoB"


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 120, 40)).save(buffer, "PNG")
    return buffer.getvalue()


class PeakMemory:
    """The largest resident set size of a process, sampled every 20 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, exported_model: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("hostile")
    ModelStore(root / "store").publish(exported_model)
    env = service_env(root / "store", max_queue=32, max_inflight=128, max_request_bytes=8 * 2**20)
    with running_server(env, root / "api.log") as live:
        yield live


async def burst(url: str, count: int, connections: int) -> list[httpx.Response]:
    """`count` requests from `connections` clients sending back to back (each its own socket:
    httpx's pool slows down quadratically with thousands of queued requests)."""
    body, headers = tiny_png(), {"content-type": "image/png"}
    remaining = iter(range(count))
    responses: list[httpx.Response] = []

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            for _ in remaining:
                responses.append(await http.post(URL, content=body, headers=headers))

    await asyncio.gather(*(client() for _ in range(connections)))
    return responses


def test_a_burst_of_10000_requests_is_answered_quickly_and_memory_stays_bounded(
    server: Server,
) -> None:
    baseline = psutil.Process(server.process.pid).memory_info().rss
    with PeakMemory(server.process.pid) as memory:
        started = time.monotonic()
        responses = asyncio.run(burst(server.url, 10_000, connections=512))
        elapsed = time.monotonic() - started
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}, statuses  # served, or refused at once: nothing else
    assert statuses[200] > 0 and statuses[503] > 0, statuses
    refused = next(r for r in responses if r.status_code == 503)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] in {"overloaded", "queue_full"}
    assert memory.peak - baseline < 300 * 2**20, (baseline, memory.peak)
    assert elapsed < 240  # nothing hung (each request also had a 60 s client timeout)
    after = httpx.post(server.url + URL, content=tiny_png(), headers={"content-type": "image/png"})
    assert after.status_code == 200  # and the server is fine afterwards


def test_a_huge_multipart_upload_is_refused_while_streaming(server: Server) -> None:
    def body() -> Iterator[bytes]:  # 64 MiB without Content-Length, never held in memory
        yield b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        yield b"Content-Type: image/png\r\n\r\n"
        chunk = b"\0" * 2**20
        for _ in range(64):
            yield chunk
        yield b"\r\n--XyZ--\r\n"

    baseline = psutil.Process(server.process.pid).memory_info().rss
    with PeakMemory(server.process.pid) as memory:
        try:
            response = httpx.post(
                server.url + URL,
                content=body(),
                headers={
                    "content-type": "multipart/form-data; boundary=XyZ",
                    "x-request-id": "huge",
                },
                timeout=30,
            )
            assert response.status_code == 413
            assert response.json()["error"]["code"] == "too_large"
        except httpx.WriteError:
            pass  # the server answered and closed the connection before we finished sending
    # the app stopped at 8 MiB; what uvicorn reads after the answer it discards
    assert memory.peak - baseline < 32 * 2**20
    time.sleep(0.2)
    (line,) = [entry for entry in _access_log(server) if entry.get("request_id") == "huge"]
    assert line["status"] == 413 and line["error_code"] == "too_large"


def _access_log(server: Server) -> list[dict[str, object]]:
    entries = []
    for text in server.log.read_text().splitlines():
        if text.startswith("{"):
            entry = json.loads(text)
            if entry.get("logger") == "unpaired.access":
                entries.append(entry)
    return entries
