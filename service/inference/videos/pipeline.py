"""One clip from file to file: decode, translate frame batches, steady them, encode.

Every front door runs clips through :func:`translate_clip` with its own frame translator: the
CLI gives :meth:`Engine.translate_each <service.inference.engine.Engine.translate_each>`, jobs
and workers give the micro-batcher's bulk path
(:meth:`~service.inference.local_translator.LocalTranslator.translate_frames`), so a frame is
translated exactly as the same picture sent as an image (large frames tiled alike). Memory
holds one batch of frames and the stabiliser's previous pair, whatever the clip's length.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from service import failpoints
from service.errors import WorkDropped
from service.files import atomic_path
from service.inference.image_io import DecodedImage
from service.inference.videos.containers import ClipReader, ClipWriter, Frame
from service.inference.videos.options import VideoLimits, VideoOptions
from service.inference.videos.temporal import Stabiliser
from service.inference.videos.watchdog import watched

__all__ = ["ClipReport", "FrameTranslator", "VideoOptions", "translate_clip"]

#: Frames in, their translations (or each frame's own error) out, in order.
FrameTranslator = Callable[[Sequence[DecodedImage]], Sequence[DecodedImage | Exception]]


@dataclass(frozen=True)
class ClipReport:
    """What a translated clip reports beside its file (CLI summary, job manifest)."""

    input: str
    output: str
    frames: int
    width: int
    height: int
    duration_s: float  # from the first frame's timestamp to the last's
    audio_streams: int
    temporal: str
    strength: float
    scene_cuts: list[int]  # frames that start a new scene
    warping_error: float | None  # of the output (Lai et al. 2018); None under two frames
    input_warping_error: float | None  # of the input clip: the floor
    seconds: float  # wall time
    frames_per_second: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def translate_clip(
    source: str,
    target: str,
    translate: FrameTranslator,
    *,
    limits: VideoLimits,
    options: VideoOptions | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_frames: Callable[[int], None] | None = None,
    name: str | None = None,
) -> ClipReport:
    """Translate the clip at `source` into `target` (written atomically: complete or absent).

    Raises the clip's own rejection (:class:`~service.errors.VideoRejected`,
    :class:`~service.errors.VideoTooLarge`), the first frame error the translator returns,
    or :class:`~service.errors.WorkDropped` once ``should_stop()`` turns true (asked before
    each batch)."""
    options = options or VideoOptions()
    started = time.perf_counter()
    label = name or source
    failpoints.hit("decode", (label,))  # tests: a clip that crashes its demuxer or decoder
    stabiliser = Stabiliser(options.temporal)
    first: Frame | None = None
    last: Frame | None = None
    with (
        ClipReader(source, limits, name=label) as reader,
        atomic_path(target) as partial,
        # closed first, on every exit: its decoding thread ends (or is left as hung) before
        # the reader's container is closed under it
        contextlib.closing(
            watched(
                reader.read(),
                stall_s=limits.stall_s,
                depth=2 * options.batch,
                name=label,
                on_abandon=reader.abandon,
            )
        ) as items,
    ):
        early: list[Any] = []  # audio before the first frame, whose rotation the writer needs
        for item in items:
            if isinstance(item, Frame):
                first = item
                break
            early.append(item)
        rotation = first.rotation if first is not None else 0
        with ClipWriter(
            partial,
            reader.info,
            reader.audio,
            rotation=rotation,
            container=options.container,
            crf=options.crf,
            name=label,
        ) as writer:
            pending: list[Frame] = []

            def flush() -> None:
                if not pending:
                    return
                if should_stop is not None and should_stop():
                    raise WorkDropped(f"{label}: stopped at frame {pending[0].index}")
                images = [DecodedImage(rgb=frame.rgb, alpha=None) for frame in pending]
                results = translate(images)
                for frame, result in zip(pending, results, strict=True):
                    if isinstance(result, Exception):
                        raise result
                    writer.write_frame(frame, stabiliser.step(frame.rgb, result.rgb))
                if on_frames is not None:
                    on_frames(len(pending))
                pending.clear()

            for packet in early:
                writer.write_audio(packet)
            for item in itertools.chain([first] if first is not None else [], items):
                if isinstance(item, Frame):
                    last = item
                    pending.append(item)
                    if len(pending) >= options.batch:
                        flush()
                else:
                    writer.write_audio(item)
            flush()
            frames = writer.frames
    seconds = time.perf_counter() - started
    assert first is not None and last is not None  # the reader refuses a clip of no frames
    return ClipReport(
        input=label,
        output=target,
        frames=frames,
        width=reader.info.width,
        height=reader.info.height,
        duration_s=round(last.seconds - first.seconds, 6),
        audio_streams=reader.info.audio_streams,
        temporal=options.temporal.mode,
        strength=options.temporal.strength,
        scene_cuts=stabiliser.cuts,
        warping_error=stabiliser.output_error.value,
        input_warping_error=stabiliser.input_error.value,
        seconds=round(seconds, 3),
        frames_per_second=round(frames / seconds, 3) if seconds > 0 else 0.0,
    )
