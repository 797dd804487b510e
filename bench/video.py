"""Video clips through a real model: flicker, fidelity, scene cuts, speed and memory.

Four tables, every clip made here (bench.clips: H.264 at crf 12, nothing downloaded) and run
through :func:`service.inference.videos.pipeline.translate_clip`, the pipeline every front door
uses:

* **pan**: a camera panning and zooming slowly over a real photo (scikit-image's, upscaled to
  hold the whole pan), translated frame by frame (temporal ``none``) and steadied (``blend``).
  Warping error (Lai et al. 2018) of each output and of the input clip; PSNR of each output
  frame to *the consistently translated scene*: the whole photo translated once by the same
  engine, then panned the same way, averaged over the frames.
* **scene**: a built-in synthetic pair's scene (training.synthetic) with shapes moving a little
  per frame and a cut to another scene half-way, translated by a model trained on that pair;
  its ground truth per frame is the same frames rendered in the other domain. Warping error,
  PSNR to the truth per mode, and the scene cuts detected against the true one.
* **speed**: frames/s of the clip pipeline (as the CLI runs it, and as jobs run it) against the
  same frames sent as PNG images through a bulk job's chunks (``run_chunk``, no server).
* **memory**: peak RSS of a process translating a short and a long clip of the same size.

Each mode's frames are translated once and shared by ``none`` and ``blend`` (the engine is
deterministic), so the pan and scene tables time nothing; the speed table does.

    python -m bench.video --store model-store --model vintage --frames 24 --side 256
    python -m bench.video --quick          # 24 frames at 256x256, shorter speed and memory runs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.table import Table
from scipy import ndimage

from bench.clips import pan_frames, write_clip
from bench.harness import ROOT, cpu_name, err, report_json
from models.sample_photos import load_photo
from service.inference.engine import Engine, EngineOptions
from service.inference.image_io import DecodedImage
from service.inference.videos.containers import ClipReader, Frame, VideoLimits
from service.inference.videos.pipeline import ClipReport, VideoOptions, translate_clip
from service.inference.videos.temporal import Stabiliser, TemporalMode, TemporalOptions
from service.store.model_store import ModelStore, StoredModel
from training.synthetic import Scene, SyntheticPair, get_pair, make_scene

MODES: tuple[TemporalMode, ...] = ("none", "blend")
PAN_STEP = 1.7  # pixels per frame (bench.clips' default)
PAN_ZOOM = 0.002  # 0.2 % per frame
SCENE_PAIR = "day2night"  # the built-in pair the default scene model is trained on
SCENE_SEEDS = (11, 12)  # the scene before the cut and the one after it


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


def _status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS: now; VmHWM: the high-water mark)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> bool:
    """Reset this process's RSS high-water mark (Linux: 5 into /proc/self/clear_refs), so
    that the peak measured next is of what follows, not of loading the model."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _direction(model: StoredModel, wanted: str | None) -> str:
    """`wanted`, or the model's only direction, or AtoB for a model that has both."""
    if wanted is None and "AtoB" in model.manifest.directions:
        return "AtoB"
    return model.manifest.resolve_direction(wanted)


def _engine(model: StoredModel, direction: str, threads: int | None, **options: Any) -> Engine:
    return Engine(model, direction, EngineOptions(threads=threads, **options))


def _read_frames(path: Path) -> Iterator[np.ndarray]:
    """The decoded RGB frames of the clip at `path`, in order."""
    with ClipReader(str(path), VideoLimits()) as reader:
        for item in reader.read():
            if isinstance(item, Frame):
                yield item.rgb


