"""Reading a user's zip or tar without trusting it: members in memory, each checked first.

Nothing is extracted here. :func:`read_archive` yields every file entry either as a
:class:`Member` (a safe relative name and its bytes) or as a :class:`Rejected` entry with the
reason, so a job reports exactly which entries it refused: paths that escape (``..``,
absolute, drive letters, backslashes), links, devices, nested archives, duplicates (compared
case-insensitively, as outputs may land on such filesystems), empty files, and bombs (a
member's compression ratio, a member's size, the archive's total). Zip members are checked
from the central directory before a byte is inflated, and read with a bound, since declared
sizes can lie; tar members also go through the standard library's ``data`` filter.
Directories and macOS metadata (``__MACOSX/``, ``.DS_Store``, ``._*``) are skipped silently:
Finder adds them to every zip it makes, and they are not the user's images.

Beyond the per-entry rules, three totals bound the work a small upload can cause:

- the accepted members' bytes (``max_total_bytes``) and the number of entries
  (``max_members``);
- the bytes inflated for entries rejected only after reading them (corrupt, nested): at most
  ``max_total_bytes`` as well, so thousands of broken 50 MB members cost no more than a
  full archive;
- a compressed tar's stream may expand to at most ``max_ratio`` times the upload (or one
  maximal member, for tiny uploads): tar has no per-member compression, and skipping an
  oversized member, or tarfile's reading of a long-name or pax header, would otherwise inflate
  it all. The check is on positions tarfile asks for, so it refuses before inflating.

All three raise :class:`ArchiveError` with ``too_large`` set (the API answers 413).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import stat
import string
import struct
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import BinaryIO, Final, Literal, Protocol

from service.errors import ArchiveError

__all__ = ["ArchiveLimits", "Member", "Rejected", "archive_kind", "read_archive"]

_NESTED_SUFFIXES: Final = (
    ".zip", ".tar", ".tgz", ".tbz2", ".txz", ".gz", ".bz2", ".xz", ".7z", ".rar", ".zst",
)  # fmt: skip
#: 7-Zip, RAR (4 and 5) and Zstandard; zip and tar (plain or compressed) by :func:`archive_kind`.
_OTHER_ARCHIVE_MAGIC: Final = (b"7z\xbc\xaf\x27\x1c", b"Rar!\x1a\x07", b"\x28\xb5\x2f\xfd")
_GZIP, _BZIP2, _XZ = b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"
#: Enough of a member to recognise an archive in it (tar's magic is at offset 257).
_HEAD: Final = 1024
_MAX_PART_BYTES: Final = 255  # NAME_MAX of common filesystems
_MAX_NAME_BYTES: Final = 1024  # the whole relative name, well under PATH_MAX with a job's folder
_REST: Final = "<rest of the archive>"
_Decompressed = gzip.GzipFile | bz2.BZ2File | lzma.LZMAFile
_DECOMPRESSORS: Final[dict[bytes, Callable[[BinaryIO], _Decompressed]]] = {
    _GZIP: lambda source: gzip.GzipFile(fileobj=source, mode="rb"),
    _BZIP2: bz2.BZ2File,
    _XZ: lzma.LZMAFile,
}

#: What reading one zip member can raise on hostile bytes (RuntimeError: encrypted).
_ZIP_MEMBER_ERRORS: Final = (
    zipfile.BadZipFile, zlib.error, lzma.LZMAError, OSError, EOFError, ValueError,
    NotImplementedError, RuntimeError, struct.error,
)  # fmt: skip
#: What parsing a tar (or its gzip, bzip2 or xz stream) can raise on hostile bytes.
_TAR_ERRORS: Final = (tarfile.TarError, zlib.error, lzma.LZMAError, OSError, EOFError)


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on what one archive may make the service read and hold."""

    max_members: int = 100_000  # entries, directories included: more -> ArchiveError
    max_member_bytes: int = 50 * 2**20  # one member, uncompressed: more -> Rejected
    max_total_bytes: int = 2 * 2**30  # all accepted members: more -> ArchiveError
    max_ratio: float = 200.0  # a zip member over it: Rejected; a compressed tar: ArchiveError


@dataclass(frozen=True)
class Member:
    """An accepted entry: `name` is a safe relative POSIX path, fit to join to a folder."""

    name: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Rejected:
    """A refused entry, under its name as stored (control characters escaped), and why."""

    name: str
    reason: str


