"""Fixtures of the serving tests: a store with the tiny model, a private Redis, live servers."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.local_redis import LocalRedis


def _require(binary: str, package: str) -> None:
    """Missing system packages fail in CI (the set-up installs them) and skip elsewhere."""
    if shutil.which(binary) is None:
        message = f"{binary} is not installed (apt-get install {package}; `make system-deps`)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[LocalRedis]:
    """A private redis-server on a free port, stopped afterwards (never the shared one)."""
    _require("redis-server", "redis-server")
    with LocalRedis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def require_chromium() -> None:
    _require("chromium", "chromium")
    _require("chromedriver", "chromium-driver")
