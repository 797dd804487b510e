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
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from service.errors import BatcherClosed, DeadlineExceeded
from service.inference import image_io
from service.inference.batcher import Batched, MicroBatcher
from service.inference.engine import EngineOptions
from service.inference.engine_pool import EnginePool
from service.inference.image_io import DecodedImage, ImageLimits
from service.inference.priorities import lower_thread_priority
from service.inference.requests import Readiness, Translated, TranslationRequest
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
        codec_threads: int | None = None,
        worker: str | None = None,
    ) -> None:
        self.pool = pool
        self.limits = limits
        self.worker = worker
        self.batcher: MicroBatcher[BatchKey, DecodedImage, DecodedImage] = MicroBatcher(
            self._run,
            max_batch=max_batch,
            max_wait=max_wait,
            max_queue=max_queue,
            background_batch=background_batch,
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
            max_batch=settings.max_batch,
            max_wait=settings.max_wait_ms / 1000,
            max_queue=settings.max_queue,
            background_batch=settings.bulk_max_batch or _bulk_batch(pool, settings.max_batch),
            worker=worker,
        )

    def _run(self, key: BatchKey, images: list[DecodedImage]) -> list[DecodedImage | Exception]:
        return self.pool.engine(key.model, key.direction).translate_each(images)

    def _decode_and_submit(
        self, request: TranslationRequest, background: bool = False
    ) -> concurrent.futures.Future[Batched[DecodedImage]]:
        image = image_io.decode_image(request.data, limits=self.limits, name=request.name)
        engine = self.pool.engine(request.model, request.direction)  # loads a new model once
        shape = engine.batch_shape(image.height, image.width)
        key = BatchKey(request.model, request.direction, shape, background)
        return self.batcher.submit(
            key, image, deadline=request.deadline, alone=shape is None, background=background
        )

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

    def translate_blocking(self, request: TranslationRequest) -> Translated:
        """For worker threads: waits on the batcher until the request's deadline."""
        future = self._decode_and_submit(request)
        try:
            batched = future.result(timeout=max(0.0, request.deadline - time.time()))
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise DeadlineExceeded("the deadline passed before the engine finished") from None
        return self._encode(request, batched)

    def translate_background(
        self, requests: Sequence[TranslationRequest]
    ) -> list[Translated | Exception]:
        """For bulk work (blocking): every request decoded, batched behind interactive
        requests and encoded on the bulk threads; each request's own failure comes back in
        its place. No thread but the caller's waits on the batcher."""
        outcomes: list[Future[Translated]] = []
        for request in requests:
            outcome: Future[Translated] = Future()
            try:
                self._bulk_codec.submit(self._start_background, request, outcome)
            except RuntimeError:  # shut down
                outcome.set_exception(BatcherClosed("the server is shutting down"))
            outcomes.append(outcome)
        concurrent.futures.wait(outcomes)
        return [_result_or_error(outcome) for outcome in outcomes]

    def _start_background(self, request: TranslationRequest, outcome: Future[Translated]) -> None:
        try:
            queued = self._decode_and_submit(request, background=True)
        except Exception as exc:
            outcome.set_exception(exc)
            return

        def encode(done: Future[Batched[DecodedImage]]) -> None:  # on the batcher's thread
            try:
                self._bulk_codec.submit(self._finish_background, request, done, outcome)
            except RuntimeError:
                outcome.set_exception(BatcherClosed("the server is shutting down"))

        queued.add_done_callback(encode)

    def _finish_background(
        self,
        request: TranslationRequest,
        done: Future[Batched[DecodedImage]],
        outcome: Future[Translated],
    ) -> None:
        try:
            outcome.set_result(self._encode(request, done.result()))
        except Exception as exc:
            outcome.set_exception(exc)

    async def translate(self, request: TranslationRequest) -> Translated:
        """For the event loop: no thread is held while the request waits for its batch."""
        loop = asyncio.get_running_loop()
        future = await loop.run_in_executor(self._codec, self._decode_and_submit, request)
        batched = await asyncio.wrap_future(future)  # cancelling this cancels the queued item
        return await loop.run_in_executor(self._codec, self._encode, request, batched)

    async def readiness(self) -> Readiness:
        engines = self.pool.describe()
        checks = {
            "engines": engines,
            "queue": self.batcher.pending,  # interactive requests waiting for the engine
            "bulk_queue": self.batcher.background_pending,  # bulk images waiting behind them
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
