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
from typing import TYPE_CHECKING, Annotated, get_args

import typer
from tqdm import tqdm

from cli.common import err, fail, failed, print_json, user_errors
from cli.export_cmd import JsonOption, StoreOption, store_url

if TYPE_CHECKING:
    from service.inference.engine import Engine
    from service.inference.videos.options import VideoLimits, VideoOptions

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
    from service.inference.videos.formats import VIDEO_SUFFIXES

    found: list[tuple[Path, Path]] = []
    failures: list[Failure] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            files = find_images(path, also=VIDEO_SUFFIXES)
            if not files:
                failures.append(Failure(text, "folder holds no image or video files"))
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


def _plan(
    inputs: list[str], out: Path, suffix: str, video_suffix: str
) -> tuple[list[Job], list[Failure]]:
    from service.files import OutputNames
    from service.inference.videos.formats import is_video_name

    found, failures = _expand(inputs)
    jobs: list[Job] = []
    claimed = OutputNames()  # case-insensitive: a.PNG and A.png must not write one file
    seen: set[Path] = set()
    for source, relative in found:
        resolved = source.resolve()
        if resolved in seen:
            continue  # the same file named twice (e.g. a folder and a glob)
        seen.add(resolved)
        ending = video_suffix if is_video_name(source.name) else suffix
        target = out / relative.with_name(relative.name + ending)
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
    temporal: Annotated[
        str | None,
        typer.Option(help="videos: blend (steady, no flicker) | none (env UNPAIRED_TEMPORAL)"),
    ] = None,
    temporal_strength: Annotated[
        float | None,
        typer.Option(min=0.0, max=0.99, help="videos: weight of the previous frame (0.6)"),
    ] = None,
    video_format: Annotated[
        str | None, typer.Option(help="videos are written as mp4 | mov | mkv (H.264)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Translate images and videos with a stored model; outputs keep each input's size (and
    an image's alpha; a video's timestamps, rotation and audio)."""
    from service.errors import ImageRejected
    from service.files import write_atomic
    from service.inference.engine import Engine, EngineOptions
    from service.inference.image_io import ImageLimits, encode_image, read_image_file
    from service.inference.videos.formats import is_video_name
    from service.inference.videos.options import VideoLimits, video_options
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
    clip_options = video_options(
        settings,
        temporal=None if temporal is None else _choice("--temporal", temporal, ("blend", "none")),
        strength=temporal_strength,
        container=None
        if video_format is None
        else _choice("--video-format", video_format.lower(), ("mp4", "mov", "mkv")),
        batch=options.max_batch,
    )
    with user_errors():
        model = ModelStore(store_url(store), cache_dir=settings.cache_dir).open(name)
        direction = model.manifest.resolve_direction(direction)
        engine = Engine(model, direction, options)
    limits = ImageLimits.from_settings(settings)
    everything, failures = _plan(
        inputs, out, "." + ("jpg" if fmt == "jpeg" else fmt), "." + clip_options.container
    )
    clips = [job for job in everything if is_video_name(job.source.name)]
    jobs = [job for job in everything if not is_video_name(job.source.name)]
    info = engine.describe()
    err.print(
        f"{info['model']} {direction} on {info['backend']} {info['device']} {info['precision']}: "
        f"{len(jobs)} image(s), {len(clips)} video(s) -> {out}",
    )
    written: list[str] = []
    started = time.perf_counter()
    videos = _translate_clips(
        clips, engine, VideoLimits.from_settings(settings), clip_options, written, failures
    )
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
        "videos": videos,
        "failed": [{"input": f.source, "error": f.error} for f in failures],
        "seconds": round(seconds, 3),
    }
    if as_json:
        print_json(summary)
    else:
        for video in videos:
            err.print(_clip_line(video))
        err.print(f"wrote {len(written)} file(s), {len(failures)} failed")
    if failures:
        raise typer.Exit(EXIT_SOME_FAILED)


def _translate_clips(
    clips: list[Job],
    engine: Engine,
    limits: VideoLimits,
    options: VideoOptions,
    written: list[str],
    failures: list[Failure],
) -> list[dict[str, object]]:
    """Each clip through the engine frame by frame (progress in frames); their reports."""
    from service.errors import ImageRejected
    from service.inference.videos.pipeline import translate_clip

    reports: list[dict[str, object]] = []
    for job in clips:
        with tqdm(unit="frame", desc=job.source.name, disable=None, leave=False) as bar:
            try:
                report = translate_clip(
                    str(job.source),
                    str(job.target),
                    engine.translate_each,
                    limits=limits,
                    options=options,
                    on_frames=bar.update,
                    name=str(job.source),
                )
            except ImageRejected as exc:  # messages start with the path
                failures.append(Failure(str(job.source), str(exc).removeprefix(f"{job.source}: ")))
                continue
            except OSError as exc:
                failures.append(Failure(str(job.source), f"cannot write {job.target}: {exc}"))
                continue
        written.append(str(job.target))
        reports.append(report.to_dict())
    return reports


def _clip_line(report: dict[str, object]) -> str:
    def error(value: object) -> str:
        return "n/a" if value is None else f"{value:.5f}"

    cuts = report["scene_cuts"]
    return (
        f"{report['output']}: {report['frames']} frames at {report['frames_per_second']} "
        f"frames/s; warping error {error(report['warping_error'])} ({report['temporal']}), "
        f"input {error(report['input_warping_error'])}; scene cuts at {cuts or 'none'}"
    )
