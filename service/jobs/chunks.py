"""One chunk of a bulk job: read its images, translate them behind interactive work, write.

The embedded runner and the Celery bulk task both call :func:`run_chunk`, which uses the same
:class:`~service.inference.local_translator.LocalTranslator` (decode, micro-batcher, engine,
encode) as every interactive request, so a bulk output is byte-identical to ``unpaired
translate``. A bad image fails only itself; a storage error that may pass (a network filesystem,
an object store) fails the chunk as :class:`TransientChunkError`, to be retried with backoff.
Outputs are written atomically under fixed names, so running a chunk twice writes the same files
once.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
from collections.abc import Callable, Sequence
from functools import partial

from service.errors import BatcherClosed, WorkDropped
from service.inference.local_translator import LocalTranslator
from service.inference.priorities import lower_thread_priority
from service.inference.requests import OutputSpec, Translated, TranslationRequest
from service.inference.videos.formats import is_video_name
from service.jobs.records import ChunkOutcome, Item, ItemError, JobSpec
from service.jobs.storage import Storage
from service.jobs.video_items import ClipStorageError, FramesFor, run_clip

__all__ = ["TransientChunkError", "run_chunk"]

log = logging.getLogger("unpaired.jobs")

#: Reads and writes in flight per chunk (object stores are latency-bound).
IO_THREADS = 8


class TransientChunkError(RuntimeError):
    """The chunk could not finish for a reason that may pass; run it again later."""


def run_chunk(
    spec: JobSpec,
    items: Sequence[Item],
    translator: LocalTranslator,
    *,
    should_stop: Callable[[], bool] | None = None,
    on_frames: Callable[[str, int], None] | None = None,
    frames_for: FramesFor | None = None,
) -> ChunkOutcome:
    """Translate and write the chunk's items; when ``should_stop()`` turns true (the job was
    cancelled) the images not done yet are dropped, a large one's remaining tiles included.
    A clip's progress is ``on_frames(item name, frames done so far)``."""
    clips = [item for item in items if is_video_name(item.name)]
    if clips:
        outcome = _run_clips(spec, clips, translator, should_stop, on_frames, frames_for)
        items = [item for item in items if not is_video_name(item.name)]
        if not items:
            return outcome
        rest = run_chunk(spec, items, translator, should_stop=should_stop)
        return ChunkOutcome(outcome.written + rest.written, outcome.failed + rest.failed)
    inputs, outputs = Storage(spec.inputs), Storage(spec.outputs)
    output = OutputSpec(format=spec.format, quality=spec.quality)
    with concurrent.futures.ThreadPoolExecutor(
        IO_THREADS, thread_name_prefix="job-io", initializer=lower_thread_priority
    ) as io:
        read = list(io.map(lambda item: _read(inputs, item), items))
        failed = [
            ItemError(item.name, str(data))
            for item, data in zip(items, read, strict=True)
            if isinstance(data, Exception)
        ]
        ready = [
            (item, data) for item, data in zip(items, read, strict=True) if isinstance(data, bytes)
        ]
        requests = [
            TranslationRequest(
                model=spec.model,
                direction=spec.direction,
                data=data,
                output=output,
                deadline=math.inf,
                name=item.name,
                request_id=f"{spec.id}:{item.name}",
            )
            for item, data in ready
        ]
        results = translator.translate_background(requests, should_stop=should_stop)
        if any(isinstance(r, BatcherClosed) for r in results):
            raise TransientChunkError("the worker is shutting down")
        done: list[tuple[Item, Translated]] = []
        for (item, _), result in zip(ready, results, strict=True):
            if isinstance(result, WorkDropped):
                continue  # the job was cancelled: neither done nor failed
            if isinstance(result, Exception):
                failed.append(ItemError(item.name, _describe(result)))
            else:
                done.append((item, result))
        for problem in io.map(lambda pair: _write(outputs, *pair), done):
            if problem is not None:
                raise TransientChunkError(problem)
    return ChunkOutcome(written=[item for item, _ in done], failed=failed)


def _run_clips(
    spec: JobSpec,
    clips: Sequence[Item],
    translator: LocalTranslator,
    should_stop: Callable[[], bool] | None,
    on_frames: Callable[[str, int], None] | None,
    frames_for: FramesFor | None,
) -> ChunkOutcome:
    written: list[Item] = []
    failed: list[ItemError] = []
    for item in clips:
        progress = None if on_frames is None else partial(on_frames, item.name)
        try:
            result = run_clip(
                spec,
                item,
                translator,
                should_stop=should_stop,
                on_frames=progress,
                frames_for=frames_for,
            )
        except ClipStorageError as exc:
            raise TransientChunkError(str(exc)) from exc
        if isinstance(result, ItemError):
            failed.append(result)
        elif result is not None:
            written.append(result)
    return ChunkOutcome(written=written, failed=failed)


def _read(storage: Storage, item: Item) -> bytes | Exception:
    """The input's bytes; a missing input is the item's failure, other errors the chunk's."""
    try:
        return storage.read(item.name)
    except FileNotFoundError:
        return FileNotFoundError("the input is gone")
    except IsADirectoryError:
        return IsADirectoryError("the input is a folder")
    except OSError as exc:
        raise TransientChunkError(f"cannot read {item.name}: {exc}") from exc


def _write(storage: Storage, item: Item, result: Translated) -> str | None:
    try:
        storage.write_atomic(result.data, item.output)
    except OSError as exc:
        return f"cannot write {item.output}: {exc}"
    return None


def _describe(exc: Exception) -> str:
    """What the user reads for a failed image: the decoder's message, or the error's type."""
    from service.errors import ImageRejected

    if isinstance(exc, ImageRejected):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
