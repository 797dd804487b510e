"""Wheels for the GPU machine: what the project needs that the lent machine's image lacks.

A lent GPU machine starts bare of this project's dependencies and cannot reach a package index,
so the benchmark's Python packages travel with the working tree as wheels (the device tool
carries at most 64 MiB). This walks the project's runtime requirements in this environment
(the versions the tests run with), drops what the GPU image already holds (its own torch, numpy,
onnxruntime, ...: `GPU_IMAGE`, as read on 2026-11-17), and downloads the rest as CPython 3.12
manylinux wheels, without their dependencies (those are in the walk):

    python -m bench.gpu.wheels --out .whl            # then carry `.whl` (ignored by git)
    python -m bench.gpu.wheels --list                # only print name==version

On the GPU machine (see docs/benchmarks.md, "The GPU script"):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site python3 -m bench.gpu --out "$OUT"
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bench.harness import ROOT, err

#: The lent machine's Python packages: carried only where missing, so the machine's own torch,
#: CUDA libraries and numpy are the ones used.
GPU_IMAGE = frozenset(
    line.strip()
    for line in (Path(__file__).with_name("gpu_image_packages.txt")).read_text().splitlines()
    if line.strip() and not line.startswith("#")
)
PROJECT = "unpaired"
#: The environment the wheels are for, when evaluating requirement markers.
TARGET = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")  # fmt: skip


def _requirements(name: str, extras: frozenset[str]) -> list[tuple[str, frozenset[str]]]:
    """The distributions `name` (with `extras`) needs on the target machine."""
    out = []
    for text in metadata.requires(name) or []:
        requirement = Requirement(text)
        if requirement.marker is not None and not any(
            requirement.marker.evaluate({**TARGET, "extra": extra}) for extra in extras | {""}
        ):
            continue
        out.append((requirement.name, frozenset(requirement.extras)))
    return out


def missing_on_gpu() -> dict[str, str]:
    """name -> version (this environment's) of every runtime dependency the GPU image lacks,
    following dependencies of carried packages only (the image's own are complete)."""
    carried: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = _requirements(PROJECT, frozenset())
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if (key, extras) in seen or key in GPU_IMAGE:
            continue
        seen.add((key, extras))
        carried[key] = metadata.version(name)
        todo += _requirements(name, extras)
    return dict(sorted(carried.items()))


def download(pins: dict[str, str], out: Path) -> None:
    """CPython 3.12 manylinux wheels (or pure-Python ones) of exactly these versions."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
               "--abi", "cp312", "--abi", "abi3", "--abi", "none", "-d", str(out)]  # fmt: skip
    for platform in PLATFORMS:
        command += ["--platform", platform]
    command += [f"{name}=={version}" for name, version in pins.items()]
    subprocess.run(command, check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".whl")
    parser.add_argument("--list", action="store_true", help="print name==version, download none")
    args = parser.parse_args(argv)
    pins = missing_on_gpu()
    if args.list:
        print("\n".join(f"{name}=={version}" for name, version in pins.items()))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    download(pins, args.out)
    wheels = sorted(args.out.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels) / 2**20
    err.print(f"{len(wheels)} wheels, {size:.1f} MiB in {args.out} (64 travel)")


if __name__ == "__main__":
    main()
