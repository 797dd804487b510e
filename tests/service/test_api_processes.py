"""`unpaired serve --processes N`: several API processes share one port in distributed mode, and
embedded mode (models and bulk jobs in the one API process) refuses it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from cli.launch import API_COMMAND
from cli.local_redis import LocalRedis
from tests.service.api.conftest import png
from tests.service.servers import ROOT, running_server, running_workers, service_env
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _ready_pids(log: Path) -> set[int]:
    """The API processes that said they were ready (JSON log lines)."""
    pids = set()
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            said = re.fullmatch(
                r"API process (\d+) ready \(distributed mode\)", json.loads(line)["message"]
            )
            if said:
                pids.add(int(said[1]))
    return pids


def test_two_api_processes_answer_on_one_port(
    tmp_path: Path, model_store: Path, make_redis: Callable[..., LocalRedis]
) -> None:
    log = tmp_path / "api.log"
    with make_redis(tmp_path / "redis") as redis:
        env = service_env(model_store, broker_url=redis.url)
        with (
            running_workers(env, tmp_path),
            running_server(env, log, command=(*API_COMMAND, "--processes", "2")) as server,
        ):
            # /readyz answers once the first one is ready
            pids = wait_until(
                lambda: _ready_pids(log) if len(_ready_pids(log)) >= 2 else None,
                lambda: f"two API processes ready: {log.read_text()[-2000:]}",
            )
            children = psutil.Process(server.process.pid).children(recursive=True)
            assert len(pids) == 2 and pids <= {c.pid for c in children}, log.read_text()[-2000:]

            def translate(i: int) -> int:
                response = httpx.post(
                    f"{server.url}/v1/models/tiny/translate?direction=AtoB",
                    content=png(offset=i),
                    headers={"content-type": "image/png"},
                    timeout=60,
                )
                return response.status_code

            with ThreadPoolExecutor(8) as pool:
                assert set(pool.map(translate, range(24))) == {200}
        assert not any(c.is_running() and c.status() != "zombie" for c in children)


def test_embedded_mode_refuses_several_processes(tmp_path: Path, model_store: Path) -> None:
    env = service_env(model_store)
    done = subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--processes", "2"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "--processes needs distributed mode" in done.stderr
    assert "Traceback" not in done.stderr
