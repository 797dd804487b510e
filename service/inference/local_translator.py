"""Embedded translation: decode -> micro-batcher -> engine -> encode, in this process.

:class:`LocalTranslator` serves the embedded API and runs inside every Celery worker; the
distributed API forwards to it through Redis. It decodes and encodes with
:mod:`service.inference.image_io` and runs the network through
:meth:`service.inference.engine.Engine.translate_each`, so the CLI, the API and the workers
return the same bytes for the same input.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Final

from service import failpoints
from service.errors import BatcherClosed, DeadlineExceeded, WorkDropped
from service.inference import image_io
from service.inference.admission import (
    MemoryBudget,
    Reservation,
    budget_bytes,
    default_budget_bytes,
)
from service.inference.batcher import Batched, MicroBatcher
from service.inference.engine import Engine, EngineOptions
from service.inference.engine_pool import EnginePool
from service.inference.image_io import DecodedImage, ImageLimits
from service.inference.priorities import lower_thread_priority
from service.inference.requests import Readiness, Translated, TranslationRequest
from service.inference.videos.options import VideoLimits, VideoOptions, video_options
from service.settings import Settings
from service.store.model_store import ModelStore

__all__ = ["BatchKey", "LocalTranslator"]


@dataclass(frozen=True)
class BatchKey:
    """Requests that can share one network call: same engine, same padded shape."""

    model: str
    direction: str
    shape: tuple[int, int] | None  # None: tiled, runs alone
    background: bool = False  # bulk-job work, served when no interactive request waits


class LocalTranslator:
    """Decode -> micro-batch -> engine -> encode, in this process."""

    mode = "embedded"

    def __init__(
        self,
        pool: EnginePool,
        *,
        limits: ImageLimits,
        max_batch: int,
        max_wait: float,
        max_queue: int,
        background_batch: int | None = None,
        budget: MemoryBudget | None = None,
        codec_threads: int | None = None,
        worker: str | None = None,
        video_limits: VideoLimits | None = None,
        video_options: VideoOptions | None = None,
    ) -> None:
        self.pool = pool
        self.limits = limits
        self.video_limits = video_limits or VideoLimits()
        self.video_options = video_options or VideoOptions()
        self.budget = budget or MemoryBudget(default_budget_bytes())
        self.worker = worker
        self.batcher: MicroBatcher[BatchKey, DecodedImage, DecodedImage] = MicroBatcher(
            self._run,
            max_batch=max_batch,
            max_wait=max_wait,
            max_queue=max_queue,
            background_batch=background_batch,
            on_idle=pool.release_idle_memory,
        )
        # decoding and encoding run beside the engine, a bounded number at a time; bulk work
        # has its own threads at a lower CPU priority, so it never queues before (or competes
        # with) an interactive request's decoding and encoding
        threads = codec_threads or len(os.sched_getaffinity(0))
        self._codec = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="codec")
        self._bulk_codec = concurrent.futures.ThreadPoolExecutor(
            threads, thread_name_prefix="bulk-codec", initializer=lower_thread_priority
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, worker: str | None = None) -> LocalTranslator:
        """Load and warm the models `settings` name (all in the store by default)."""
        store = ModelStore(settings.store, cache_dir=settings.cache_dir)
        pool = EnginePool(store, EngineOptions.from_settings(settings))
        pool.load(settings.models)
        return cls(
            pool,
            limits=ImageLimits.from_settings(settings),
            budget=MemoryBudget(budget_bytes(settings), large_share=settings.large_image_share),
            max_batch=settings.max_batch,
            max_wait=settings.max_wait_ms / 1000,
            max_queue=settings.max_queue,
            background_batch=settings.bulk_max_batch or _bulk_batch(pool, settings.max_batch),
            worker=worker,
            video_limits=VideoLimits.from_settings(settings),
            video_options=video_options(settings),
        )

    def _run(self, key: BatchKey, images: list[DecodedImage]) -> list[DecodedImage | Exception]:
        failpoints.hit("batch", (key.model, "bulk" if key.background else "interactive"))
        return self.pool.engine(key.model, key.direction).translate_each(images)

    def _decode_and_submit(
        self,
        request: TranslationRequest,
        background: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> _Submitted:
        """Reserve the image's memory (from its header), decode, and queue it: a large image
        as tile steps, others to share a batch. The caller releases the reservation once it
        has encoded the answer (or given up); the batcher releases its own hold when done."""
        engine = self.pool.engine(request.model, request.direction)  # loads a new model once
        reservation: Reservation | None = None

        def admit(height: int, width: int) -> None:
            nonlocal reservation
            cost = engine.working_bytes(height, width)
            large = engine.batch_shape(height, width) is None
            what = f"{request.name} ({width}x{height})"
            if background:  # bulk work waits for room; its producers are bounded
                reservation = self.budget.reserve(
                    cost, large=large, what=what, should_stop=should_stop
                )
            else:
                reservation = self.budget.try_reserve(cost, large=large, what=what)

        try:
            failpoints.hit("decode", (request.name, request.request_id))
            image = image_io.decode_image(
                request.data, limits=self.limits, name=request.name, admit=admit
            )
            assert reservation is not None
            future = self._submit(
                engine,
                request.model,
                request.direction,
                image,
                reservation,
                deadline=request.deadline,
                background=background,
            )
        except BaseException:
            if reservation is not None:
                reservation.release()
            raise
        return _Submitted(future, reservation)

    def _submit(
        self,
        engine: Engine,
        model: str,
        direction: str,
        image: DecodedImage,
        reservation: Reservation,
        *,
        deadline: float,
        background: bool,
    ) -> Future[Batched[DecodedImage]]:
        """Queue a decoded image whose memory is reserved: a large one as tile steps, others
        to share a batch; the batcher holds the reservation until it is done with it."""
        shape = engine.batch_shape(image.height, image.width)
        held = reservation.hold()  # the batcher's hold, released when it is done
        try:
            if shape is None:
                return self.batcher.submit_steps(
                    engine.start_tiled(image),
                    deadline=deadline,
                    background=background,
                    on_done=held.release,
                )
            key = BatchKey(model, direction, shape, background)
            return self.batcher.submit(
                key, image, deadline=deadline, background=background, on_done=held.release
            )
        except BaseException:
            held.release()
            raise

    def translate_frames(
        self,
        model: str,
        direction: str,
        frames: Sequence[DecodedImage],
        *,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[DecodedImage | Exception]:
        """A clip's frames as bulk work (blocking): through the batcher behind interactive
        requests, as the same pictures sent as images would be (large frames tiled); each
        frame's failure in its place. When ``should_stop()`` (asked every half second) turns
        true, the frames not done yet are dropped (:class:`WorkDropped` in their places)."""
        engine = self.pool.engine(model, direction)
        submitted: list[_Submitted] = []
        try:
            for frame in frames:
                large = engine.batch_shape(frame.height, frame.width) is None
                reservation = self.budget.reserve(
                    engine.working_bytes(frame.height, frame.width),
                    large=large,
                    what=f"a video frame ({frame.width}x{frame.height})",
                    should_stop=should_stop,
                )
                try:
                    future = self._submit(
                        engine,
                        model,
                        direction,
                        frame,
                        reservation,
                        deadline=math.inf,
                        background=True,
                    )
                except BaseException:
                    reservation.release()
                    raise
                submitted.append(_Submitted(future, reservation))
            futures = [s.future for s in submitted]
            while True:
                _, waiting = concurrent.futures.wait(futures, timeout=_STOP_POLL_S)
                if not waiting:
                    break
                if should_stop is not None and should_stop():
                    for future in waiting:
                        future.cancel()  # a tiled frame's remaining steps are dropped
            results: list[DecodedImage | Exception] = []
            for done in futures:
                try:
                    results.append(_batched(done).value)
                except Exception as exc:
                    results.append(exc)
            return results
        finally:
            for item in submitted:
                item.reservation.release()

    def _encode(self, request: TranslationRequest, batched: Batched[DecodedImage]) -> Translated:
        image = batched.value
        data = image_io.encode_image(
            image, format=request.output.format, quality=request.output.quality
        )
        return Translated(
            data=data,
            media_type=request.output.media_type,
            width=image.width,
            height=image.height,
            batch_size=batched.batch_size,
            queue_seconds=batched.queue_seconds,
            engine_seconds=batched.run_seconds,
            worker=self.worker,
        )

    def translate_blocking(
        self, request: TranslationRequest, *, should_stop: Callable[[], bool] | None = None
    ) -> Translated:
        """For worker threads: waits on the batcher until the request's deadline, or until
        ``should_stop()`` (asked every half second) says nobody waits for it any more."""
        submitted = self._decode_and_submit(request)
        try:
            batched = _wait(submitted.future, request.deadline, should_stop)
            return self._encode(request, batched)
        finally:
            submitted.reservation.release()

    def translate_background(
        self,
        requests: Sequence[TranslationRequest],
        *,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Translated | Exception]:
        """For bulk work (blocking): every request decoded, batched behind interactive
        requests and encoded on the bulk threads; each request's own failure comes back in
        its place. No thread but the caller's waits on the batcher. When ``should_stop()``
        (asked every half second) turns true, the work not done yet is dropped."""
        outcomes: list[Future[Translated]] = []
        started: list[Future[Batched[DecodedImage]]] = []
        for request in requests:
            outcome: Future[Translated] = Future()
            try:
                self._bulk_codec.submit(
                    self._start_background, request, outcome, started, should_stop
                )
            except RuntimeError:  # shut down
                outcome.set_exception(BatcherClosed("the server is shutting down"))
            outcomes.append(outcome)
        stopping = False
        while True:
            if stopping:  # again each time: images still decoding queue up after a stop
                for queued in list(started):
                    queued.cancel()  # a tiled image's remaining steps are dropped
            _, waiting = concurrent.futures.wait(outcomes, timeout=_STOP_POLL_S)
            if not waiting:
                break
            stopping = stopping or (should_stop is not None and should_stop())
        return [_result_or_error(outcome) for outcome in outcomes]

    def _start_background(
        self,
        request: TranslationRequest,
        outcome: Future[Translated],
        started: list[Future[Batched[DecodedImage]]],
        should_stop: Callable[[], bool] | None,
    ) -> None:
        try:
            if should_stop is not None and should_stop():
                raise WorkDropped("the job was stopped before this image started")
            submitted = self._decode_and_submit(request, True, should_stop)
        except Exception as exc:
            outcome.set_exception(exc)
            return
        started.append(submitted.future)

        def encode(done: Future[Batched[DecodedImage]]) -> None:  # on the batcher's thread
            try:
                self._bulk_codec.submit(self._finish_background, request, submitted, outcome)
            except RuntimeError:
                submitted.reservation.release()
                outcome.set_exception(BatcherClosed("the server is shutting down"))

        submitted.future.add_done_callback(encode)

    def _finish_background(
        self, request: TranslationRequest, submitted: _Submitted, outcome: Future[Translated]
    ) -> None:
        try:
            outcome.set_result(self._encode(request, _batched(submitted.future)))
        except Exception as exc:
            outcome.set_exception(exc)
        finally:
            submitted.reservation.release()

    async def translate(self, request: TranslationRequest) -> Translated:
        """For the event loop: no thread is held while the request waits for its batch;
        cancelling it (a deadline, a client that hung up) drops its queued work, a large
        image's remaining tiles included."""
        loop = asyncio.get_running_loop()
        decoding = self._codec.submit(self._decode_and_submit, request)
        try:
            submitted = await asyncio.wrap_future(decoding)
        except asyncio.CancelledError:  # gone while decoding: drop the work once it is queued
            decoding.add_done_callback(_abandon)
            raise
        try:
            batched = await asyncio.wrap_future(submitted.future)
            return await loop.run_in_executor(self._codec, self._encode, request, batched)
        finally:
            submitted.reservation.release()

    async def readiness(self) -> Readiness:
        engines = self.pool.describe()
        checks = {
            "engines": engines,
            "queue": self.batcher.pending,  # interactive requests waiting for the engine
            "bulk_queue": self.batcher.background_pending,  # bulk images waiting behind them
            "memory": self.budget.describe(),  # bytes the images in flight hold
        }
        return Readiness(bool(engines), checks)

    async def queue_depth(self) -> int:
        return self.batcher.pending

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close_blocking)

    def close_blocking(self) -> None:
        self.batcher.close()  # finishes what is queued, so bulk encodes may still be submitted
        self._codec.shutdown(wait=True)
        self._bulk_codec.shutdown(wait=True)


