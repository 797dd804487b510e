"""The catalog's fast path: the event loop resolves a known model from a fresh snapshot without
reading the store; anything else is left to `resolve` (in a thread)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.errors import ModelNotFoundError
from service.store.catalog import ModelCatalog
from service.store.model_store import ModelStore


def test_a_fresh_snapshot_answers_without_reading_the_store(model_store: Path) -> None:
    catalog = ModelCatalog(ModelStore(model_store), ttl=60)
    assert catalog.resolve_fresh("tiny") is None  # no snapshot yet: the store must be read
    assert catalog.resolve("day2night").name == "tiny"
    shutil.rmtree(model_store / "tiny")  # the snapshot, not the store, answers now
    fresh = catalog.resolve_fresh("day2night")
    assert fresh is not None and fresh.name == "tiny"
    assert catalog.resolve_fresh("zebra") is None  # unknown: `resolve` rescans and refuses
    with pytest.raises(ModelNotFoundError):
        catalog.resolve("zebra")


def test_a_stale_snapshot_is_not_used(model_store: Path) -> None:
    catalog = ModelCatalog(ModelStore(model_store), ttl=0.0)
    catalog.resolve("tiny")
    assert catalog.resolve_fresh("tiny") is None
