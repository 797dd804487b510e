"""Where a job's images live: a local folder or any fsspec URL, read and written safely.

Uploaded inputs and outputs go under ``<jobs_dir>/<job id>/``; a job may instead read from a
`source` and write to a `destination` inside one of the configured roots
(``UNPAIRED_JOBS_ROOTS``). Outputs are written atomically (a local temp file renamed into
place; object stores put whole objects), so a chunk that runs twice writes the same files
once, and a reader never sees half an image.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from models.imaging import is_listed_image
from service.errors import LocationError
from service.files import write_atomic
from service.inference.videos.formats import VIDEO_SUFFIXES
from service.settings import Settings

__all__ = ["JobFiles", "Storage"]


class Storage:
    """One filesystem root (a folder or an fsspec URL) with the operations jobs need."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.root = str(Path(root).resolve()) if self.local else root.rstrip("/")

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if parts else self.root

    def read(self, *parts: str) -> bytes:
        data: bytes = self.fs.cat_file(self.path(*parts))
        return data

    def write_atomic(self, data: bytes, *parts: str) -> str:
        target = self.path(*parts)
        if not self.local:
            self.fs.pipe_file(target, data)  # object stores replace whole objects
            return target
        write_atomic(target, data)
        return target

    def images(self) -> list[str]:
        """Image and video files under the root, as sorted relative POSIX names."""
        found = self.fs.find(self.root)
        names = [posixpath.relpath(str(p), self.root) for p in found]
        # models.imaging's one rule
        return sorted(n for n in names if is_listed_image(n, also=VIDEO_SUFFIXES))

    def local_path(self, *parts: str) -> str | None:
        """The file's path on this machine, or None in an object store (then copy it)."""
        return self.path(*parts) if self.local else None

    def put_file(self, local: str, *parts: str) -> str:
        """Store the finished local file `local` (a clip written by its muxer) under `parts`,
        atomically; `local` is gone afterwards."""
        target = self.path(*parts)
        if self.local:
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            os.replace(local, target)
        else:
            self.fs.put_file(local, target)
            os.unlink(local)
        return target

    def remove(self, *parts: str) -> None:
        target = self.path(*parts)
        if self.fs.exists(target):
            self.fs.rm(target, recursive=True)


class JobFiles:
    """The jobs folder (``UNPAIRED_JOBS_DIR``) and the roots jobs may read and write."""

    def __init__(self, jobs_dir: str, roots: Iterable[str] = ()) -> None:
        self.jobs = Storage(jobs_dir)
        self.roots = [Storage(root) for root in roots]

    @classmethod
    def from_settings(cls, settings: Settings) -> JobFiles:
        return cls(settings.jobs_dir, settings.jobs_roots)

    def inputs_url(self, job_id: str) -> str:
        return self._url(self.jobs, job_id, "inputs")

    def outputs_url(self, job_id: str) -> str:
        return self._url(self.jobs, job_id, "outputs")

    @staticmethod
    def _url(storage: Storage, *parts: str) -> str:
        path = storage.path(*parts)
        if storage.local:
            return path
        protocol = storage.fs.protocol
        scheme = protocol[0] if isinstance(protocol, tuple | list) else protocol
        return f"{scheme}://{path}"

    def remove_job(self, job_id: str) -> None:
        self.jobs.remove(job_id)

    def allowed(self, location: str, *, must_exist: bool) -> str:
        """`location` as a URL inside one of the roots; :class:`LocationError` otherwise."""
        if not self.roots:
            raise LocationError(
                "this server takes uploads only: no UNPAIRED_JOBS_ROOTS are configured"
            )
        if "\x00" in location or any(
            part == ".." for part in location.replace("\\", "/").split("/")
        ):
            raise LocationError(f"{location!r}: '..' is not allowed in a location")
        candidate = Storage(location)
        for root in self.roots:
            if type(candidate.fs) is not type(root.fs):
                continue
            inside = (
                Path(candidate.root).is_relative_to(root.root)  # symlinks resolved above
                if candidate.local
                else (candidate.root + "/").startswith(root.root + "/")
            )
            if inside:
                if must_exist and not candidate.fs.isdir(candidate.root):
                    raise LocationError(f"{location!r} is not a folder")
                return self._url(candidate)
        raise LocationError(
            f"{location!r} is outside the allowed roots ({', '.join(r.url for r in self.roots)})"
        )
