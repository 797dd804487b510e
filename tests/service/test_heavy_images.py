"""Large photos against real server processes (the demo-size model, ResNet-6 ngf 16, tiled):
work stops when nobody waits for it, memory is admitted by pixels, small requests are served
between a large image's tile steps, in embedded mode, on a worker in distributed mode, and for
bulk-job members.

Failpoint gates (tests/service/gates.py) hold a large image at a chosen tile step, so that the
deadline, the hang-up or the cancel lands while it is being tiled, on any machine. One more
gate, open from the start, logs every step taken: once the image's memory is given back, that
count is final, and it must show that the steps after the held one were dropped. (Times and
memory peaks of 1 to 64 Mpx photos: `python -m bench.heavy`.)
"""

from __future__ import annotations

import io
import socket
import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.harness import MODEL, export_bench_model
from bench.heavy import photo_jpeg, small_png
from cli.local_redis import LocalRedis
from service.inference.engine import Engine, EngineOptions
from service.store.model_store import ModelStore
from tests.conftest import shared_export
from tests.service.gates import Gate, failpoints
from tests.service.jobs_http import settled, submit
from tests.service.servers import running_server, running_workers, service_env, wait_for_workers
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MB = 2**20
SIDE = 2400  # tiled (over UNPAIRED_MAX_UNTILED_PIXELS), in 25 steps of two 512x512 tiles
DEADLINE_S = 6.0


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("heavy")
    shared_export(
        "heavy-bench-resnet6-16-tiled",
        folder,
        MODEL,
        lambda into: export_bench_model(into, "resnet_6blocks", 16, fp16=False, tiled=True),
    )
    return folder


@pytest.fixture(scope="module")
def large() -> bytes:
    return photo_jpeg(SIDE, SIDE)


