"""Bulk jobs end to end, as deployed: real `unpaired serve` and `unpaired worker` processes, a
private redis-server (distributed) or SQLite (embedded), real HTTP. Nothing is mocked."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest
import redis

from cli.local_redis import LocalRedis
from tests.cli.test_cli import unpaired
from tests.service.distributed.test_distributed import photos
from tests.service.gates import Gate, failpoints
from tests.service.jobs_http import job, outputs, settled, submit, wait_for_job, zipped
from tests.service.servers import (
    running_server,
    running_workers,
    service_env,
    stop_process,
    wait_for_workers,
    worker_process,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


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
    held = Gate(tmp_path / "held")  # the doomed worker's fifth chunk waits here: in its hands
    doomed = worker_process(
        {**env, "UNPAIRED_FAILPOINTS": failpoints(held.failpoint("chunk", after=4))},
        tmp_path / "doomed.log",
        "doomed",
    )
    try:
        with running_server(env, tmp_path / "api-1.log", ready=False) as server:
            wait_for_workers(server.url, 1)
            job_id = submit(server.url, zipped(tmp_path / "in"))
            held.wait_reached()
            # the four chunks before it end (two run at once); then nothing more is done
            assert wait_for_job(server.url, job_id, done_at_least=100)["counts"]["done"] == 100
        # the API is gone mid-job; the worker goes on, until it is killed holding a chunk
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait()
        with (
            running_workers(env, tmp_path, count=1),
            running_server(env, tmp_path / "api-2.log", ready=False) as server,
        ):
            wait_for_workers(server.url, 1)
            status = job(server.url, job_id)  # still there after the restart
            assert status["state"] == "running" and status["counts"]["done"] < 1000
            done = wait_for_job(server.url, job_id)
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
    held = Gate(tmp_path / "held")  # the job's chunks wait here until the test has looked
    env = service_env(  # 40 chunks: more than a worker could hold at once (its prefetch, 16)
        model_store,
        broker_url=redis_server.url,
        chunk_size=20,
        bulk_concurrency=1,
        jobs_dir=tmp_path / "jobs",
        failpoints=failpoints(held.failpoint("chunk")),
    )
    with (
        running_workers(env, tmp_path, count=1),
        running_server(env, tmp_path / "api.log", ready=False) as server,
    ):
        wait_for_workers(server.url, 1)
        job_id = submit(server.url, zipped(tmp_path / "in"))
        held.wait_reached()  # a chunk is running
        response = httpx.post(
            f"{server.url}/v1/models/tiny/translate?direction=AtoB",
            content=paths[0].read_bytes(),
            headers={"content-type": "image/png"},
            timeout=60,
        )
        assert response.status_code == 200  # answered while the job runs
        # the worker runs one chunk at a time and leaves the others in Redis, so its prefetch
        # slots stay free for interactive requests (without that it would hold 16 chunks; a
        # few may be taken before its pause arrives)
        queued = redis.Redis.from_url(redis_server.url).llen("unpaired.bulk")
        assert 40 - queued <= 8, f"the worker holds {40 - queued} chunks"
        assert held.reached == 1  # bulk_concurrency: one chunk runs at a time
        cancelled = httpx.post(f"{server.url}/v1/jobs/{job_id}/cancel", timeout=30).json()
        assert cancelled["state"] == "cancelled" and cancelled["counts"]["done"] == 0
        held.open()
        after = settled(server.url, job_id)  # the chunk in hand stops; no new one starts
        assert after["state"] == "cancelled" and after["counts"]["done"] <= 20
        assert len(outputs(server.url, job_id)) == after["counts"]["done"]


def test_an_embedded_job_resumes_after_the_server_restarts(
    model_store: Path, tmp_path: Path
) -> None:
    photos(tmp_path / "in", 200)
    expected = cli_outputs(model_store, tmp_path / "in", tmp_path / "cli")
    env = service_env(model_store, chunk_size=10, jobs_dir=tmp_path / "jobs")
    held = Gate(tmp_path / "held")  # after two chunks, the next ones wait here
    first_env = {**env, "UNPAIRED_FAILPOINTS": failpoints(held.failpoint("chunk", after=2))}
    with running_server(first_env, tmp_path / "api-1.log") as server:
        job_id = submit(server.url, zipped(tmp_path / "in"))
        held.wait_reached()
        first = wait_for_job(server.url, job_id, done_at_least=20)
        server.process.send_signal(signal.SIGKILL)  # no goodbye: chunks left running
        server.process.wait()
    assert first["state"] == "running" and first["counts"]["done"] == 20
    with running_server(env, tmp_path / "api-2.log") as server:
        done = wait_for_job(server.url, job_id)
        assert done["state"] == "succeeded", done
        assert done["counts"] == {"total": 200, "done": 200, "failed": 0}
        assert outputs(server.url, job_id) == expected
