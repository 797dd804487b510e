"""Reading a user's zip or tar without trusting it: members in memory, each checked first.

Nothing is extracted here. :func:`read_archive` yields every file entry either as a
:class:`Member` (a safe relative name and its bytes) or as a :class:`Rejected` entry with the
reason, so a job reports exactly which entries it refused: paths that escape (``..``,
absolute, drive letters, backslashes), links, devices, nested archives, duplicates (compared
case-insensitively, as outputs may land on such filesystems), empty files, and bombs (a
member's compression ratio, a member's size, the archive's total). Zip members are checked
from the central directory before a byte is inflated, and read with a bound, since declared
sizes can lie; tar members also go through the standard library's ``data`` filter.
Directories and macOS metadata (``__MACOSX/``, ``.DS_Store``, ``._*``) are skipped silently.
"""

from __future__ import annotations

import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Final, Literal

__all__ = ["ArchiveError", "ArchiveLimits", "Member", "Rejected", "archive_kind", "read_archive"]

_NESTED_SUFFIXES: Final = (
    ".zip", ".tar", ".tgz", ".tbz2", ".txz", ".gz", ".bz2", ".xz", ".7z", ".rar", ".zst",
)  # fmt: skip
_OTHER_ARCHIVE_MAGIC: Final = (b"7z\xbc\xaf\x27\x1c", b"Rar!\x1a\x07", b"\x28\xb5\x2f\xfd")


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = 100_000
    max_member_bytes: int = 50 * 2**20
    max_total_bytes: int = 2 * 2**30
    max_ratio: float = 200.0


@dataclass(frozen=True)
class Member:
    name: str  # safe relative POSIX path
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Rejected:
    name: str  # as stored in the archive (control characters escaped)
    reason: str


class ArchiveError(ValueError):
    """The archive as a whole cannot be read, or exceeds a total limit."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def archive_kind(head: bytes) -> Literal["zip", "tar"] | None:
    """Zip, tar (plain or gzip/bzip2/xz-compressed) or neither, from the first bytes."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head[257:262] == b"ustar" or head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")):
        return "tar"
    return None


