"""`unpaired translate`: files, folders and globs through one direction of a stored model.

A file that cannot be read or translated is reported and skipped; the rest are still written,
and the exit code is 1 when anything failed. Outputs are written atomically (temp + rename),
so an interrupted run never leaves a half-written image behind.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, get_args

import typer
from tqdm import tqdm

from cli.common import err, fail, failed, print_json, user_errors
from cli.export_cmd import JsonOption, StoreOption, store_url

EXIT_SOME_FAILED = 1
FORMATS = ("png", "jpeg", "webp")


def _choice(flag: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        fail(f"{flag} must be one of {', '.join(allowed)}; got {value!r}")
    return value


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


@dataclass(frozen=True)
class Failure:
    source: str
    error: str


def _expand(inputs: list[str]) -> tuple[list[tuple[Path, Path]], list[Failure]]:
    """(file, path relative to --out without suffix) for every input; unmatched inputs fail."""
    from models.imaging import find_images

    found: list[tuple[Path, Path]] = []
    failures: list[Failure] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            files = find_images(path)
            if not files:
                failures.append(Failure(text, "folder holds no image files"))
            found += [(f, f.relative_to(path).with_suffix("")) for f in files]
        elif path.is_file():
            found.append((path, Path(path.stem)))
        else:
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            files = [m for m in matches if m.is_file()]
            if not files:
                failures.append(Failure(text, "no such file, folder or matching pattern"))
            found += [(m, Path(m.stem)) for m in files]
    return found, failures


def _plan(inputs: list[str], out: Path, suffix: str) -> tuple[list[Job], list[Failure]]:
    from service.files import OutputNames

    found, failures = _expand(inputs)
    jobs: list[Job] = []
    claimed = OutputNames()  # case-insensitive: a.PNG and A.png must not write one file
    seen: set[Path] = set()
    for source, relative in found:
        resolved = source.resolve()
        if resolved in seen:
            continue  # the same file named twice (e.g. a folder and a glob)
        seen.add(resolved)
        target = out / relative.with_name(relative.name + suffix)
        writer = claimed.claim(str(target), str(source))
        if writer is not None:
            failures.append(
                Failure(str(source), f"output {target} is already written from {writer}")
            )
            continue
        jobs.append(Job(source, target))
    return jobs, failures


def _chunks(jobs: list[Job], size: int) -> Iterator[list[Job]]:
    for start in range(0, len(jobs), size):
        yield jobs[start : start + size]


def translate(
    name: Annotated[str, typer.Argument(help="model name or alias in the store")],
    inputs: Annotated[list[str], typer.Argument(help="image files, folders or glob patterns")],
    out: Annotated[Path, typer.Option(help="output folder (created)")],
    direction: Annotated[
        str | None,
        typer.Option(help="AtoB (G: X->Y) or BtoA (F: Y->X); optional for one-way models"),
    ] = None,
    store: StoreOption = None,
    backend: Annotated[str, typer.Option(help="auto | onnx | torch")] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    precision: Annotated[str, typer.Option(help="auto | fp32 | fp16 | int8")] = "auto",
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, max=1024, help="images per batch (env UNPAIRED_MAX_BATCH; 8)"),
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="png | jpeg | webp")] = "png",
    quality: Annotated[int, typer.Option(min=1, max=100, help="jpeg / webp quality")] = 95,
    as_json: JsonOption = False,
) -> None:
    """Translate images with a stored model; outputs keep each input's size and alpha."""
    from service.errors import ImageRejected
    from service.files import write_atomic
    from service.inference.engine import Engine, EngineOptions
    from service.inference.image_io import ImageLimits, encode_image, read_image_file
    from service.settings import BackendName, DeviceName, PrecisionName, get_settings
    from service.store.model_store import ModelStore

    fmt = _choice("--format", output_format.lower().replace("jpg", "jpeg"), FORMATS)
    with user_errors():
        settings = get_settings()
    options = EngineOptions.from_settings(
        settings,
        backend=_choice("--backend", backend, get_args(BackendName)),
        device=_choice("--device", device, get_args(DeviceName)),
        precision=_choice("--precision", precision, get_args(PrecisionName)),
        max_batch=batch_size or settings.max_batch,
    )
    with user_errors():
        model = ModelStore(store_url(store), cache_dir=settings.cache_dir).open(name)
        direction = model.manifest.resolve_direction(direction)
        engine = Engine(model, direction, options)
    limits = ImageLimits.from_settings(settings)
    jobs, failures = _plan(inputs, out, "." + ("jpg" if fmt == "jpeg" else fmt))
    info = engine.describe()
    err.print(
        f"{info['model']} {direction} on {info['backend']} {info['device']} {info['precision']}: "
        f"{len(jobs)} image(s) -> {out}",
    )
    written: list[str] = []
    started = time.perf_counter()
    with tqdm(total=len(jobs), unit="img", disable=None, file=None) as bar:
        for chunk in _chunks(jobs, options.max_batch):
            images, ready = [], []
            for job in chunk:
                try:
                    images.append(read_image_file(job.source, limits=limits))
                    ready.append(job)
                except (ImageRejected, OSError) as exc:  # messages start with the path
                    reason = str(exc).removeprefix(f"{job.source}: ")
                    failures.append(Failure(str(job.source), reason))
            for job, result in zip(ready, engine.translate_each(images), strict=True):
                if isinstance(result, Exception):
                    failures.append(Failure(str(job.source), f"{type(result).__name__}: {result}"))
                    continue
                try:
                    write_atomic(job.target, encode_image(result, format=fmt, quality=quality))
                    written.append(str(job.target))
                except OSError as exc:
                    failures.append(Failure(str(job.source), f"cannot write {job.target}: {exc}"))
            bar.update(len(chunk))
    seconds = time.perf_counter() - started
    for failure in failures:
        failed(failure.source, failure.error)
    summary = {
        **info,
        "written": written,
        "failed": [{"input": f.source, "error": f.error} for f in failures],
        "seconds": round(seconds, 3),
    }
    if as_json:
        print_json(summary)
    else:
        err.print(f"wrote {len(written)} image(s), {len(failures)} failed")
    if failures:
        raise typer.Exit(EXIT_SOME_FAILED)
