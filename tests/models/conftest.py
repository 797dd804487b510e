"""Shared fixtures for the models tests: reference key files and per-architecture cases."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest
from torch import nn

from models import DISCRIMINATORS, GENERATORS, build_discriminator, build_generator

# Key listings of the public junyanz checkpoints (copied from shared/reference).
REFERENCE_DIR = Path(__file__).resolve().parent / "reference"

KeyShapes = dict[str, tuple[int, ...]]
ReferenceCase = tuple[nn.Module, KeyShapes, int]
"""(our network at upstream's defaults, upstream's keys and shapes, its InstanceNorm count)."""

# name -> (key file, builder, number of InstanceNorm layers upstream has)
_REFERENCE_CASES: dict[str, tuple[str, Callable[[], nn.Module], int]] = {
    # 3 in the stem/downsampling, 2 per residual block, 2 in the upsampling
    "resnet_9blocks": ("resnet_9blocks_G.keys.txt", lambda: build_generator("resnet_9blocks"), 23),
    "resnet_6blocks": ("resnet_6blocks_G.keys.txt", lambda: build_generator("resnet_6blocks"), 17),
    "basic_D": ("basic_D.keys.txt", lambda: build_discriminator("basic"), 3),
}

# Smallest input each generator is meant for (U-Nets bottom out at 1x1 at their native size).
GENERATOR_SIZES: dict[str, int] = {
    "resnet_9blocks": 64,
    "resnet_6blocks": 64,
    "unet_128": 128,
    "unet_256": 256,
    "discogan": 64,
}
# Input side -> expected (h, w) of the logit map, at each discriminator's defaults.
DISCRIMINATOR_CASES: dict[str, tuple[int, tuple[int, int]]] = {
    "basic": (256, (30, 30)),  # 70x70 PatchGAN
    "n_layers": (64, (6, 6)),
    "pixel": (32, (32, 32)),
    "discogan": (64, (1, 1)),
}


def parse_key_file(path: Path) -> KeyShapes:
    """Parse upstream's `key<TAB>(shape)` listing, keeping the file's order."""
    out: KeyShapes = {}
    for line in path.read_text().splitlines():
        if line.strip():
            key, shape = line.split("\t")
            out[key] = tuple(ast.literal_eval(shape))
    return out


@pytest.fixture(scope="session")
def reference_keys() -> Callable[[str], KeyShapes]:
    """Reader for the upstream key files kept in tests/models/reference/."""
    return lambda name: parse_key_file(REFERENCE_DIR / name)


@pytest.fixture(params=GENERATORS)
def generator_case(request: pytest.FixtureRequest) -> tuple[str, int]:
    """Every registered generator with its native input side."""
    name = str(request.param)
    assert name in GENERATOR_SIZES, f"add {name!r} to GENERATOR_SIZES in tests/models/conftest.py"
    return name, GENERATOR_SIZES[name]


@pytest.fixture(params=DISCRIMINATORS)
def discriminator_case(request: pytest.FixtureRequest) -> tuple[str, int, tuple[int, int]]:
    """Every registered discriminator with an input side and the logit map it must give."""
    name = str(request.param)
    assert name in DISCRIMINATOR_CASES, f"add {name!r} to DISCRIMINATOR_CASES in conftest.py"
    return name, *DISCRIMINATOR_CASES[name]


@pytest.fixture(params=list(_REFERENCE_CASES), ids=list(_REFERENCE_CASES))
def reference_case(
    request: pytest.FixtureRequest, reference_keys: Callable[[str], KeyShapes]
) -> ReferenceCase:
    """Each public upstream network we promise to load, with its expected keys."""
    key_file, build, instance_norms = _REFERENCE_CASES[request.param]
    return build(), reference_keys(key_file), instance_norms
