"""A job's video item: the clip translated frame by frame and written with its report.

A video is a chunk of its own (:meth:`service.jobs.intake.Intake.chunks`). Its frames go
through the same micro-batcher as the job's images (bulk work, behind interactive requests);
the clip is written atomically, and its report (frames, scene cuts, warping error of the output
and of the input) is written beside it as ``<output>.json``: the job's manifest of its clips.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from functools import partial

from service.errors import ImageRejected, WorkDropped
from service.inference.local_translator import LocalTranslator
from service.inference.videos.formats import REPORT_SUFFIX
from service.inference.videos.pipeline import ClipReport, FrameTranslator, translate_clip
from service.jobs.records import Item, ItemError, JobSpec
from service.jobs.storage import Storage

__all__ = ["ClipStorageError", "FramesFor", "run_clip"]

#: Who translates a job's clip frames (default: this process's micro-batcher); distributed
#: workers share them out (:mod:`service.distributed.frame_sharing`).
FramesFor = Callable[[JobSpec, Callable[[], bool] | None], FrameTranslator]

log = logging.getLogger("unpaired.jobs")


class ClipStorageError(OSError):
    """Reading the clip or writing its output failed (storage: may pass)."""


def run_clip(
    spec: JobSpec,
    item: Item,
    translator: LocalTranslator,
    *,
    should_stop: Callable[[], bool] | None = None,
    on_frames: Callable[[int], None] | None = None,
    frames_for: FramesFor | None = None,
) -> Item | ItemError | None:
    """The item written (with its report), its failure, or None when the job was stopped;
    ``on_frames(frames done so far)`` after each batch. Raises :class:`ClipStorageError` when
    storage failed (the chunk is tried again)."""
    done = 0

    def progress(frames: int) -> None:
        nonlocal done
        done += frames
        if on_frames is not None:
            on_frames(done)

    inputs, outputs = Storage(spec.inputs), Storage(spec.outputs)
    frames: FrameTranslator = (
        frames_for(spec, should_stop)
        if frames_for is not None
        else partial(
            translator.translate_frames, spec.model, spec.direction, should_stop=should_stop
        )
    )
    with tempfile.TemporaryDirectory(prefix="unpaired-clip-") as scratch:
        source = inputs.local_path(item.name)
        if source is None:  # an object store: the demuxer needs a seekable local file
            source = os.path.join(scratch, "input" + os.path.splitext(item.name)[1])
            try:
                inputs.fs.get_file(inputs.path(item.name), source)
            except FileNotFoundError:
                return ItemError(item.name, "the input is gone")
            except OSError as exc:
                raise ClipStorageError(f"cannot read {item.name}: {exc}") from exc
        elif not os.path.isfile(source):
            return ItemError(item.name, "the input is gone")
        local_target = outputs.local_path(item.output)
        target = local_target or os.path.join(scratch, os.path.basename(item.output))
        try:
            report = translate_clip(
                source,
                target,
                frames,
                limits=translator.video_limits,
                options=translator.video_options,
                should_stop=should_stop,
                on_frames=progress,
                name=item.name,
            )
        except WorkDropped:
            return None
        except ImageRejected as exc:  # the clip's own problem, or a frame's
            return ItemError(item.name, str(exc))
        except OSError as exc:
            raise ClipStorageError(f"cannot write {item.output}: {exc}") from exc
        try:
            if local_target is None:
                outputs.put_file(target, item.output)
            describe = getattr(frames, "describe", None)  # who translated the frames
            shared: dict[str, object] = describe() if describe is not None else {}
            outputs.write_atomic(_report_json(report, item, shared), item.output + REPORT_SUFFIX)
        except OSError as exc:
            raise ClipStorageError(f"cannot write {item.output}: {exc}") from exc
    log.info(
        "job %s: %s: %d frames at %.2f frames/s, warping error %s (input %s)",
        spec.id,
        item.name,
        report.frames,
        report.frames_per_second,
        report.warping_error,
        report.input_warping_error,
    )
    return item


def _report_json(report: ClipReport, item: Item, extra: dict[str, object]) -> bytes:
    data = {**report.to_dict(), **extra, "input": item.name, "output": item.output}
    return json.dumps(data, indent=2).encode()
