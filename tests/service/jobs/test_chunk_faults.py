"""A chunk that crashes (a bug, not a passing failure) still ends its job, in both modes.

The fault is injected into the real serving processes (`unpaired serve`, `unpaired worker`)
through a `sitecustomize` module on their PYTHONPATH: it makes running any chunk that holds an
image named `crash-*.png` raise. The job must finish `partially_failed`, the other chunk's
image written, the crashed chunk's image failed with the reason. Before attempts.py, the Celery
bulk task retried only passing errors, so such a chunk was never recorded and its job stayed
`running` for ever.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from cli.local_redis import LocalRedis
from tests.service.distributed.test_distributed import photos
from tests.service.jobs_http import job, submit, wait_for_job, zipped
from tests.service.servers import running_server, running_workers, service_env, wait_for_workers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

FAULT = '''
    """Test-only fault: a chunk holding an image named crash-* raises (not a passing error)."""
    import service.jobs.attempts as attempts

    _run_chunk = attempts.run_chunk


    def run_chunk(spec, items, translator, **options):
        if any(item.name.startswith("crash-") for item in items):
            raise ZeroDivisionError("injected fault")
        return _run_chunk(spec, items, translator, **options)


    attempts.run_chunk = run_chunk
'''


def _faulty_env(folder: Path, env: dict[str, str]) -> dict[str, str]:
    hook = folder / "fault-hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(FAULT))
    path = os.pathsep.join(p for p in (str(hook), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path}


def _inputs(folder: Path) -> bytes:
    """Two images, one per chunk: `crash-0.png` (whose chunk crashes) and `photo-001.png`."""
    first, _ = photos(folder, 2)
    first.rename(folder / "crash-0.png")
    return zipped(folder)


def _check_finished(url: str, job_id: str) -> None:
    done = wait_for_job(url, job_id, timeout=120)
    assert done["state"] == "partially_failed", done
    assert done["counts"] == {"total": 2, "done": 1, "failed": 1}
    (failure,) = done["errors"]
    assert failure["item"] == "crash-0.png"
    assert failure["error"] == "internal error: ZeroDivisionError: injected fault"
    assert job(url, job_id)["finished_at"] is not None


def test_a_crashing_chunk_ends_its_job_in_embedded_mode(model_store: Path, tmp_path: Path) -> None:
    env = _faulty_env(tmp_path, service_env(model_store, chunk_size=1, jobs_dir=tmp_path / "jobs"))
    with running_server(env, tmp_path / "api.log") as server:
        _check_finished(server.url, submit(server.url, _inputs(tmp_path / "in")))


def test_a_crashing_chunk_ends_its_job_in_distributed_mode(
    redis_server: LocalRedis, model_store: Path, tmp_path: Path
) -> None:
    env = service_env(
        model_store, broker_url=redis_server.url, chunk_size=1, jobs_dir=tmp_path / "jobs"
    )
    with (
        running_workers(_faulty_env(tmp_path, env), tmp_path),
        running_server(env, tmp_path / "api.log", ready=False) as server,
    ):
        wait_for_workers(server.url, 1)
        _check_finished(server.url, submit(server.url, _inputs(tmp_path / "in")))
