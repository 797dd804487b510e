"""Bulk jobs end to end, as deployed: real `unpaired serve` and `unpaired worker` processes, a
private redis-server (distributed) or SQLite (embedded), real HTTP. Nothing is mocked."""

from __future__ import annotations

import io
import os
import signal
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from cli.local_redis import LocalRedis
from tests.cli.test_cli import unpaired
from tests.service.distributed.test_distributed import photos
from tests.service.servers import (
    running_server,
    running_workers,
    service_env,
    stop_process,
    wait_for_workers,
    worker_process,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def zipped(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*.png")):
            archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def submit(url: str, archive: bytes, **fields: str) -> str:
    """A job of `archive` on the tiny model (AtoB), or on what `fields` say."""
    response = httpx.post(
        f"{url}/v1/jobs",
        data={"model": "tiny", "direction": "AtoB", **fields},
        files={"archive": ("in.zip", archive, "application/zip")},
        timeout=120,
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def job(url: str, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()
    return body


def wait_until(
    url: str, job_id: str, done_at_least: int = 0, timeout: float = 300
) -> dict[str, Any]:
    """Until the job has `done_at_least` images done (or, with 0, has finished)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = job(url, job_id)
        if done_at_least and status["counts"]["done"] >= done_at_least:
            return status
        if not done_at_least and status["state"] not in ("queued", "running"):
            return status
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id}: {status}")


def settled(url: str, job_id: str, quiet_s: float = 2.0, timeout: float = 60) -> dict[str, Any]:
    """A cancelled job's status once no chunk has recorded anything for `quiet_s` (a chunk in
    hand when it was cancelled records what it finished; on a busy machine that takes a while)."""
    deadline = time.monotonic() + timeout
    last = job(url, job_id)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = job(url, job_id)
        if now["counts"] == last["counts"]:
            return now
        last = now
    raise TimeoutError(f"job {job_id} never settled: {last}")


def outputs(url: str, job_id: str) -> dict[str, bytes]:
    response = httpx.get(f"{url}/v1/jobs/{job_id}/result", timeout=120)
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = archive.namelist()
        assert len(names) == len(set(names))  # nothing twice
        return {name: archive.read(name) for name in names}


def cli_outputs(model_store: Path, folder: Path, out: Path) -> dict[str, bytes]:
    unpaired(
        "translate", "tiny", folder, "--direction", "AtoB", "--out", out, "--store", model_store
    )
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def test_a_thousand_image_job_survives_a_killed_worker_and_a_restarted_api(
    redis_server: LocalRedis, model_store: Path, tmp_path: Path
) -> None:
    photos(tmp_path / "in", 1000)
    expected = cli_outputs(model_store, tmp_path / "in", tmp_path / "cli")
    env = service_env(
        model_store,
        broker_url=redis_server.url,
        visibility_timeout_s=3,
        chunk_size=25,
        jobs_dir=tmp_path / "jobs",
    )
    doomed = worker_process(env, tmp_path / "doomed.log", "doomed")
    try:
        with running_server(env, tmp_path / "api-1.log", ready=False) as server:
            wait_for_workers(server.url, 1)
            job_id = submit(server.url, zipped(tmp_path / "in"))
            wait_until(server.url, job_id, done_at_least=100)
        # the API is gone mid-job; the worker goes on
        os.kill(doomed.pid, signal.SIGKILL)  # with chunks in its hands
        doomed.wait()
        with (
            running_workers(env, tmp_path, count=1),
            running_server(env, tmp_path / "api-2.log", ready=False) as server,
        ):
            wait_for_workers(server.url, 1)
            status = job(server.url, job_id)  # still there after the restart
            assert status["state"] in ("running", "succeeded")
            done = wait_until(server.url, job_id)
            assert done["state"] == "succeeded", done
            assert done["counts"] == {"total": 1000, "done": 1000, "failed": 0}
            got = outputs(server.url, job_id)
    finally:
        stop_process(doomed)
    assert got.keys() == expected.keys()
    assert got == expected  # byte-identical to `unpaired translate`, each exactly once
    written = sorted(p.name for p in (tmp_path / "jobs" / job_id / "outputs").iterdir())
    assert len(written) == 1000  # no partial files, no duplicates


def test_interactive_requests_are_served_while_a_job_runs(
    redis_server: LocalRedis, model_store: Path, tmp_path: Path
) -> None:
    paths = photos(tmp_path / "in", 800)
    env = service_env(  # 40 chunks: more than a worker could hold at once (its prefetch, 16)
        model_store,
        broker_url=redis_server.url,
        chunk_size=20,
        bulk_concurrency=1,
        jobs_dir=tmp_path / "jobs",
    )
    with (
        running_workers(env, tmp_path, count=1),
        running_server(env, tmp_path / "api.log", ready=False) as server,
    ):
        wait_for_workers(server.url, 1)
        job_id = submit(server.url, zipped(tmp_path / "in"))
        wait_until(server.url, job_id, done_at_least=1)
        # the worker runs one chunk at a time and leaves the others in Redis, so its prefetch
        # slots stay free for interactive requests (without that it would hold 16 chunks; a
        # few may be taken before its pause arrives)
        broker = redis.Redis.from_url(redis_server.url)
        in_hand = []
        for _ in range(20):
            finished_chunks = job(server.url, job_id)["counts"]["done"] // 20
            queued = broker.llen("unpaired.bulk")
            in_hand.append(40 - finished_chunks - queued)
            time.sleep(0.05)
        assert max(in_hand) <= 8, in_hand
        response = httpx.post(
            f"{server.url}/v1/models/tiny/translate?direction=AtoB",
            content=paths[0].read_bytes(),
            headers={"content-type": "image/png"},
            timeout=60,
        )
        assert response.status_code == 200
        during = job(server.url, job_id)
        assert during["state"] == "running"  # answered before the job ended
        cancelled = httpx.post(f"{server.url}/v1/jobs/{job_id}/cancel", timeout=30).json()
        assert cancelled["state"] == "cancelled"
        after = settled(server.url, job_id)  # the chunk in hand stops; no new one starts
        assert after["state"] == "cancelled" and after["counts"]["done"] < 800
        assert len(outputs(server.url, job_id)) == after["counts"]["done"]


def test_an_embedded_job_resumes_after_the_server_restarts(
    model_store: Path, tmp_path: Path
) -> None:
    photos(tmp_path / "in", 200)
    expected = cli_outputs(model_store, tmp_path / "in", tmp_path / "cli")
    env = service_env(model_store, chunk_size=10, jobs_dir=tmp_path / "jobs")
    with running_server(env, tmp_path / "api-1.log") as server:
        job_id = submit(server.url, zipped(tmp_path / "in"))
        first = wait_until(server.url, job_id, done_at_least=20)
        server.process.send_signal(signal.SIGKILL)  # no goodbye: chunks left running
        server.process.wait()
    assert first["counts"]["done"] < 200
    with running_server(env, tmp_path / "api-2.log") as server:
        done = wait_until(server.url, job_id)
        assert done["state"] == "succeeded", done
        assert done["counts"] == {"total": 200, "done": 200, "failed": 0}
        assert outputs(server.url, job_id) == expected
