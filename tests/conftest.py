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
