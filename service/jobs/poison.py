"""Images that take down the process translating them (a crash in a codec, the OOM killer):
found one by one after a chunk's process died, and recorded as failed once they have done it
`poison_attempts` times, so that their job ends and the other images are translated.

A chunk whose earlier start neither recorded an outcome nor asked for a retry died with its
process. Its next attempt is careful: one image at a time, each named in the job store before
it runs (:meth:`~service.jobs.job_store.JobStore.translating`). If that attempt dies too, the
image it named is charged with the death when the chunk next begins
(:meth:`~service.jobs.job_store.JobStore.begin_careful`); the others, written or not, are not.

A process runs one careful image at a time, whatever chunk it belongs to: chunks of one job run
side by side in a worker, and a poison clip's chunk dying beside a careful image's would
otherwise charge that image with the clip's death (both failed as poison; seen in a test).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Final

from service.inference.local_translator import LocalTranslator
from service.jobs.chunks import run_chunk
from service.jobs.job_store import JobStore
from service.jobs.records import ChunkOutcome, Item, ItemError, JobSpec
from service.jobs.video_items import FramesFor

__all__ = ["run_carefully"]

log = logging.getLogger("unpaired.jobs")

#: One suspect image at a time in this process (see the module's docstring).
_ONE_SUSPECT: Final = threading.Lock()


def run_carefully(
    store: JobStore,
    spec: JobSpec,
    index: int,
    items: Sequence[Item],
    translator: LocalTranslator,
    *,
    should_stop: Callable[[], bool],
    poison_attempts: int,
    on_frames: Callable[[str, int], None] | None = None,
    frames_for: FramesFor | None = None,
) -> ChunkOutcome:
    """The chunk image by image; an image charged with `poison_attempts` deaths fails."""
    deaths = store.begin_careful(spec.id, index)
    written: list[Item] = []
    failed: list[ItemError] = []
    for item in items:
        if should_stop():
            break  # cancelled: the images left are neither done nor failed
        died = deaths.get(item.name, 0)
        if died >= poison_attempts:
            log.warning("job %s: %s took its worker down %d times", spec.id, item.name, died)
            failed.append(ItemError(item.name, _poison_message(died)))
            continue
        with _ONE_SUSPECT:  # alone among this process's suspects: a death here is its own
            store.translating(spec.id, index, item.name)
            outcome = run_chunk(
                spec,
                [item],
                translator,
                should_stop=should_stop,
                on_frames=on_frames,
                frames_for=frames_for,
            )
            store.translating(spec.id, index, None)  # not charged while waiting for its turn
        written += outcome.written
        failed += outcome.failed
    store.translating(spec.id, index, None)
    return ChunkOutcome(written=written, failed=failed)


def _poison_message(died: int) -> str:
    return (
        f"the process translating this image died {died} times (a crash or out of memory); "
        "it was not tried again"
    )