def _printable(name: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def _safe_name(raw: str) -> tuple[str | None, str | None]:
    """(normalised name, None), or (None, why it is refused), or (None, None) to skip."""
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        return None, "control character in name"
    if "\\" in raw:
        return None, "backslash in name"
    if raw.startswith("/"):
        return None, "absolute path"
    if len(raw) >= 2 and raw[1] == ":" and raw[0].isalpha():
        return None, "drive letter"
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, "path escapes the archive (..)"
    if not parts or "__MACOSX" in parts or parts[-1] == ".DS_Store" or parts[-1].startswith("._"):
        return None, None
    if any(len(p.encode()) > 255 for p in parts):
        return None, "name too long"
    return "/".join(parts), None


def _is_nested(name: str, data: bytes) -> bool:
    return (
        name.lower().endswith(_NESTED_SUFFIXES)
        or archive_kind(data[:512]) is not None
        or data.startswith(_OTHER_ARCHIVE_MAGIC)
    )


def _mb(size: int) -> str:
    return f"{size / 2**20:.0f} MB"


class _Reader:
    """The checks every entry goes through, whatever the archive format."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self.limits = limits
        self.entries = 0
        self.total = 0
        self.seen: dict[str, str] = {}

    def count(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_members:
            raise ArchiveError(
                f"the archive holds more than {self.limits.max_members} entries", too_large=True
            )

    def name(self, raw: str) -> tuple[str | None, Rejected | None]:
        name, problem = _safe_name(raw)
        if problem is not None:
            return None, Rejected(_printable(raw), problem)
        if name is None:
            return None, None
        first = self.seen.setdefault(name.casefold(), name)
        if first is not name:
            return None, Rejected(_printable(raw), f"duplicate name (same as {first})")
        return name, None

    def too_big(self, raw: str, size: int) -> Rejected | None:
        limit = self.limits.max_member_bytes
        if size > limit:
            return Rejected(_printable(raw), f"too large: {_mb(size)} > {_mb(limit)} limit")
        return None

    def accept(self, raw: str, name: str, data: bytes) -> Member | Rejected:
        if len(data) > self.limits.max_member_bytes:
            return self.too_big(raw, len(data)) or Rejected(raw, "too large")
        if not data:
            return Rejected(_printable(raw), "empty file")
        if _is_nested(name, data):
            return Rejected(_printable(raw), "nested archive")
        self.total += len(data)
        if self.total > self.limits.max_total_bytes:
            raise ArchiveError(
                f"the archive's images add up to more than {_mb(self.limits.max_total_bytes)}",
                too_large=True,
            )
        return Member(name, data)


def read_archive(
    source: BinaryIO, limits: ArchiveLimits | None = None
) -> Iterator[Member | Rejected]:
    """Every file entry of a zip or tar, in archive order, accepted or rejected."""
    limits = limits or ArchiveLimits()
    head = source.read(512)
    source.seek(0)
    kind = archive_kind(head)
    if kind == "zip":
        yield from _read_zip(source, _Reader(limits))
    elif kind == "tar":
        yield from _read_tar(source, _Reader(limits))
    else:
        raise ArchiveError("not a zip or tar archive")


def _read_zip(source: BinaryIO, reader: _Reader) -> Iterator[Member | Rejected]:
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveError(f"unreadable zip: {exc}") from None
    with archive:
        for info in archive.infolist():
            reader.count()
            if info.is_dir():
                continue
            name, rejected = reader.name(info.filename)
            if rejected is not None:
                yield rejected
                continue
            if name is None:
                continue
            mode = info.external_attr >> 16
            raw = info.filename
            if stat.S_ISLNK(mode):
                yield Rejected(_printable(raw), "symbolic link")
            elif mode and stat.S_IFMT(mode) and not stat.S_ISREG(mode):
                yield Rejected(_printable(raw), "device or special file")
            elif info.flag_bits & 0x1:
                yield Rejected(_printable(raw), "encrypted")
            elif (big := reader.too_big(raw, info.file_size)) is not None:
                yield big
            elif (
                info.compress_size and info.file_size / info.compress_size > reader.limits.max_ratio
            ):
                ratio = info.file_size / info.compress_size
                yield Rejected(
                    _printable(raw),
                    f"compression ratio {ratio:.0f}:1 over the "
                    f"{reader.limits.max_ratio:.0f}:1 limit (zip bomb)",
                )
            else:
                try:
                    with archive.open(info) as handle:
                        data = handle.read(reader.limits.max_member_bytes + 1)
                except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError,
                        NotImplementedError) as exc:  # fmt: skip
                    yield Rejected(_printable(raw), f"unreadable: {exc}")
                    continue
                yield reader.accept(raw, name, data)


def _read_tar(source: BinaryIO, reader: _Reader) -> Iterator[Member | Rejected]:
    yielded = False
    try:
        archive = tarfile.open(fileobj=source, mode="r:*")  # noqa: SIM115 (closed below)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"unreadable tar: {exc}") from None
    with archive:
        while True:
            try:
                info = archive.next()
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                if not yielded:
                    raise ArchiveError(f"unreadable tar: {exc}") from None
                yield Rejected("<rest of the archive>", f"unreadable: {exc}")
                return
            if info is None:
                return
            reader.count()
            if info.isdir():
                continue
            yielded = True
            name, rejected = reader.name(info.name)
            if rejected is not None:
                yield rejected
                continue
            if name is None:
                continue
            raw = info.name
            if info.issym():
                yield Rejected(_printable(raw), "symbolic link")
            elif info.islnk():
                yield Rejected(_printable(raw), "hard link")
            elif not info.isreg():
                yield Rejected(_printable(raw), "device or special file")
            elif (big := reader.too_big(raw, info.size)) is not None:
                yield big
            else:
                try:
                    tarfile.data_filter(info, "/nonexistent-destination")
                except tarfile.FilterError as exc:
                    yield Rejected(_printable(raw), str(exc))
                    continue
                handle = archive.extractfile(info)
                if handle is None:
                    yield Rejected(_printable(raw), "device or special file")
                    continue
                try:
                    data = handle.read(reader.limits.max_member_bytes + 1)
                except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                    yield Rejected(_printable(raw), f"unreadable: {exc}")
                    return
                yield reader.accept(raw, name, data)