@pytest.fixture(scope="module")
def budget_mb(demo_store: Path) -> int:
    """A memory budget whose large-image share (0.75) holds one large image, not two."""
    engine = Engine(ModelStore(demo_store).open(MODEL), "AtoB", EngineOptions(device="cpu"))
    cost = engine.working_bytes(SIDE, SIDE)
    return -(-2 * cost // MB)  # large share: 1.5 x cost


class Heavy:
    """A running service whose large images wait at the `held` gates and log each step."""

    def __init__(self, url: str, held: list[Gate], steps: Gate, mode: str) -> None:
        self.url, self.held, self.steps, self.mode = url, held, steps, mode

    def translate(
        self, data: bytes, *, fmt: str = "jpeg", timeout: httpx.Timeout | float = 120
    ) -> httpx.Response:
        return httpx.post(
            f"{self.url}{_path(fmt)}", content=data, headers=_kind(data), timeout=timeout
        )

    def memory(self) -> dict[str, Any]:
        checks: dict[str, Any] = httpx.get(f"{self.url}/readyz", timeout=30).json()["checks"]
        return dict(checks["memory"])

    def wait_memory_returned(self) -> None:
        """Until no image holds memory: whatever was dropped has been closed."""
        wait_until(
            lambda: self.memory()["used_bytes"] == 0,
            lambda: f"{self.mode}: memory still held: {self.memory()}",
        )


def _path(fmt: str) -> str:
    return f"/v1/models/{MODEL}/translate?direction=AtoB&format={fmt}"


def _kind(data: bytes) -> dict[str, str]:
    return {"Content-Type": "image/jpeg" if data[:2] == b"\xff\xd8" else "image/png"}


@contextmanager
def heavy_service(
    mode: str,
    store: Path,
    folder: Path,
    budget_mb: int,
    make_redis: Callable[..., LocalRedis],
    held_steps: int = 1,
) -> Iterator[Heavy]:
    """The service in `mode`; a large image's step k (1-based, k <= held_steps) waits at
    gate `held[k - 1]`, every step logs itself at the open gate `steps`."""
    held = [Gate(folder / f"step-{k}") for k in range(1, held_steps + 1)]
    steps = Gate(folder / "steps")
    steps.open()
    points = [gate.failpoint("step", after=k, times=1) for k, gate in enumerate(held)]
    env = service_env(
        store,
        request_timeout_s=DEADLINE_S,
        visibility_timeout_s=3,  # shorter than a large image: redelivered copies must wait
        memory_budget_mb=budget_mb,
        log_level="warning",
        heartbeat_s=0.5,  # /readyz soon sees a worker's memory given back
        failpoints=failpoints(steps.failpoint("step"), *points),
    )
    if mode == "embedded":
        with running_server(env, folder / "api.log") as server:
            yield Heavy(server.url, held, steps, mode)
        return
    with make_redis(folder / "redis") as redis_server:
        env = {**env, "UNPAIRED_BROKER_URL": redis_server.url}
        with (
            running_workers(env, folder) as workers,
            running_server(env, folder / "api.log") as server,
        ):
            wait_for_workers(server.url, 1, processes=workers)
            yield Heavy(server.url, held, steps, mode)


@pytest.fixture(params=["embedded", "distributed"])
def start(
    request: pytest.FixtureRequest,
    demo_store: Path,
    budget_mb: int,
    tmp_path: Path,
    make_redis: Callable[..., LocalRedis],
) -> Iterator[Callable[..., Heavy]]:
    """`start(held_steps=1)`: the service for this test, in each mode."""
    with ExitStack() as stack:

        def started(held_steps: int = 1) -> Heavy:
            return stack.enter_context(
                heavy_service(
                    request.param, demo_store, tmp_path, budget_mb, make_redis, held_steps
                )
            )

        yield started


def test_a_passed_deadline_stops_the_large_images_tiles(
    start: Callable[..., Heavy], large: bytes
) -> None:
    service = start()
    response = service.translate(large)  # held at its first step until the deadline passed
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "deadline_exceeded"
    (first,) = service.held
    first.open()
    service.wait_memory_returned()
    assert service.steps.reached == 1  # the held step ended; the others were dropped


def test_a_client_that_hangs_up_frees_the_engine(start: Callable[..., Heavy], large: bytes) -> None:
    service = start()
    host, port = service.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as client:
        head = (
            f"POST {_path('jpeg')} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: image/jpeg\r\nContent-Length: {len(large)}\r\n\r\n"
        )
        client.sendall(head.encode() + large)
        (first,) = service.held
        first.wait_reached()
    # the client hung up while its image was being tiled
    first.open()
    service.wait_memory_returned()
    assert service.steps.reached == 1


def test_a_second_large_upload_beyond_the_budget_gets_503(
    start: Callable[..., Heavy], large: bytes
) -> None:
    service = start()
    answers: list[httpx.Response] = []
    holding = threading.Thread(target=lambda: answers.append(service.translate(large)))
    holding.start()
    (first,) = service.held
    first.wait_reached()  # the first large image holds its memory, tiling
    refused = service.translate(photo_jpeg(SIDE, SIDE, seed=1))
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "over_budget"
    assert refused.headers["Retry-After"] == "1"
    wait_until(lambda: service.memory()["refused"] >= 1, "the refusal counted in /readyz")
    first.open()
    holding.join(120)
    assert [a.status_code for a in answers] in ([200], [504])  # done, or past its deadline
    assert service.translate(small_png(), fmt="png").status_code == 200


def test_a_small_request_is_served_between_a_large_images_steps(
    start: Callable[..., Heavy], large: bytes
) -> None:
    """The small request arrives while step 1 runs; step 2 waits at its gate until the small
    one is answered, which it could never be if it had to wait for the large image."""
    service = start(held_steps=2)
    first, second = service.held
    large_answer: list[httpx.Response] = []
    holding = threading.Thread(target=lambda: large_answer.append(service.translate(large)))
    holding.start()
    first.wait_reached()
    small: list[httpx.Response] = []
    asking = threading.Thread(
        target=lambda: small.append(service.translate(small_png(), fmt="png"))
    )
    asking.start()
    first.open()
    asking.join(60)
    assert [a.status_code for a in small] == [200], small
    assert not large_answer and service.steps.reached <= 2  # the large one is still held
    second.open()
    holding.join(120)
    assert [a.status_code for a in large_answer] in ([200], [504])


def _archive(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_cancelling_a_job_drops_its_large_members_remaining_tiles(
    start: Callable[..., Heavy], large: bytes
) -> None:
    service = start()
    archive = _archive({"large.jpg": large, "small.png": small_png()})
    job_id = submit(service.url, archive, model=MODEL, format="jpeg")
    (first,) = service.held
    first.wait_reached()
    cancelled = httpx.post(f"{service.url}/v1/jobs/{job_id}/cancel", timeout=30)
    assert cancelled.status_code == 200, cancelled.text
    first.open()
    ended = settled(service.url, job_id)  # the cancelled chunk ended
    service.wait_memory_returned()
    assert service.steps.reached == 1
    assert ended["state"] == "cancelled" and ended["counts"]["done"] <= 1
    assert all(e["item"] != "large.jpg" for e in ended["errors"])  # dropped, not failed