class SharedTranslations:
    """A frame translator that translates each distinct frame once: both temporal modes of
    a clip see the same per-frame translations (the engine is deterministic), at half the cost."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.done: dict[bytes, DecodedImage] = {}

    def __call__(self, images: Sequence[DecodedImage]) -> list[DecodedImage | Exception]:
        keys = [hashlib.sha1(image.rgb.tobytes()).digest() for image in images]
        missing = [(k, i) for k, i in zip(keys, images, strict=True) if k not in self.done]
        if missing:
            results = self.engine.translate_each([i for _, i in missing])
            for (key, _), result in zip(missing, results, strict=True):
                if isinstance(result, Exception):
                    raise result
                self.done[key] = result
        return [self.done[k] for k in keys]


def _modes(
    source: Path,
    folder: Path,
    translate: Callable[[Sequence[DecodedImage]], Sequence[DecodedImage | Exception]],
    truth: Callable[[], Iterator[np.ndarray]],
) -> list[dict[str, Any]]:
    """`source` translated under each temporal mode; each output's frames scored against
    the frames `truth()` yields."""
    rows = []
    for mode in MODES:
        target = folder / f"{source.stem}-{mode}.mp4"
        options = VideoOptions(temporal=TemporalOptions(mode=mode))
        report = translate_clip(str(source), str(target), translate, limits=VideoLimits(),
                                options=options)  # fmt: skip
        scores = [psnr(out, want) for out, want in zip(_read_frames(target), truth(), strict=True)]
        rows.append({"mode": mode, "frames": report.frames, "decoded_frames": len(scores),
                     "warping_error": report.warping_error,
                     "input_warping_error": report.input_warping_error,
                     "scene_cuts": report.scene_cuts, "psnr_db": float(np.mean(scores)),
                     "psnr_db_min": float(np.min(scores))})  # fmt: skip
        err.print(f"  {source.stem} {mode}: warping error {report.warping_error:.6f}, "
                  f"PSNR {rows[-1]['psnr_db']:.2f} dB")  # fmt: skip
    return rows


def _reference_warping_error(inputs: Iterator[np.ndarray], outputs: Iterator[np.ndarray]) -> Any:
    """The warping error of the reference clip `outputs`, with the flow of `inputs` (what the
    stabiliser measures of an output): the floor a steadied translation can reach."""
    stabiliser = Stabiliser(TemporalOptions(mode="none"))
    for frame, out in zip(inputs, outputs, strict=True):
        stabiliser.step(frame, out)
    return stabiliser.output_error.value


# --- (a) a pan over a real photo --------------------------------------------------------------


def pan_photo(name: str, side: int, frames: int) -> np.ndarray:
    """The photo `name`, upscaled (bicubic) where needed so that the whole pan stays inside."""
    photo = load_photo(name)
    height, width = photo.shape[:2]
    need_w = (side + PAN_STEP * (frames - 1)) / 0.9 + 2
    need_h = (side + 0.5 * PAN_STEP * (frames - 1)) / 0.9 + 2
    scale = max(1.0, need_w / width, need_h / height)
    if scale == 1.0:
        return np.ascontiguousarray(photo)
    size = (math.ceil(width * scale), math.ceil(height * scale))
    return np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.BICUBIC))


def _pan(photo: np.ndarray, frames: int, side: int) -> Iterator[np.ndarray]:
    return pan_frames(photo, frames, side, step=PAN_STEP, zoom=PAN_ZOOM)


def measure_pan(
    engine: Engine, photo_name: str, frames: int, side: int, folder: Path
) -> dict[str, Any]:
    photo = pan_photo(photo_name, side, frames)
    source = folder / "pan.mp4"
    write_clip(str(source), _pan(photo, frames, side))
    (whole,) = engine.translate([DecodedImage(rgb=photo, alpha=None)])  # once, whole
    translated = whole.rgb
    rows = _modes(
        source, folder, SharedTranslations(engine), lambda: _pan(translated, frames, side)
    )
    height, width = photo.shape[:2]
    return {"photo": photo_name, "photo_size": f"{width}x{height}", "frames": frames,
            "side": side, "step_px": PAN_STEP, "zoom_per_frame": PAN_ZOOM,
            "reference": "the whole photo translated once by the same engine, panned alike",
            "reference_warping_error": _reference_warping_error(
                _read_frames(source), _pan(translated, frames, side)),
            "modes": rows}  # fmt: skip


# --- (b) a synthetic scene with moving shapes and a cut ----------------------------------------


def _moving_scene(pair: SyntheticPair, seed: int, side: int) -> Callable[[int], Scene]:
    """A scene of 2-3 whole shapes (each the top shape of a scene the pair would draw), each
    moving at its own speed: frame t's scene."""
    rng = np.random.default_rng(seed)
    count = int(rng.integers(2, 4))
    masks = []
    for _ in range(count):
        while True:
            labels = make_scene(rng, side, pair.sample_colours).labels
            if labels.max() > 0:
                masks.append(labels == labels.max())  # the top shape is whole
                break
    colours = pair.sample_colours(rng, count + 1)
    speed = max(1.0, side / 128)
    velocities = rng.uniform(-speed, speed, size=(count, 2))

    def at(t: int) -> Scene:
        labels = np.zeros((side, side), np.int32)
        for k, (mask, (dx, dy)) in enumerate(zip(masks, velocities, strict=True), start=1):
            shift = (round(dy * t), round(dx * t))
            labels[ndimage.shift(mask, shift, order=0, mode="constant", cval=False)] = k
        return Scene(labels=labels, colours=colours)

    return at


