"""The model store: publish, resolve by name or alias, verify checksums, remote (fsspec) stores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from models.manifest import MANIFEST_FILE, ManifestError
from service.errors import ModelIntegrityError, ModelNotFoundError, StoreError
from service.store.model_store import ModelStore
from tests.conftest import edited_copy


def test_publish_then_open_by_name_and_alias(model_store: Path) -> None:
    store = ModelStore(model_store)
    by_name = store.open("tiny")
    by_alias = store.open("day2night")
    assert by_name.folder == by_alias.folder == model_store / "tiny"
    assert by_name.manifest == by_alias.manifest
    assert by_name.path(by_name.direction("AtoB").onnx).is_file()
    assert [m.name for m in store.manifests()[0]] == ["tiny"]


def test_unknown_model_lists_what_is_there(model_store: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"no model 'zebra'.*models: tiny"):
        ModelStore(model_store).open("zebra")


@pytest.mark.parametrize("name", ["../tiny", "", "Tiny", "a/b"])
def test_names_that_are_not_model_names_are_not_found(model_store: Path, name: str) -> None:
    with pytest.raises(ModelNotFoundError, match="not a model name"):
        ModelStore(model_store).open(name)


def test_empty_or_missing_store_is_not_an_error_to_list(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "nowhere")
    assert store.manifests() == ([], [])
    with pytest.raises(ModelNotFoundError, match="models: none"):
        store.open("tiny")


def test_missing_direction_names_the_ones_there(model_store: Path) -> None:
    with pytest.raises(ManifestError, match="no direction 'XtoY'; it has: AtoB, BtoA"):
        ModelStore(model_store).open("tiny").direction("XtoY")


def test_tampered_file_is_refused(model_store: Path) -> None:
    onnx_file = model_store / "tiny" / "AtoB.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one bit pattern changed
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=r"AtoB\.onnx does not match its sha256"):
        ModelStore(model_store).open("tiny")


def test_truncated_file_is_refused_with_sizes(model_store: Path) -> None:
    weights = model_store / "tiny" / "BtoA.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 2])
    with pytest.raises(
        ModelIntegrityError, match=rf"is {size // 2} bytes, the manifest says {size}"
    ):
        ModelStore(model_store).open("tiny")


def test_missing_file_is_refused(model_store: Path) -> None:
    (model_store / "tiny" / "AtoB.fp16.onnx").unlink()
    with pytest.raises(ModelIntegrityError, match="missing"):
        ModelStore(model_store).open("tiny")


def test_invalid_manifest_is_reported_not_hidden(model_store: Path) -> None:
    path = model_store / "tiny" / MANIFEST_FILE
    raw = json.loads(path.read_text())
    del raw["architecture"]
    path.write_text(json.dumps(raw))
    store = ModelStore(model_store)
    with pytest.raises(ManifestError, match="architecture"):
        store.open("tiny")
    manifests, problems = store.manifests()
    assert manifests == [] and "architecture" in problems[0]


def test_manifest_cannot_point_outside_its_folder(model_store: Path) -> None:
    path = model_store / "tiny" / MANIFEST_FILE
    raw = json.loads(path.read_text())
    raw["files"]["../evil.onnx"] = raw["files"].pop("AtoB.onnx")
    raw["directions"]["AtoB"]["onnx"] = "../evil.onnx"
    path.write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="plain name"):
        ModelStore(model_store).open("tiny")


def test_publish_refuses_to_replace_without_overwrite(
    model_store: Path, exported_model: Path
) -> None:
    store = ModelStore(model_store)
    with pytest.raises(StoreError, match="already exists"):
        store.publish(exported_model)
    store.publish(exported_model, overwrite=True)
    assert store.open("tiny").manifest.name == "tiny"
    assert sorted(p.name for p in model_store.iterdir()) == ["tiny"]  # no staging leftovers


def test_publish_refuses_a_modified_folder(tmp_path: Path, exported_model: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(exported_model, copy)
    (copy / "AtoB.onnx").write_bytes(b"not the exported graph")
    with pytest.raises(ModelIntegrityError):
        ModelStore(tmp_path / "store").publish(copy)
    assert not (tmp_path / "store" / "tiny").exists()


def test_alias_taken_by_another_model_is_refused(model_store: Path, tmp_path: Path) -> None:
    other = edited_copy(model_store / "tiny", tmp_path / "other", aliases=["day2night"])
    with pytest.raises(StoreError, match="day2night already names model 'tiny'"):
        ModelStore(model_store).publish(other)


def test_remote_store_downloads_into_the_cache_and_verifies(
    tmp_path: Path, exported_model: Path
) -> None:
    url = f"memory://store-{tmp_path.name}"
    remote = ModelStore(url, cache_dir=tmp_path / "cache")
    remote.publish(exported_model)
    model = remote.open("day2night")
    assert model.folder.parent == tmp_path / "cache"
    assert (model.folder / "AtoB.onnx").read_bytes() == (exported_model / "AtoB.onnx").read_bytes()
    # a damaged cache copy of the same size is caught and fetched again, not served
    cached = model.folder / "BtoA.onnx"
    data = bytearray(cached.read_bytes())
    data[100] ^= 0xFF
    cached.write_bytes(bytes(data))
    again = ModelStore(url, cache_dir=tmp_path / "cache").open("tiny")
    assert (again.folder / "BtoA.onnx").read_bytes() == (exported_model / "BtoA.onnx").read_bytes()
    # a damaged file in the store itself is refused
    remote.fs.pipe_file(f"{remote.root}/tiny/BtoA.onnx", bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        ModelStore(url, cache_dir=tmp_path / "cache2").open("tiny")
