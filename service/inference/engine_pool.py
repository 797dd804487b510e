"""Every engine one serving process holds: loaded once, warmed, shared by all its threads.

The embedded API and each Celery worker keep one :class:`EnginePool`. Models named at start
(or the whole store) are loaded and warmed before the process takes traffic; a model published
later is loaded on its first request, so adding a model needs no restart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import numpy as np

from service.inference.admission import return_freed_memory
from service.inference.engine import Engine, EngineOptions
from service.inference.image_io import DecodedImage
from service.store.model_store import ModelStore

__all__ = ["EnginePool"]

log = logging.getLogger(__name__)


class EnginePool:
    """Engines by (model name, direction); thread-safe."""

    def __init__(self, store: ModelStore, options: EngineOptions) -> None:
        self.store = store
        self.options = options
        self._engines: dict[tuple[str, str], Engine] = {}
        self._lock = threading.Lock()

    def load(self, names: Sequence[str] = ()) -> list[str]:
        """Load and warm `names` (models or aliases; empty: every model in the store).

        Returns the canonical names loaded. A broken model named explicitly is an error; one
        found while loading the whole store is logged and skipped, so one bad folder does not
        take the service down.
        """
        if names:
            wanted = list(names)
        else:
            manifests, problems = self.store.manifests()
            for problem in problems:
                log.warning("skipping a broken model: %s", problem)
            wanted = [m.name for m in manifests]
        loaded = []
        for name in wanted:
            model = self.store.open(name)
            for direction in model.manifest.directions:
                engine = Engine(model, direction, self.options)
                warm(engine)
                with self._lock:
                    self._engines[(model.manifest.name, direction)] = engine
            loaded.append(model.manifest.name)
        return loaded

    def engine(self, model: str, direction: str) -> Engine:
        """The engine of a canonical model name; loads (and warms) it on first use."""
        key = (model, direction)
        found = self._engines.get(key)
        if found is not None:
            return found
        with self._lock:  # one load per model even when many requests ask at once
            found = self._engines.get(key)
            if found is None:
                found = Engine(self.store.open(model), direction, self.options)
                warm(found)
                self._engines[key] = found
        return found

    def release_idle_memory(self) -> None:
        """Every engine gives back what large calls left cached (see Engine.release_if_large);
        then glibc returns the freed pages. For the batcher's thread, when it goes idle."""
        released = [engine.release_if_large() for engine in list(self._engines.values())]
        if any(released):
            return_freed_memory()

    def describe(self) -> list[dict[str, object]]:
        return [engine.describe() for engine in list(self._engines.values())]

    def __len__(self) -> int:
        return len(self._engines)


def warm(engine: Engine) -> None:
    """One small image through the engine, so the first request does not pay for setup."""
    engine.translate([DecodedImage(rgb=np.zeros((*engine.small_shape, 3), np.uint8))])
