"""Fixtures of the API tests: the app over a store with the tiny model, in this process."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data

from service.api.app import create_app
from service.settings import Settings
from service.store.model_store import ModelStore
from tests.service.api.browser import browser, downloads  # noqa: F401 (fixtures of the page tests)
from tests.service.servers import running_server, service_env

ClientFactory = Callable[..., Any]


def png(height: int = 48, width: int = 64, offset: int = 0) -> bytes:
    """A real photo crop as PNG bytes."""
    rgb = data.astronaut()[offset : offset + height, offset : offset + width]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def one_way_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported model with only AtoB (as from one public .pth file)."""
    import torch

    from models import build_generator
    from models.manifest import Architecture
    from tests.conftest import TINY_ARCH, shared_export
    from training.export import ExportOptions, export_generators

    def export(into: Path) -> None:
        torch.manual_seed(1)
        export_generators(
            {"AtoB": build_generator("resnet_6blocks", ngf=4).eval()},
            into / "oneway",
            name="oneway",
            architecture=Architecture(**TINY_ARCH),
            options=ExportOptions(tiled=False),
        )

    return shared_export("oneway", tmp_path_factory.mktemp("one-way"), "oneway", export)


@pytest.fixture
def settings_for(model_store: Path, tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        options = {"jobs_dir": str(tmp_path / "jobs"), **overrides}
        return Settings(store=str(model_store), threads=1, **options)

    return make


@pytest.fixture
def api(settings_for: Callable[..., Settings]) -> Iterator[ClientFactory]:
    """Factory: `with api(**settings) as client:` runs the app (lifespan included)."""

    @contextmanager
    def serve(**overrides: Any) -> Iterator[TestClient]:
        with TestClient(create_app(settings_for(**overrides)), raise_server_exceptions=False) as c:
            yield c

    yield serve


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory, exported_model: Path) -> Iterator[str]:
    """A real `unpaired serve` (embedded mode, default settings) over a store with the tiny
    model, for the module's tests; its base URL."""
    root = tmp_path_factory.mktemp("live")
    ModelStore(root / "store").publish(exported_model)
    with running_server(service_env(root / "store"), root / "api.log") as server:
        yield server.url