def archive_kind(head: bytes) -> Literal["zip", "tar"] | None:
    """Zip, tar (plain or gzip/bzip2/xz-compressed) or neither, from the first bytes.

    A compressed stream is taken for a tar without inflating it; :func:`read_archive` raises
    :class:`ArchiveError` when it is not one.
    """
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head[257:262] == b"ustar" or head.startswith((_GZIP, _BZIP2, _XZ)):
        return "tar"
    return None


def read_archive(
    source: BinaryIO, limits: ArchiveLimits = ArchiveLimits()
) -> Iterator[Member | Rejected]:
    """Every file entry of a zip or tar, in archive order, accepted or rejected.

    `source` must be seekable and is read from its start. Raises :class:`ArchiveError` (on
    iteration) for an unreadable archive or an exceeded total limit.
    """
    source.seek(0)
    head = source.read(_HEAD)
    source.seek(0)
    kind = archive_kind(head)
    if kind == "zip":
        yield from _read_zip(source, _Entries(limits))
    elif kind == "tar":
        yield from _read_tar(source, head, _Entries(limits))
    else:
        raise ArchiveError("not a zip or tar archive")


def _printable(name: str) -> str:
    """`name` fit for a report or a log line: control, format and surrogate characters escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def _size(n: float) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:.0f} {unit}"
    return f"{n:.0f} bytes"


def _over(what: str, size: int, limit: int) -> str:
    shown, bound = _size(size), _size(limit)
    if shown == bound:  # 50 MB and one byte is still "too large", so say it exactly
        shown, bound = f"{size} bytes", f"{limit} bytes"
    return f"{what}: {shown} > {bound} limit"


def _safe_name(raw: str) -> tuple[str | None, str | None]:
    """(normalised name, None), (None, why it is refused), or (None, None) to skip it."""
    if any(unicodedata.category(c) == "Cc" for c in raw):  # C0, DEL and C1
        return None, "control character in name"
    if any("\ud800" <= c <= "\udfff" for c in raw):  # tar's surrogate-escaped bytes
        return None, "name is not valid UTF-8"
    if "\\" in raw:  # a separator on Windows: could hide "..\" from the checks below
        return None, "backslash in name"
    if raw.startswith("/"):
        return None, "absolute path"
    if len(raw) >= 2 and raw[1] == ":" and raw[0] in string.ascii_letters:
        return None, "drive letter"
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, "path escapes the archive (..)"
    if "__MACOSX" in parts or (parts and (parts[-1] == ".DS_Store" or parts[-1].startswith("._"))):
        return None, None
    if not parts:
        return None, "empty name"
    name = "/".join(parts)
    too_long = len(name.encode()) > _MAX_NAME_BYTES
    if too_long or any(len(p.encode()) > _MAX_PART_BYTES for p in parts):
        return None, "name too long"
    return name, None


def _is_archive_data(head: bytes) -> bool:
    return archive_kind(head) is not None or head.startswith(_OTHER_ARCHIVE_MAGIC)


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Entries:
    """The checks and totals every entry goes through, whatever the archive format."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self.limits = limits
        self.count = 0
        self.accepted = 0  # bytes of accepted members
        self.wasted = 0  # bytes inflated for members rejected after reading
        self.files: dict[str, str] = {}  # folded name -> the first entry's name
        self.folders: dict[str, str] = {}  # folded parent folder -> the entry that made it

    def counted(self) -> None:
        self.count += 1
        if self.count > self.limits.max_members:
            raise ArchiveError(
                f"the archive holds more than {self.limits.max_members} entries", too_large=True
            )

    def claim(self, raw: str) -> str | Rejected | None:
        """The entry's safe name, a rejection, or None to skip it.

        A name is claimed by the first entry that has it, whatever becomes of that entry, so a
        report never lists one name as both failed and done.
        """
        name, problem = _safe_name(raw)
        if problem is not None:
            return Rejected(_printable(raw), problem)
        if name is None:
            return None
        key = unicodedata.normalize("NFC", name.casefold())
        if (first := self.files.get(key)) is not None:
            return Rejected(_printable(raw), f"duplicate name (same as {first})")
        if (inside := self.folders.get(key)) is not None:
            return Rejected(_printable(raw), f"name clash: {name} is also a folder (of {inside})")
        parents = key.split("/")[:-1]
        for depth in range(1, len(parents) + 1):
            if (file := self.files.get("/".join(parents[:depth]))) is not None:
                return Rejected(_printable(raw), f"name clash: {file} is also a file")
        self.files[key] = name
        for depth in range(1, len(parents) + 1):
            self.folders.setdefault("/".join(parents[:depth]), name)
        return name

    def too_big(self, raw: str, size: int) -> Rejected | None:
        if size > self.limits.max_member_bytes:
            return Rejected(_printable(raw), _over("too large", size, self.limits.max_member_bytes))
        return None

    def waste(self, size: int) -> None:
        self.wasted += size
        if self.wasted > self.limits.max_total_bytes:
            raise ArchiveError(
                f"the archive's unreadable or refused entries add up to more than "
                f"{_size(self.limits.max_total_bytes)}",
                too_large=True,
            )

    def take(self, raw: str, name: str, handle: _Readable) -> Member | Rejected:
        """Read one member with a bound; archives are recognised from its head alone."""
        if name.lower().endswith(_NESTED_SUFFIXES):
            return Rejected(_printable(raw), "nested archive")
        limit = self.limits.max_member_bytes
        head = handle.read(_HEAD)
        if not head:
            return Rejected(_printable(raw), "empty file")
        if _is_archive_data(head):
            self.waste(len(head))
            return Rejected(_printable(raw), "nested archive")
        data = head + handle.read(limit + 1 - len(head))
        if len(data) > limit:  # the declared size lied
            self.waste(len(data))
            return Rejected(_printable(raw), f"too large: over the {_size(limit)} limit")
        self.accepted += len(data)
        if self.accepted > self.limits.max_total_bytes:
            raise ArchiveError(
                f"the archive's images add up to more than {_size(self.limits.max_total_bytes)}",
                too_large=True,
            )
        return Member(name, data)


