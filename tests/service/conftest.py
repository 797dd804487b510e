"""Fixtures of the serving tests: a store with the tiny model, a private Redis, live servers."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli.local_redis import LocalRedis


def require_binary(binary: str, package: str) -> str:
    """The path of a system program the tests drive for real. Missing, it fails in CI (the
    set-up installs it: `make system-deps`) and skips elsewhere, with the package to install."""
    found = shutil.which(binary)
    if found is None:
        message = f"{binary} is not installed (apt-get install {package}; `make system-deps`)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def make_redis() -> Callable[..., LocalRedis]:
    """Private redis-servers: `with make_redis(folder) as server:` (or `persistent=True` for
    an append-only file), each on a free port and stopped afterwards, never the shared one.
    The one way tests get a Redis, so a machine without redis-server says so once, readably."""
    require_binary("redis-server", "redis-server")
    return LocalRedis


@pytest.fixture
def redis_server(make_redis: Callable[..., LocalRedis], tmp_path: Path) -> Iterator[LocalRedis]:
    """A private redis-server for one test."""
    with make_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """Debian's chromium and chromedriver, (browser, driver) paths."""
    return require_binary("chromium", "chromium"), require_binary("chromedriver", "chromium-driver")
