"""Fixtures shared by the training and CLI tests: tiny configs that train in seconds on a CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

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


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only exported model folder, made once per session; copy it before changing it."""
    return export_tiny_model(
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
