"""A LocalTranslator on the tiny model for translator tests, of any subclass the test needs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from service.inference.engine import EngineOptions
from service.inference.engine_pool import EnginePool
from service.inference.image_io import ImageLimits
from service.inference.local_translator import LocalTranslator
from service.inference.requests import TranslationRequest
from service.store.model_store import ModelStore

L = TypeVar("L", bound=LocalTranslator)


def tiny_translator(cls: type[L], model_store: Path, **options: Any) -> L:
    """`cls` serving the store's tiny model on the CPU (onnxruntime), batching options given."""
    pool = EnginePool(ModelStore(model_store), EngineOptions(backend="onnx", device="cpu"))
    pool.load(["tiny"])
    options.setdefault("max_batch", 4)
    options.setdefault("max_queue", 64)
    return cls(pool, limits=ImageLimits(), **options)


class HeldDecode(LocalTranslator):
    """Decoding waits until the test sets `may_finish` (only bulk decoding when `bulk_only`);
    `decoding` says one has started, `queued` keeps the batcher futures it submitted."""

    bulk_only = False

    def __init__(self, pool: EnginePool, **kwargs: Any) -> None:
        super().__init__(pool, **kwargs)
        self.decoding = threading.Event()
        self.may_finish = threading.Event()
        self.queued: list[Any] = []

    def _decode_and_submit(
        self,
        request: TranslationRequest,
        background: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> Any:
        if background or not self.bulk_only:
            self.decoding.set()
            self.may_finish.wait(60)
        submitted = super()._decode_and_submit(request, background, should_stop)
        self.queued.append(submitted.future)
        return submitted