def _read_zip(source: BinaryIO, entries: _Entries) -> Iterator[Member | Rejected]:
    limits = entries.limits
    try:
        archive = zipfile.ZipFile(source)
    except _ZIP_MEMBER_ERRORS as exc:  # UnicodeDecodeError (a name) is a ValueError
        raise ArchiveError(f"unreadable zip: {exc}") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_members:  # known from the central directory: refuse first
            raise ArchiveError(
                f"the archive holds more than {limits.max_members} entries", too_large=True
            )
        for info in infos:
            entries.counted()
            mode = info.external_attr >> 16  # st_mode, when a Unix tool made the zip
            if info.is_dir() or stat.S_ISDIR(mode):
                continue
            claim = entries.claim(info.filename)
            if not isinstance(claim, str):
                if claim is not None:
                    yield claim
                continue
            shown = _printable(info.filename)
            ratio = info.file_size / max(info.compress_size, 1)
            if stat.S_ISLNK(mode):
                yield Rejected(shown, "symbolic link")
            elif stat.S_IFMT(mode) and not stat.S_ISREG(mode):
                yield Rejected(shown, "device or special file")
            elif info.flag_bits & 0x1:
                yield Rejected(shown, "encrypted")
            elif (big := entries.too_big(info.filename, info.file_size)) is not None:
                yield big
            elif ratio > limits.max_ratio:
                yield Rejected(
                    shown,
                    f"compression ratio {ratio:.0f}:1 over the {limits.max_ratio:.0f}:1 limit "
                    "(zip bomb)",
                )
            else:
                # zipfile stops at the declared size and checks the CRC there, so what one
                # member inflates is bounded by the checks above, even when reading fails
                try:
                    with archive.open(info) as handle:
                        entry = entries.take(info.filename, claim, handle)
                except ArchiveError:
                    raise
                except _ZIP_MEMBER_ERRORS as exc:
                    entries.waste(info.file_size)
                    entry = Rejected(shown, f"unreadable: {exc}")
                yield entry