def scene_frames(pair: SyntheticPair, frames: int, side: int, domain: str) -> Iterator[np.ndarray]:
    """The clip in `domain`: one moving scene, then (at frame frames // 2) another."""
    cut = frames // 2
    scenes = [_moving_scene(pair, seed, side) for seed in SCENE_SEEDS]
    for t in range(frames):
        scene = scenes[0](t) if t < cut else scenes[1](t - cut)
        yield pair.render(scene, domain)


def measure_scene(
    engine: Engine, pair: SyntheticPair, direction: str, frames: int, side: int, folder: Path
) -> dict[str, Any]:
    given, wanted = ("A", "B") if direction == "AtoB" else ("B", "A")
    source = folder / "scene.mp4"
    write_clip(str(source), scene_frames(pair, frames, side, given))
    rows = _modes(source, folder, SharedTranslations(engine),
                  lambda: scene_frames(pair, frames, side, wanted))  # fmt: skip
    return {"pair": pair.name, "direction": direction, "frames": frames, "side": side,
            "true_cut": frames // 2,
            "cut_detected": all(r["scene_cuts"] == [frames // 2] for r in rows),
            "truth_warping_error": _reference_warping_error(
                _read_frames(source), scene_frames(pair, frames, side, wanted)),
            "modes": rows}  # fmt: skip


# --- (c) speed: the clip pipeline against a bulk job of the same frames -------------------------


def _clip_row(path: str, report: ClipReport) -> dict[str, Any]:
    return {"path": path, "frames": report.frames, "seconds": report.seconds,
            "frames_per_second": report.frames_per_second}  # fmt: skip


def measure_speed(
    store: str, model_name: str, direction: str, photo_name: str, frames: int, side: int,
    threads: int | None, folder: Path,
) -> dict[str, Any]:  # fmt: skip
    from service.inference.image_io import encode_image
    from service.inference.local_translator import LocalTranslator
    from service.jobs.chunks import run_chunk
    from service.jobs.records import Item, JobSpec
    from service.settings import Settings

    photo = pan_photo(photo_name, side, frames)
    source = folder / "speed.mp4"
    write_clip(str(source), _pan(photo, frames, side))
    options = VideoOptions()  # blend, as served
    rows = []

    model = ModelStore(store).open(model_name)
    engine = _engine(model, direction, threads)
    engine.translate([DecodedImage(rgb=photo[:side, :side].copy(), alpha=None)])  # warm
    report = translate_clip(str(source), str(folder / "speed-cli.mp4"), engine.translate_each,
                            limits=VideoLimits(), options=options)  # fmt: skip
    rows.append(_clip_row("clip, engine.translate_each (as the CLI)", report))
    err.print(f"  clip (CLI): {report.frames_per_second:.2f} frames/s")
    del engine

    settings = Settings(store=store, models=(model_name,), threads=threads)
    translator = LocalTranslator.from_settings(settings)
    try:
        report = translate_clip(
            str(source), str(folder / "speed-job.mp4"),
            lambda images: translator.translate_frames(model_name, direction, images),
            limits=VideoLimits(), options=options,
        )  # fmt: skip
        rows.append(_clip_row("clip, LocalTranslator.translate_frames (as a video job)", report))
        err.print(f"  clip (job): {report.frames_per_second:.2f} frames/s")

        inputs, outputs = folder / "bulk-in", folder / "bulk-out"
        inputs.mkdir()
        names = []
        for i, rgb in enumerate(_read_frames(source)):  # the frames the clip pipeline decodes
            names.append(f"frame-{i:05d}.png")
            (inputs / names[-1]).write_bytes(encode_image(DecodedImage(rgb=rgb, alpha=None)))
        chunk_size = settings.chunk_size
        spec = JobSpec(id="bench-video", model=model_name, direction=direction, format="png",
                       quality=95, owner="bench", inputs=str(inputs), outputs=str(outputs),
                       total=len(names), chunks=math.ceil(len(names) / chunk_size))  # fmt: skip
        items = [Item(name, name) for name in names]
        started = time.perf_counter()
        written = 0
        for start in range(0, len(items), chunk_size):
            outcome = run_chunk(spec, items[start : start + chunk_size], translator)
            if outcome.failed:
                raise SystemExit(f"bulk job: {outcome.failed[0].item}: {outcome.failed[0].error}")
            written += len(outcome.written)
        seconds = time.perf_counter() - started
    finally:
        translator.close_blocking()
    rows.append({"path": f"images, bulk job (run_chunk, chunks of {chunk_size}, PNG in and out)",
                 "frames": written, "seconds": round(seconds, 3),
                 "frames_per_second": round(written / seconds, 3)})  # fmt: skip
    err.print(f"  bulk job: {written / seconds:.2f} frames/s")
    return {"frames": frames, "side": side, "temporal": options.temporal.mode,
            "bulk": "run_chunk with LocalTranslator.from_settings (embedded job machinery)",
            "rows": rows}  # fmt: skip


# --- (d) memory: a short and a long clip, each in its own process -------------------------------


def _memory_child(args: argparse.Namespace) -> None:
    """In a fresh process: load the model and translate one batch (warm), take the RSS and
    reset the high-water mark, translate the whole clip, take the high-water mark; as JSON."""
    model = ModelStore(args.store).open(args.model)
    engine = _engine(model, args.direction, args.threads)
    first = DecodedImage(rgb=next(_read_frames(Path(args.memory_child))), alpha=None)
    engine.translate([first] * VideoOptions().batch)  # warm at the pipeline's batch size
    loading_peak = _status_kib("VmHWM")
    reset = _reset_peak()
    loaded = _status_kib("VmRSS")
    report = translate_clip(args.memory_child, args.memory_out, engine.translate_each,
                            limits=VideoLimits())  # fmt: skip
    peak = _status_kib("VmHWM")
    print(json.dumps({"frames": report.frames, "loaded_kib": loaded, "peak_kib": peak,
                      "loading_peak_kib": loading_peak, "peak_reset": reset}))  # fmt: skip


def measure_memory(
    store: str, model_name: str, direction: str, photo_name: str, lengths: list[int], side: int,
    threads: int | None, folder: Path,
) -> dict[str, Any]:  # fmt: skip
    photo = pan_photo(photo_name, side, max(lengths))
    rows = []
    for frames in lengths:
        source = folder / f"memory-{frames}.mp4"
        write_clip(str(source), _pan(photo, frames, side))
        command = [sys.executable, "-m", "bench.video", "--store", store, "--model", model_name,
                   "--direction", direction, "--memory-child", str(source),
                   "--memory-out", str(folder / f"memory-{frames}-out.mp4")]  # fmt: skip
        if threads:
            command += ["--threads", str(threads)]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"the memory run of {frames} frames failed:\n{done.stderr[-3000:]}")
        child = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append({"frames": child["frames"], "rss_after_load_mib": _mib(child["loaded_kib"]),
                     "peak_rss_mib": _mib(child["peak_kib"]),
                     "growth_mib": _mib(child["peak_kib"] - child["loaded_kib"]),
                     "loading_peak_rss_mib": _mib(child["loading_peak_kib"]),
                     "peak_reset": child["peak_reset"]})  # fmt: skip
        err.print(f"  {frames} frames: peak RSS {rows[-1]['peak_rss_mib']} MiB")
    return {"side": side, "temporal": "blend",
            "measured": "a fresh process per clip: RSS after loading the model and translating "
                        "one batch of frames, then the RSS high-water mark (VmHWM, reset after "
                        "loading) over the whole clip",
            "rows": rows}  # fmt: skip


# --- report ----------------------------------------------------------------------------------


def _quality_table(title: str, part: dict[str, Any], floor: str, reference: str) -> None:
    table = Table("mode", "frames", "warping error", "PSNR dB (mean)", "PSNR dB (min)", "cuts")
    first = part["modes"][0]
    table.add_row("input clip", str(first["frames"]), f"{first['input_warping_error']:.6f}",
                  "", "", "")  # fmt: skip
    ref = part[floor]
    table.add_row(reference, str(first["frames"]), "-" if ref is None else f"{ref:.6f}", "", "",
                  "")  # fmt: skip
    for r in part["modes"]:
        table.add_row(r["mode"], str(r["frames"]), f"{r['warping_error']:.6f}",
                      f"{r['psnr_db']:.2f}", f"{r['psnr_db_min']:.2f}",
                      ", ".join(map(str, r["scene_cuts"])) or "-")  # fmt: skip
    err.print(title)
    err.print(table)


def print_report(result: dict[str, Any]) -> None:
    pan = result["pan"]
    _quality_table(
        f"pan over {pan['photo']} ({pan['photo_size']}), {pan['frames']} frames at "
        f"{pan['side']}x{pan['side']}, model {result['model']} {result['direction']}; "
        "PSNR to the whole photo translated once",
        pan, "reference_warping_error", "whole photo translated once",
    )  # fmt: skip
    scene = result["scene"]
    if "skipped" in scene:
        err.print(f"scene: skipped ({scene['skipped']})")
    else:
        _quality_table(
            f"{scene['pair']} scene, {scene['frames']} frames at {scene['side']}x{scene['side']},"
            f" model {result['scene_model']}; PSNR to the ground truth; true cut at frame "
            f"{scene['true_cut']} ({'detected' if scene['cut_detected'] else 'NOT detected'})",
            scene, "truth_warping_error", "ground truth",
        )  # fmt: skip
    speed = result["speed"]
    table = Table("path", "frames", "seconds", "frames/s")
    for r in speed["rows"]:
        table.add_row(r["path"], str(r["frames"]), f"{r['seconds']:.2f}",
                      f"{r['frames_per_second']:.2f}")  # fmt: skip
    err.print(f"speed at {speed['side']}x{speed['side']} ({result['cpu']}, {result['threads']})")
    err.print(table)
    memory = result["memory"]
    table = Table("clip frames", "RSS after load MiB", "peak RSS MiB", "growth MiB")
    for r in memory["rows"]:
        table.add_row(str(r["frames"]), f"{r['rss_after_load_mib']:.1f}",
                      f"{r['peak_rss_mib']:.1f}", f"{r['growth_mib']:.1f}")  # fmt: skip
    err.print(f"memory at {memory['side']}x{memory['side']}, a fresh process per clip")
    err.print(table)


def _open(store: ModelStore, name: str, option: str) -> StoredModel:
    try:
        return store.open(name)
    except Exception as exc:  # the store's own message says what is missing
        raise SystemExit(
            f"{option} {name}: not in the store {store.root} ({exc}); give --store and {option}"
        ) from exc


def _scene_model(store: ModelStore, name: str, explicit: bool) -> StoredModel | str:
    """The scene model, or why part (b) is skipped."""
    try:
        return store.open(name)
    except Exception as exc:
        if explicit:
            raise SystemExit(f"--scene-model {name}: {exc}") from exc
        return f"no model {name!r} in the store {store.root}; give --scene-model"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="model-store")
    parser.add_argument("--model", default="vintage", help="the model the pan is translated by")
    parser.add_argument("--direction", help="default: the model's only one, else AtoB")
    scene_help = f"a model trained on {SCENE_PAIR} (default: {SCENE_PAIR} if the store has it)"
    parser.add_argument("--scene-model", help=scene_help)
    parser.add_argument("--photo", default="astronaut", help="a models.sample_photos name")
    parser.add_argument("--frames", type=int, help="pan and scene frames (default 48)")
    parser.add_argument("--side", type=int, help="frame side in pixels (default 768)")
    parser.add_argument("--speed-frames", type=int, help="frames timed (default 24)")
    parser.add_argument("--memory-frames", help="short,long clip (default 24,240)")
    parser.add_argument("--memory-side", type=int, help="memory clips' side (default 256)")
    parser.add_argument("--quick", action="store_true",
                        help="24 frames at 256x256, 12 timed, memory 24,120")  # fmt: skip
    parser.add_argument("--threads", type=int, help="engine threads (default: every CPU)")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--memory-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        return _memory_child(args)
    quick = args.quick
    frames = args.frames or (24 if quick else 48)
    side = args.side or (256 if quick else 768)
    speed_frames = args.speed_frames or (12 if quick else 24)
    lengths = [int(n) for n in (args.memory_frames or ("24,120" if quick else "24,240")).split(",")]
    memory_side = args.memory_side or 256
    if frames < 4 or side < 16 or side % 2:
        raise SystemExit("--frames must be >= 4 and --side even and >= 16")

    store = ModelStore(args.store)
    model = _open(store, args.model, "--model")
    direction = _direction(model, args.direction)
    scene_model = _scene_model(store, args.scene_model or SCENE_PAIR, args.scene_model is not None)
    err.print(f"{cpu_name()}: {args.model} {direction}, {frames} frames at {side}x{side} ...")
    folder = Path(tempfile.mkdtemp(prefix="bench-video-"))
    try:
        engine = _engine(model, direction, args.threads)
        pan = measure_pan(engine, args.photo, frames, side, folder)
        del engine
        if isinstance(scene_model, str):
            scene: dict[str, Any] = {"skipped": scene_model}
            scene_name = None
        else:
            scene_name = scene_model.manifest.name
            scene_direction = _direction(scene_model, None)
            engine = _engine(scene_model, scene_direction, args.threads)
            scene = measure_scene(engine, get_pair(SCENE_PAIR), scene_direction, frames, side,
                                  folder)  # fmt: skip
            del engine
        speed = measure_speed(args.store, model.manifest.name, direction, args.photo,
                              speed_frames, side, args.threads, folder)  # fmt: skip
        memory = measure_memory(args.store, model.manifest.name, direction, args.photo,
                                lengths, memory_side, args.threads, folder)  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = {
        "cpu": cpu_name(),
        "threads": args.threads or "every CPU",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": model.manifest.name,
        "direction": direction,
        "scene_model": scene_name,
        "translations": "each frame translated once, shared by temporal none and blend",
        "pan": pan,
        "scene": scene,
        "speed": speed,
        "memory": memory,
    }
    print_report(result)
    report_json(result, args.json_out)


if __name__ == "__main__":
    main()
