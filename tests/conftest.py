"""Fixtures shared by the training and CLI tests: tiny configs that train in seconds on a CPU."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from training.config import TrainConfig, validate_config

TINY: dict[str, Any] = {
    "dataset": "day2night",
    "size": 32,
    "preprocess": "none",
    "generator": "resnet_6blocks",
    "ngf": 4,
    "ndf": 4,
    "batch_size": 2,
    "n_train": 16,
    "max_steps": 6,
    "log_every": 1,
    "sample_every": 3,
    "checkpoint_every": 3,
    "threads": 1,
    "pool_size": 4,
    "device": "cpu",
}


@pytest.fixture
def tiny_config(tmp_path: Path) -> Any:
    """Factory: a tiny, valid TrainConfig writing into tmp_path, with overrides."""

    def make(**overrides: Any) -> TrainConfig:
        return validate_config({**TINY, "out": tmp_path / "run", **overrides}, source="test")

    return make


def read_losses(run_dir: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run_dir / "losses.jsonl").read_text().splitlines()]


# --- exported models (export, store, engine and translate tests) ----------------------------

TINY_ARCH = {"generator": "resnet_6blocks", "ngf": 4, "norm": "instance"}


def export_tiny_model(folder: Path, name: str = "tiny", *, seed: int = 0, **kwargs: Any) -> Path:
    """Export a random-init tiny ResNet-6 pair (both directions; default: with fp16 and tiled
    graphs) into `folder/name`."""
    import torch

    from models import build_generator
    from models.manifest import Architecture
    from training.export import ExportOptions, export_generators

    torch.manual_seed(seed)
    nets = {d: build_generator("resnet_6blocks", ngf=4).eval() for d in ("AtoB", "BtoA")}
    target = folder / name
    kwargs.setdefault("options", ExportOptions(fp16=True))
    export_generators(nets, target, name=name, architecture=Architecture(**TINY_ARCH), **kwargs)
    return target


#: Exports shared by the test processes of one run (xdist workers), set by `_export_cache`.
_SHARED_EXPORTS: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def _export_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A folder every test process of this run sees (the parent of xdist's per-worker temp
    folders), where :func:`tiny_model` keeps what it exported once."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    _SHARED_EXPORTS[:] = [shared / "shared-exports"]


def shared_export(key: str, folder: Path, name: str, export: Callable[[Path], object]) -> Path:
    """`export(into)` (which writes the model `into/name`) run once per test run for `key`,
    copied into `folder/name`: an export takes the dynamo exporter tens of seconds, and the
    serving tests need the model, not the export (the export's own tests export each time)."""
    if not _SHARED_EXPORTS:
        export(folder)
        return folder / name
    cached = _SHARED_EXPORTS[0] / hashlib.sha256(key.encode()).hexdigest()[:16]
    cached.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{cached}.lock"):
        if not (cached / name / "manifest.json").is_file():
            shutil.rmtree(cached / name, ignore_errors=True)  # a run stopped mid-export
            export(cached)
    shutil.copytree(cached / name, folder / name)
    return folder / name


def tiny_model(folder: Path, name: str = "tiny", **kwargs: Any) -> Path:
    """What :func:`export_tiny_model` exports, through :func:`shared_export`."""
    key = repr(("tiny", name, sorted(kwargs.items())))
    return shared_export(key, folder, name, lambda into: export_tiny_model(into, name, **kwargs))


def edited_copy(folder: Path, target: Path, **fields: Any) -> Path:
    """A copy of the model `folder` as `target.name`, its manifest's `fields` replaced (the
    manifest's sha256 are of the graph and weight files, so it needs no re-checksumming): a
    second model without a second export."""
    shutil.copytree(folder, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest |= {"name": target.name, "aliases": [], **fields}
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only exported model folder, made once per run; copy it before changing it."""
    return tiny_model(
        tmp_path_factory.mktemp("exported"),
        aliases=("day2night",),
        domains={"A": "day", "B": "night"},
    )


@pytest.fixture
def model_store(tmp_path: Path, exported_model: Path) -> Path:
    """A fresh local store holding a copy of the tiny model, as `tiny` (alias `day2night`)."""
    from service.store.model_store import ModelStore

    root = tmp_path / "store"
    ModelStore(root).publish(exported_model)
    return root
