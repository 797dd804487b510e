"""The files every front door writes: their names and how they are written, one rule each.

- :func:`safe_stem` / :func:`safe_file_name`: a client's file name (from any operating system)
  reduced to a harmless, flat name: no folders, no quotes, no control or odd bytes;
- :func:`output_name`: an output keeps its input's relative path, with the output format's
  suffix (``cats/a.png`` -> ``cats/a.webp``), in ``unpaired translate``, bulk jobs and zips;
- :class:`OutputNames`: one claim per output name, compared case-insensitively (and after
  Unicode normalisation), so two inputs such as ``a.PNG`` and ``A.png`` never write the same
  file on a case-insensitive filesystem (macOS, Windows, many object-store mounts);
- :func:`write_atomic`: a reader never sees half a file, and a writer killed half-way leaves
  only a partial file the next write of the same output replaces (no orphans, no duplicates).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath, PureWindowsPath
from typing import BinaryIO, Final

__all__ = [
    "OutputNames",
    "atomic_file",
    "atomic_path",
    "name_key",
    "output_name",
    "partial_name",
    "safe_file_name",
    "safe_stem",
    "write_atomic",
]

_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_STEM: Final = 100
_MAX_SUFFIX: Final = 10


def _base_name(name: str) -> str:
    """The last component of a POSIX or Windows path (``a/b.png``, ``C:\\a\\b.png`` -> b.png)."""
    return PureWindowsPath(PurePosixPath(name).name).name


def safe_stem(name: str, fallback: str) -> str:
    """A client's file name as a harmless stem (its suffix dropped), or `fallback`."""
    base = _base_name(name)
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return _UNSAFE.sub("_", stem).strip("._")[:_MAX_STEM] or fallback


def safe_file_name(name: str | None, fallback: str) -> str:
    """A client's file name as a harmless flat name that keeps its (lower-cased) suffix."""
    base = _base_name(name or "")
    _, suffix = posixpath.splitext(base)
    suffix = _UNSAFE.sub("", suffix)[:_MAX_SUFFIX].lower()
    return safe_stem(base, fallback) + suffix


def output_name(name: str, suffix: str) -> str:
    """`cats/a.png` -> `cats/a<suffix>`: the input's relative path, the output's suffix."""
    stem, _ = posixpath.splitext(name)
    return stem + suffix


def name_key(name: str) -> str:
    """What two names share when a case-insensitive filesystem would see one file."""
    return unicodedata.normalize("NFC", name).casefold()


class OutputNames:
    """Output names claimed so far, compared with :func:`name_key`."""

    def __init__(self) -> None:
        self._claims: dict[str, str] = {}  # key -> who claimed it

    def claim(self, name: str, by: str) -> str | None:
        """Claim `name` for `by`; the earlier claimant when it is taken (nothing claimed)."""
        key = name_key(name)
        if key in self._claims:
            return self._claims[key]
        self._claims[key] = by
        return None

    def unique(self, stem: str, suffix: str, by: str) -> str:
        """``stem + suffix``, or ``stem-2 + suffix``, ``stem-3``...: the first one free."""
        name, n = stem + suffix, 1
        while self.claim(name, by) is not None:
            n += 1
            name = f"{stem}-{n}{suffix}"
        return name


def partial_name(target: str | os.PathLike[str]) -> str:
    """Where `target` is written before it is renamed into place: one name per output, hidden
    (``.name.partial``), in the same folder (so the rename is atomic)."""
    folder, name = os.path.split(os.fspath(target))
    return os.path.join(folder, f".{name}.partial")


@contextmanager
def atomic_file(target: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file that appears at `target` complete, or not at all, creating its folder.

    It is written under :func:`partial_name` and renamed into place when the block ends
    without an error (on an error the partial file is removed): :func:`atomic_path`. The
    partial file has one name per output: a writer killed half-way leaves a file the next write
    replaces, not an orphan. A writer that finds another's partial takes it over; the other's
    rename then fails with FileNotFoundError (bulk chunks retry: their outputs agree).
    """
    with atomic_path(target) as partial:
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            os.unlink(partial)
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as handle:
            yield handle


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[str]:
    """The rule of :func:`atomic_file` for a writer that needs a file name rather than a
    handle (a muxer that reopens its file): the block writes the partial path given (a
    killed writer's leftover there is overwritten), renamed to `target` when the block ends
    without an error, removed when it raises."""
    target = os.fspath(target)
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    partial = partial_name(target)
    try:
        yield partial
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
    os.replace(partial, target)


def write_atomic(target: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `target` on a local disk atomically (see :func:`atomic_file`)."""
    with atomic_file(target) as handle:
        handle.write(data)