@dataclass(frozen=True)
class _Submitted:
    """A queued image: its batcher future and the caller's hold on its memory."""

    future: concurrent.futures.Future[Batched[DecodedImage]]
    reservation: Reservation


#: How often a blocked caller asks whether anybody still waits for its work.
_STOP_POLL_S: Final = 0.5


def _wait(
    future: Future[Batched[DecodedImage]],
    deadline: float,
    should_stop: Callable[[], bool] | None,
) -> Batched[DecodedImage]:
    """The batcher's result by the deadline; cancelled (its steps dropped) otherwise."""
    while True:
        left = deadline - time.time()
        try:
            return future.result(timeout=max(0.0, min(left, _STOP_POLL_S)))
        except concurrent.futures.TimeoutError:
            if left <= _STOP_POLL_S:
                future.cancel()
                raise DeadlineExceeded("the deadline passed before the engine finished") from None
            if should_stop is not None and should_stop():
                future.cancel()
                raise DeadlineExceeded("the client stopped waiting for the answer") from None


def _abandon(decoding: Future[_Submitted]) -> None:
    """The caller left while its image was decoding: cancel what was queued for it."""
    if decoding.cancelled() or decoding.exception() is not None:
        return
    submitted = decoding.result()
    submitted.future.cancel()
    submitted.reservation.release()


def _batched(future: Future[Batched[DecodedImage]]) -> Batched[DecodedImage]:
    """A done batcher future's result; a cancelled one as the error it was cancelled for."""
    if future.cancelled():
        raise WorkDropped("the job was stopped before this image was translated")
    return future.result()


def _result_or_error(future: Future[Translated]) -> Translated | Exception:
    error = future.exception()
    if error is None:
        return future.result()
    return error if isinstance(error, Exception) else RuntimeError(str(error))


def _bulk_batch(pool: EnginePool, max_batch: int) -> int:
    """Bulk images per engine call when not set: ``max_batch`` on a GPU, where a batch is
    short; one on a CPU, where an interactive request would wait behind the whole batch (and
    onnxruntime on a CPU gains little or nothing from batching)."""
    on_gpu = any(engine["device"] != "cpu" for engine in pool.describe())
    return max_batch if on_gpu else 1
