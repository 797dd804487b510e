"""A LocalTranslator on the tiny model for translator tests, of any subclass the test needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from service.inference.engine import EngineOptions
from service.inference.engine_pool import EnginePool
from service.inference.image_io import ImageLimits
from service.inference.local_translator import LocalTranslator
from service.store.model_store import ModelStore

L = TypeVar("L", bound=LocalTranslator)


def tiny_translator(cls: type[L], model_store: Path, **options: Any) -> L:
    """`cls` serving the store's tiny model on the CPU (onnxruntime), batching options given."""
    pool = EnginePool(ModelStore(model_store), EngineOptions(backend="onnx", device="cpu"))
    pool.load(["tiny"])
    options.setdefault("max_batch", 4)
    options.setdefault("max_queue", 64)
    return cls(pool, limits=ImageLimits(), **options)
