"""Write deploy/constraints.txt: the installed version of every runtime dependency of unpaired;
print the API image's requirements.

The images install under these pins, so they run what the tests ran with. Run in the project's
venv after changing dependencies: ``.venv/bin/python deploy/write_constraints.py``.

The API image (deploy/Dockerfile.api) installs the package with ``--no-deps`` and, instead of
its dependencies, `api_requirements()`: pyproject.toml's dependencies less TRAINING_ONLY, so it
holds no torch. The script prints that list; tests/deploy/test_compose.py checks that the
Dockerfile installs exactly it and that nothing in it pulls torch in.
"""

from __future__ import annotations

import importlib.metadata as metadata
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

OUT = Path(__file__).with_name("constraints.txt")
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
#: What only training, export and the synthetic datasets import: never the API process nor
#: onnxruntime inference on the CPU (`unpaired serve`, `unpaired worker` with the onnx backend).
TRAINING_ONLY = frozenset(
    {
        "torch",
        "torchvision",
        "tensorboard",  # training logs
        "onnx",  # export
        "onnxscript",
        "onnxconverter-common",
        "scipy",  # synthetic datasets, evaluation
        "scikit-image",
        "ptflops",  # MACs of a generator (distillation, benchmarks)
        "pytorch-msssim",  # distillation's structural loss
    }
)
HEADER = """\
# The versions the tests ran with: every image installs the project under these pins
# (`pip install --constraint deploy/constraints.txt .`). Regenerate after changing the
# dependencies: .venv/bin/python deploy/write_constraints.py
"""


def closure(
    name: str, extras: tuple[str, ...] = (), found: dict[str, str] | None = None
) -> dict[str, str]:
    """`name` and everything it needs here (markers evaluated for this machine), by version."""
    found = {} if found is None else found
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return found
    key = dist.metadata["Name"].lower().replace("_", "-")
    first = key not in found
    found[key] = dist.version
    for raw in dist.requires or []:
        requirement = Requirement(raw)
        wanted = requirement.marker is None or any(
            requirement.marker.evaluate({"extra": extra}) for extra in ("", *extras)
        )
        if wanted and (first or extras):
            closure(requirement.name, tuple(requirement.extras), found)
    return found


def normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def api_requirements(pyproject: Path = PYPROJECT) -> list[str]:
    """pyproject.toml's dependencies, as written there, less TRAINING_ONLY."""
    dependencies: list[str] = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return [raw for raw in dependencies if normalise(Requirement(raw).name) not in TRAINING_ONLY]


def main() -> None:
    pins = closure("unpaired")
    pins.pop("unpaired", None)
    OUT.write_text(HEADER + "".join(f"{name}=={pins[name]}\n" for name in sorted(pins)))
    print(f"wrote {len(pins)} pins to {OUT}")
    print("deploy/Dockerfile.api installs these (then the package with --no-deps):")
    for raw in api_requirements():
        print(f'        "{raw}" \\')


if __name__ == "__main__":
    main()
