"""A clip's frames shared out between workers, so two workers finish a clip faster than one.

The worker that runs a clip's chunk (the owner) decodes, steadies and encodes it in order, as
every front door does (:func:`service.inference.videos.pipeline.translate_clip`); only the
network, nearly all of a clip's time, is shared. For each batch of frames the owner puts every
frame in Redis (PNG: lossless, so any worker's translation is the owner's, byte for byte) and
publishes one ``unpaired.frame`` task per frame on the frames queue, then works through the
batch itself. Whoever translates a frame first claims it (a run lease of
:mod:`service.distributed.run_claims`, renewed by its holder), one frame at a time per
worker, so frames go to whoever is free:

- no other worker, or all busy: the owner translates every frame itself (never a deadlock,
  never a wait on a worker that does not come);
- a helper that dies holding a claim: its lease lapses and the owner translates that frame;
- a cancelled job: the owner stops and deletes the batch; late tasks find nothing and return.

Why frames and not segments of the clip: the blend carries each output into the next, so a
segment would start without its predecessor's last output (a seam), and segments would have to
be joined into one stream with the audio; shared frames give exactly the clip one worker makes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import redis
from celery import Celery, Task
from redis.exceptions import RedisError

from service.distributed.run_claims import RunClaims, running_key
from service.inference import image_io
from service.inference.image_io import DecodedImage
from service.inference.local_translator import LocalTranslator

__all__ = ["FRAME_TASK", "FrameHelper", "SharedFrames", "register_frame_task"]

log = logging.getLogger("unpaired.jobs")

FRAME_TASK: Final = "unpaired.frame"
_PREFIX: Final = "unpaired:frames:"
#: How often the owner looks for results while helpers translate.
_POLL_S: Final = 0.05


def _key(run: str, index: int, part: str) -> str:
    return f"{_PREFIX}{run}:{index}:{part}"


def _frame(run: str, index: int) -> str:
    """The frame's name among the run leases (:class:`RunClaims`)."""
    return f"frame:{run}:{index}"


def _bytes(value: object) -> bytes | None:
    return value if isinstance(value, bytes) else None


def _translate_one(
    translator: LocalTranslator, model: str, direction: str, image: DecodedImage
) -> DecodedImage:
    (result,) = translator.translate_frames(model, direction, [image])
    if isinstance(result, Exception):
        raise result
    return result


class FrameHelper:
    """A worker's side: translate frames of other workers' clips, one at a time."""

    def __init__(
        self,
        translator: LocalTranslator,
        client: redis.Redis,
        worker: str,
        ttl: int,
        claims: RunClaims,
    ) -> None:
        self.translator = translator
        self.client = client
        self.worker = worker
        self.ttl = ttl
        self.claims = claims  # the worker's run leases: a dead holder's lapse within a lease
        self._one_at_a_time = threading.Lock()  # claim only what this worker starts now

    def help(self, run: str, index: int, model: str, direction: str) -> str:
        with self._one_at_a_time:
            data = _bytes(self.client.get(_key(run, index, "in")))
            if data is None:
                return "gone"  # the clip finished (or stopped) without this task
            if not self.claims.try_acquire(_frame(run, index)):
                return "taken"
            try:
                image = image_io.decode_image(data)
                out = _translate_one(self.translator, model, direction, image)
                encoded = image_io.encode_image(out, format="png")
                with self.client.pipeline() as pipe:
                    pipe.set(_key(run, index, "out"), encoded, ex=self.ttl)
                    pipe.set(_key(run, index, "by"), self.worker, ex=self.ttl)
                    pipe.execute()
            except Exception:
                # the owner translates it after the lease: its error is the clip's to report
                log.exception("frame %d of clip run %s failed here", index, run)
                raise
            finally:
                self.claims.let_lapse(_frame(run, index))
            return "done"


def register_frame_task(app: Celery, helper: FrameHelper) -> Task:
    @app.task(name=FRAME_TASK, bind=True, ignore_result=True)
    def frame(self: Task, run: str, index: int, model: str, direction: str) -> str:
        return helper.help(run, index, model, direction)

    return frame


@dataclass
class SharedFrames:
    """The owner's side: a frame translator (see
    :data:`~service.inference.videos.pipeline.FrameTranslator`) that shares each batch out."""

    app: Celery
    helper: FrameHelper
    queue: str
    model: str
    direction: str
    should_stop: Callable[[], bool] | None = None
    by_worker: Counter[str] = field(default_factory=Counter)  # frames each worker translated
    run: str = field(default_factory=lambda: uuid.uuid4().hex)
    _next: int = 0

    def __call__(self, images: Sequence[DecodedImage]) -> list[DecodedImage | Exception]:
        first = self._next
        self._next += len(images)
        indices = list(range(first, self._next))
        client, ttl = self.helper.client, self.helper.ttl
        try:
            with client.pipeline(False) as pipe:
                for index, image in zip(indices, images, strict=True):
                    pipe.set(_key(self.run, index, "in"), image_io.encode_image(image), ex=ttl)
                pipe.execute()
            for index in indices:
                self.app.send_task(
                    FRAME_TASK, args=(self.run, index, self.model, self.direction), queue=self.queue
                )
        except RedisError as exc:  # sharing is a speed-up: without Redis, translate here
            log.warning("clip frames not shared (%s); translated here", exc)
            return list(self.helper.translator.translate_frames(
                self.model, self.direction, images, should_stop=self.should_stop
            ))  # fmt: skip
        try:
            return self._collect(indices, images)
        finally:
            with contextlib.suppress(RedisError):
                client.delete(
                    *(_key(self.run, i, "in") for i in indices),
                    *(running_key(_frame(self.run, i)) for i in indices),
                )

    def _collect(
        self, indices: list[int], images: Sequence[DecodedImage]
    ) -> list[DecodedImage | Exception]:
        results: dict[int, DecodedImage | Exception] = {}
        client, claims = self.helper.client, self.helper.claims
        while len(results) < len(indices):
            if self.should_stop is not None and self.should_stop():
                from service.errors import WorkDropped

                stopped = WorkDropped("the job was stopped")
                return [results.get(i, stopped) for i in indices]
            progressed = False
            for index, image in zip(indices, images, strict=True):
                if index in results:
                    continue
                done = _bytes(client.get(_key(self.run, index, "out")))
                if done is not None:
                    by = _bytes(client.get(_key(self.run, index, "by")))
                    self.by_worker[by.decode() if by else "?"] += 1
                    results[index] = image_io.decode_image(done)
                    client.delete(_key(self.run, index, "out"), _key(self.run, index, "by"))
                    progressed = True
                # nobody has it (or its helper died: its lease lapsed)
                elif claims.try_acquire(_frame(self.run, index)):
                    try:
                        results[index] = _translate_one(
                            self.helper.translator, self.model, self.direction, image
                        )
                        self.by_worker[self.helper.worker] += 1
                    except Exception as exc:
                        results[index] = exc
                    finally:
                        claims.let_lapse(_frame(self.run, index))
                    progressed = True
            if not progressed:
                time.sleep(_POLL_S)  # helpers are translating the rest
        return [results[i] for i in indices]

    def describe(self) -> dict[str, Any]:
        return {"frames_by_worker": dict(self.by_worker)}
