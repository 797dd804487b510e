"""The model store: one folder per model with ``manifest.json``, on a local disk or any fsspec URL.

Loading a model verifies the size and sha256 of every file its manifest lists, so a tampered,
truncated or half-copied model is refused with a clear error instead of serving wrong output.
Publishing is all-or-nothing: on a local disk a model folder appears by one rename; on remote
file systems the manifest is uploaded last, so a reader never sees a model without its files.
Models on remote stores are downloaded into a local cache (and verified there) before use.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from models.manifest import (
    MANIFEST_FILE,
    NAME_RULE,
    DirectionFiles,
    ManifestError,
    ModelManifest,
    is_valid_name,
    parse_manifest,
    sha256_file,
)
from service.errors import ModelIntegrityError, ModelNotFoundError, StoreError

__all__ = ["ModelStore", "StoredModel", "find_model"]


@dataclass(frozen=True)
class StoredModel:
    """A verified model on local disk: its manifest and the folder holding its files."""

    manifest: ModelManifest
    folder: Path

    def path(self, file: str) -> Path:
        return self.folder / file

    def direction(self, direction: str) -> DirectionFiles:
        return self.manifest.direction(direction)


def _not_found_message(name: str, manifests: Sequence[ModelManifest], where: str) -> str:
    have = ", ".join(m.name for m in manifests) or "none"
    return f"no model {name!r} in store {where} (models: {have})"


def find_model(manifests: Sequence[ModelManifest], name: str, *, where: str) -> ModelManifest:
    """The manifest named `name`, else the one model claiming it as an alias.

    The one resolution rule for the store and for the API's cached view of it.
    """
    if not is_valid_name(name):  # also keeps user input from walking out of the store
        raise ModelNotFoundError(f"{name!r} is not a model name: {NAME_RULE}")
    for manifest in manifests:
        if manifest.name == name:
            return manifest
    matches = [m for m in manifests if name in m.aliases]
    if len(matches) > 1:
        raise ModelNotFoundError(
            f"alias {name!r} is claimed by several models: " + ", ".join(m.name for m in matches)
        )
    if not matches:
        raise ModelNotFoundError(_not_found_message(name, manifests, where))
    return matches[0]


def _verify(folder: Path, manifest: ModelManifest) -> None:
    for file, record in manifest.files.items():
        path = folder / file
        where = f"model {manifest.name!r}: {file}"
        if not path.is_file():
            raise ModelIntegrityError(f"{where} is missing from {folder}")
        size = path.stat().st_size
        if size != record.bytes:
            raise ModelIntegrityError(
                f"{where} is {size} bytes, the manifest says {record.bytes} "
                "(truncated or replaced); re-export or re-copy the model"
            )
        if sha256_file(path) != record.sha256:
            raise ModelIntegrityError(
                f"{where} does not match its sha256 in the manifest (modified or corrupted); "
                "refusing to load it"
            )


class ModelStore:
    """Models under one root: a local folder, or any URL fsspec understands (s3://, gs://, ...)."""

    def __init__(self, url: str | os.PathLike[str], *, cache_dir: Path | None = None) -> None:
        self.url = os.fspath(url)
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.cache_dir = cache_dir or Path.home() / ".cache" / "unpaired" / "models"

    def __repr__(self) -> str:
        return f"ModelStore({self.url!r})"

    # --- reading ------------------------------------------------------------------------

    def _manifest_path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}/{MANIFEST_FILE}"

    def _read_manifest(self, name: str) -> ModelManifest:
        if not is_valid_name(name):
            raise ModelNotFoundError(f"{name!r} is not a model name: {NAME_RULE}")
        path = self._manifest_path(name)
        try:
            text = self.fs.cat_file(path)
        except FileNotFoundError:
            raise ModelNotFoundError(self._not_found(name)) from None
        manifest = parse_manifest(text, source=path)
        if manifest.name != name:
            raise ManifestError(f"{path} names the model {manifest.name!r}, not {name!r}")
        return manifest

    def _folders(self) -> list[str]:
        if not self.fs.exists(self.root):
            return []
        names = []
        for entry in self.fs.ls(self.root, detail=True):
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            if entry["type"] == "directory" and not name.startswith("."):
                names.append(name)
        return sorted(names)

    def manifests(self) -> tuple[list[ModelManifest], list[str]]:
        """Every readable manifest, and a message for each folder whose manifest is broken."""
        found, problems = [], []
        for name in self._folders():
            try:
                found.append(self._read_manifest(name))
            except (ModelNotFoundError, ManifestError) as exc:
                problems.append(f"{name}: {exc}")
        return found, problems

    def resolve(self, name: str) -> ModelManifest:
        """Find a model by name, then by alias."""
        if not is_valid_name(name):  # also keeps user input from walking out of the store
            raise ModelNotFoundError(f"{name!r} is not a model name: {NAME_RULE}")
        with contextlib.suppress(ModelNotFoundError):
            return self._read_manifest(name)
        manifests, _ = self.manifests()
        return find_model(manifests, name, where=self.url)

    def _not_found(self, name: str) -> str:
        manifests, _ = self.manifests()
        return _not_found_message(name, manifests, self.url)

    def open(self, name: str) -> StoredModel:
        """Resolve `name`, make its files local and verify every checksum."""
        manifest = self.resolve(name)
        if self.is_local:
            folder = Path(self.root) / manifest.name
            _verify(folder, manifest)
            return StoredModel(manifest, folder)
        folder = self._download(manifest)
        try:
            _verify(folder, manifest)
        except ModelIntegrityError:  # a damaged cache copy: fetch once more, then trust the store
            shutil.rmtree(folder)
            folder = self._download(manifest)
            _verify(folder, manifest)
        return StoredModel(manifest, folder)

    def _download(self, manifest: ModelManifest) -> Path:
        digest = self._manifest_digest(manifest)
        folder = self.cache_dir / f"{manifest.name}-{digest[:16]}"
        remote = f"{self.root.rstrip('/')}/{manifest.name}"
        folder.mkdir(parents=True, exist_ok=True)
        for file, record in manifest.files.items():
            local = folder / file
            if local.is_file() and local.stat().st_size == record.bytes:
                continue  # verified below with every other file
            partial = local.with_name(f".{file}.{uuid.uuid4().hex}")
            self.fs.get_file(f"{remote}/{file}", os.fspath(partial))
            partial.replace(local)
        return folder

    @staticmethod
    def _manifest_digest(manifest: ModelManifest) -> str:
        return hashlib.sha256(manifest.to_json().encode()).hexdigest()

    # --- writing ------------------------------------------------------------------------

    def publish(self, folder: Path, *, overwrite: bool = False) -> ModelManifest:
        """Copy an exported model folder into the store under its manifest's name."""
        manifest = parse_manifest((folder / MANIFEST_FILE).read_bytes(), source=str(folder))
        _verify(folder, manifest)
        self._check_aliases(manifest)
        target = f"{self.root.rstrip('/')}/{manifest.name}"
        if self.fs.exists(target) and not overwrite:
            raise StoreError(
                f"model {manifest.name!r} already exists in {self.url}; "
                "choose another --name or pass --overwrite"
            )
        if self.is_local:
            self._publish_local(folder, Path(target))
        else:
            self._publish_remote(folder, manifest, target)
        return manifest

    def _check_aliases(self, manifest: ModelManifest) -> None:
        manifests, _ = self.manifests()
        for other in manifests:
            if other.name == manifest.name:
                continue
            taken = ({other.name, *other.aliases}) & ({manifest.name, *manifest.aliases})
            if taken:
                raise StoreError(
                    f"{', '.join(sorted(taken))} already names model {other.name!r} in {self.url}"
                )

    def _publish_local(self, folder: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.{uuid.uuid4().hex}"
        shutil.copytree(folder, staging)
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old.{uuid.uuid4().hex}"
            target.rename(old)
        staging.rename(target)  # the model appears complete, in one step
        if old is not None:
            shutil.rmtree(old)

    def _publish_remote(self, folder: Path, manifest: ModelManifest, target: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(f"{target}/{MANIFEST_FILE}")  # hide the old version while copying
        for file in manifest.files:
            self.fs.put_file(os.fspath(folder / file), f"{target}/{file}")
        self.fs.put_file(os.fspath(folder / MANIFEST_FILE), f"{target}/{MANIFEST_FILE}")
