"""The API process of distributed mode needs neither torch nor onnxruntime.

With `UNPAIRED_BROKER_URL` set, `unpaired serve` loads no model: the catalog, the manifests,
image checks and settings are all it needs, so its image (deploy/Dockerfile.api) installs no
torch, and it starts in a fraction of the time and memory (docs/benchmarks.md, "API start-up").
Each check runs in a fresh interpreter, since this one has imported torch long ago: first the
app under Starlette's TestClient, reporting what it imported; then the real `unpaired serve`
process in an interpreter where torch, torchvision and onnxruntime cannot be imported at all
(as if not installed), translating through a real worker (which has them) on a private Redis.
The image's other two roles, embedded serving and the CPU worker, still import torch (marked
below: strict expected failures, which turn into failures once they no longer do).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from PIL import Image

from cli.local_redis import LocalRedis
from tests.service.servers import (
    ROOT,
    running_server,
    running_workers,
    service_env,
    wait_for_workers,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

HEAVY = ("torch", "torchvision", "onnxruntime")

#: Lists the models through the app, then says which of HEAVY this interpreter imported.
LIST_MODELS = textwrap.dedent(
    f"""
    import json, sys
    from starlette.testclient import TestClient
    from cli.main import app as cli_app  # what `unpaired serve` imports before the API
    from service.api.app import create_app
    from service.settings import load_settings

    settings = load_settings()
    assert settings.broker_url, "distributed mode"
    with TestClient(create_app(settings)) as client:
        response = client.get("/v1/models")
    print(json.dumps({{
        "status": response.status_code,
        "models": [m["name"] for m in response.json()["models"]],
        "imported": {{name: name in sys.modules for name in {HEAVY!r}}},
    }}))
    """
)


def not_installed(env: dict[str, str], folder: Path, names: Sequence[str]) -> dict[str, str]:
    """`env` for a process in which `names` cannot be imported, exactly as where they are not
    installed: a sitecustomize, which Python imports first, raises ModuleNotFoundError."""
    folder.mkdir(exist_ok=True)
    blocker = f"""
        import importlib.abc, sys

        class NotInstalled(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in {tuple(names)!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, NotInstalled())
        """
    (folder / "sitecustomize.py").write_text(textwrap.dedent(blocker))
    path = os.pathsep.join(filter(None, [str(folder), env.get("PYTHONPATH")]))
    return {**env, "PYTHONPATH": path}


def png(side: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (200, 120, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def translate_one(url: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/models/tiny/translate?direction=AtoB",
        content=png(),
        headers={"content-type": "image/png"},
        timeout=60,
    )


def logs(folder: Path) -> str:
    return "".join(
        f"\n--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}"
        for log in sorted(folder.glob("*.log"))
    )


def test_listing_models_in_distributed_mode_imports_no_torch(
    model_store: Path, redis_server: LocalRedis
) -> None:
    env = service_env(model_store, broker_url=redis_server.url, log_level="warning")
    done = subprocess.run(
        [sys.executable, "-c", LIST_MODELS],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] == 200
    assert report["models"] == ["tiny"]
    assert report["imported"] == dict.fromkeys(HEAVY, False), report["imported"]


def test_the_api_serves_and_translates_where_torch_is_not_installed(
    model_store: Path, redis_server: LocalRedis, tmp_path: Path
) -> None:
    env = service_env(model_store, broker_url=redis_server.url, request_timeout_s=120)
    api_env = not_installed(env, tmp_path / "no-torch", HEAVY)
    # the blocker really works: torch cannot be imported under it
    probe = subprocess.run(
        [sys.executable, "-c", "import torch"],
        env=api_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr, probe.stderr
    with (
        running_workers(env, tmp_path) as workers,  # a worker has torch and onnxruntime
        running_server(api_env, tmp_path / "server.log") as server,
    ):
        wait_for_workers(server.url, 1, timeout=90, processes=workers)
        models = httpx.get(f"{server.url}/v1/models", timeout=10)
        assert models.status_code == 200, models.text
        assert [m["name"] for m in models.json()["models"]] == ["tiny"]
        translated = translate_one(server.url)
        assert translated.status_code == 200, translated.text + logs(tmp_path)
        assert translated.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(translated.content)).size == (32, 32)
        assert httpx.get(f"{server.url}/", timeout=10).status_code == 200  # the web page
    log = (tmp_path / "server.log").read_text()
    assert "No module named" not in log, log[-3000:]


# The API image (deploy/Dockerfile.api) holds no torch, and also serves in embedded mode and
# runs docker-compose's CPU worker: both translate with onnxruntime alone (the engine imports
# torch only inside its torch backend).


def test_embedded_serving_on_the_cpu_needs_no_torch(model_store: Path, tmp_path: Path) -> None:
    env = service_env(model_store, device="cpu")
    env = not_installed(env, tmp_path / "no-torch", ("torch", "torchvision"))
    with running_server(env, tmp_path / "server.log") as server:
        response = translate_one(server.url)
    assert response.status_code == 200, response.text + logs(tmp_path)


def test_a_cpu_worker_needs_no_torch(
    model_store: Path, redis_server: LocalRedis, tmp_path: Path
) -> None:
    env = service_env(model_store, broker_url=redis_server.url, device="cpu", request_timeout_s=120)
    env = not_installed(env, tmp_path / "no-torch", ("torch", "torchvision"))
    with (
        running_workers(env, tmp_path) as workers,
        running_server(env, tmp_path / "server.log") as server,
    ):
        wait_for_workers(server.url, 1, timeout=90, processes=workers)
        response = translate_one(server.url)
    assert response.status_code == 200, response.text + logs(tmp_path)
