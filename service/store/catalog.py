"""The model store as the API sees it: manifests cached for a few seconds.

Every request names a model, and reading manifests on each one would cost a directory scan
(or a network round trip on an object store). The catalog keeps a snapshot and re-reads it
when it is older than ``ttl``, or at once (at most every ``min_refresh`` seconds) when asked
for a name it does not know, so a model published while the server runs appears without a
restart and an unknown name cannot make the server rescan the store on every request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from models.manifest import ModelManifest
from service.errors import ModelNotFoundError
from service.store.model_store import ModelStore, find_model

__all__ = ["ModelCatalog"]


@dataclass(frozen=True)
class _Snapshot:
    taken: float
    manifests: tuple[ModelManifest, ...]
    problems: tuple[str, ...]

    def older_than(self, seconds: float) -> bool:
        return time.monotonic() - self.taken > seconds


class ModelCatalog:
    def __init__(self, store: ModelStore, *, ttl: float = 5.0, min_refresh: float = 1.0) -> None:
        self.store = store
        self.ttl = ttl
        self.min_refresh = min_refresh
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None

    def _current(self, *, max_age: float) -> _Snapshot:
        with self._lock:
            snapshot = self._snapshot
            if snapshot is None or snapshot.older_than(max_age):
                manifests, problems = self.store.manifests()
                snapshot = _Snapshot(time.monotonic(), tuple(manifests), tuple(problems))
                self._snapshot = snapshot
            return snapshot

    def manifests(self) -> tuple[ModelManifest, ...]:
        return self._current(max_age=self.ttl).manifests

    def problems(self) -> tuple[str, ...]:
        """Folders in the store whose manifest cannot be read (shown, never served)."""
        return self._current(max_age=self.ttl).problems

    def resolve_fresh(self, name: str) -> ModelManifest | None:
        """The model from a snapshot younger than ``ttl``, else None; never reads the store
        nor waits for the lock, so the event loop may call it (then `resolve` in a thread)."""
        snapshot = self._snapshot
        if snapshot is None or snapshot.older_than(self.ttl):
            return None
        try:
            return find_model(snapshot.manifests, name, where=self.store.url)
        except ModelNotFoundError:
            return None

    def resolve(self, name: str) -> ModelManifest:
        """A model by name or alias; :class:`ModelNotFoundError` lists the models there are."""
        try:
            return find_model(self.manifests(), name, where=self.store.url)
        except ModelNotFoundError:
            fresh = self._current(max_age=self.min_refresh)  # published since the snapshot?
            return find_model(fresh.manifests, name, where=self.store.url)