class _Capped:
    """A tar's decompressed stream that refuses positions past `cap` before inflating them."""

    def __init__(self, stream: _Decompressed, cap: int, upload: int, ratio: float) -> None:
        self._stream, self._cap, self._upload, self._ratio = stream, cap, upload, ratio

    def _check(self, end: int) -> None:
        if end > self._cap:
            raise ArchiveError(
                f"the archive would expand to more than {_size(self._cap)} from "
                f"{_size(self._upload)} (over the {self._ratio:.0f}:1 limit: a tar bomb)",
                too_large=True,
            )

    def read(self, size: int = -1, /) -> bytes:
        position = self._stream.tell()
        if size >= 0:
            self._check(position + size)
            return self._stream.read(size)
        data = self._stream.read(self._cap + 1 - position)
        self._check(position + len(data))
        return data

    def seek(self, pos: int, whence: int = io.SEEK_SET, /) -> int:
        self._check(pos if whence == io.SEEK_SET else self._stream.tell() + pos)
        return self._stream.seek(pos, whence)

    def tell(self) -> int:
        return self._stream.tell()

    def write(self, b: bytes, /) -> int:
        raise io.UnsupportedOperation("read-only")

    def close(self) -> None:
        """Nothing: the decompressed stream is closed by whoever opened it."""


def _tar_stream(
    source: BinaryIO, head: bytes, limits: ArchiveLimits, stack: ExitStack
) -> BinaryIO | _Capped:
    """The tar's own bytes: `source` itself, or its decompressed stream with a cap."""
    opener = next((o for magic, o in _DECOMPRESSORS.items() if head.startswith(magic)), None)
    if opener is None:
        return source  # plain: nothing reads past the upload's own size
    source.seek(0, io.SEEK_END)
    upload = source.tell()
    source.seek(0)
    stream = opener(source)
    stack.enter_context(stream)
    cap = max(int(limits.max_ratio * upload), limits.max_member_bytes + 2**20)
    return _Capped(stream, cap, upload, limits.max_ratio)


def _read_tar(source: BinaryIO, head: bytes, entries: _Entries) -> Iterator[Member | Rejected]:
    """Stream the tar: an error before any entry refuses it, a later one ends it with a report.

    Entries already yielded may have been acted on, so a tar that breaks half-way keeps them
    and ends with one rejected entry saying the rest was lost (the member being read, or
    ``<rest of the archive>`` when a header could not be).
    """
    with ExitStack() as stack:
        try:
            stream = _tar_stream(source, head, entries.limits, stack)
            # tarfile's default is the locale's encoding; UTF-8 keeps names the same everywhere
            archive = stack.enter_context(tarfile.open(fileobj=stream, mode="r:", encoding="utf-8"))
        except _TAR_ERRORS as exc:
            raise ArchiveError(f"unreadable tar: {exc}") from None
        yielded = False
        while True:
            try:
                info = archive.next()
            except _TAR_ERRORS as exc:
                if not yielded:
                    raise ArchiveError(f"unreadable tar: {exc}") from None
                yield Rejected(_REST, f"unreadable: {exc}")
                return
            if info is None:
                return
            entries.counted()
            if info.isdir():
                continue
            claim = entries.claim(info.name)
            if not isinstance(claim, str):
                if claim is not None:
                    yielded = True
                    yield claim
                continue
            yielded = True
            rejected = _tar_problem(info, entries)
            if rejected is not None:
                yield rejected
                continue
            handle = archive.extractfile(info)
            if handle is None:  # isreg() said otherwise; never trust one check alone
                yield Rejected(_printable(info.name), "device or special file")
                continue
            try:
                entry = entries.take(info.name, claim, handle)
            except _TAR_ERRORS as exc:
                entries.waste(info.size)
                yield Rejected(
                    _printable(info.name), f"unreadable: {exc} (the rest of the archive is lost)"
                )
                return
            yield entry


def _tar_problem(info: tarfile.TarInfo, entries: _Entries) -> Rejected | None:
    """Why a tar entry with a safe name is refused before reading it, or None."""
    shown = _printable(info.name)
    if info.issym():
        return Rejected(shown, "symbolic link")
    if info.islnk():
        return Rejected(shown, "hard link")
    if not info.isreg():
        return Rejected(shown, "device or special file")
    if (big := entries.too_big(info.name, info.size)) is not None:
        return big
    try:  # the standard library's own judgement too, behind our clearer messages
        tarfile.data_filter(info, "/nonexistent-destination")
    except tarfile.FilterError as exc:
        return Rejected(shown, str(exc))
    return None
