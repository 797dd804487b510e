"""Reading hostile archives: every unsafe entry refused with its reason, good images intact.

Archives are built here with zipfile and tarfile (patched byte by byte where those refuse to
write the hostile thing) and read from memory; nothing is ever extracted.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import random
import stat
import struct
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from service.errors import ArchiveError
from service.jobs.archives import ArchiveLimits, Member, Rejected, archive_kind, read_archive

# --- builders ---------------------------------------------------------------------------------


def png(color: tuple[int, int, int], size: int = 8) -> bytes:
    sink = io.BytesIO()
    Image.new("RGB", (size, size), color).save(sink, format="PNG")
    return sink.getvalue()


RED, GREEN, BLUE = png((255, 0, 0)), png((0, 255, 0)), png((0, 0, 255), size=12)


def noise(n: int, seed: int = 0) -> bytes:
    """Incompressible bytes, so compressed offsets follow uncompressed ones."""
    return random.Random(seed).randbytes(n)


ZipEntry = tuple[str | zipfile.ZipInfo, bytes]


def zinfo(name: str, mode: int | None = None) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    if mode is not None:
        info.create_system = 3  # Unix: the high 16 bits of external_attr are st_mode
        info.external_attr = mode << 16
    return info


def zip_bytes(*entries: ZipEntry, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    sink = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicates we mean to write
        with zipfile.ZipFile(sink, "w", compression) as archive:
            for name, data in entries:
                archive.writestr(name, data)
    return sink.getvalue()


def zip_patch(data: bytes, name: str, *, flags: int = 0, declared: int | None = None) -> bytes:
    """Set flag bits (local and central headers) or the central directory's size of `name`."""
    out = bytearray(data)
    end = out.rindex(b"PK\x05\x06")
    count, _, start = struct.unpack_from("<HII", out, end + 10)
    at = start
    for _ in range(count):
        assert out[at : at + 4] == b"PK\x01\x02"
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", out, at + 28)
        local = struct.unpack_from("<I", out, at + 42)[0]
        if out[at + 46 : at + 46 + name_len].decode() == name:
            struct.pack_into("<H", out, at + 8, struct.unpack_from("<H", out, at + 8)[0] | flags)
            struct.pack_into(
                "<H", out, local + 6, struct.unpack_from("<H", out, local + 6)[0] | flags
            )
            if declared is not None:
                struct.pack_into("<I", out, at + 24, declared)
            return bytes(out)
        at += 46 + name_len + extra_len + comment_len
    raise AssertionError(f"{name} not in the zip")


TarEntry = tuple[tarfile.TarInfo, bytes | None]


def reg(name: str, data: bytes) -> TarEntry:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> TarEntry:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def tar_bytes(*entries: TarEntry, mode: str = "w", **kwargs: object) -> bytes:
    sink = io.BytesIO()
    with tarfile.open(fileobj=sink, mode=mode, **kwargs) as archive:  # type: ignore[call-overload]
        for info, data in entries:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return sink.getvalue()


def read(data: bytes, limits: ArchiveLimits | None = None) -> list[Member | Rejected]:
    return list(read_archive(io.BytesIO(data), limits or ArchiveLimits()))


def accepted(entries: list[Member | Rejected]) -> dict[str, bytes]:
    return {e.name: e.data for e in entries if isinstance(e, Member)}


def refused(entries: list[Member | Rejected]) -> dict[str, str]:
    return {e.name: e.reason for e in entries if isinstance(e, Rejected)}


def only_rejection(data: bytes, limits: ArchiveLimits | None = None) -> Rejected:
    entries = read(data, limits)
    assert len(entries) == 1 and isinstance(entries[0], Rejected), entries
    return entries[0]


# --- archive_kind -----------------------------------------------------------------------------

GOOD_TAR = tar_bytes(reg("cats/a.png", RED), reg("b.png", GREEN))


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (zip_bytes(("a.png", RED)), "zip"),
        (zip_bytes(), "zip"),  # an empty zip is only its end record, PK\x05\x06
        (GOOD_TAR, "tar"),
        (tar_bytes(reg("a.png", RED), format=tarfile.GNU_FORMAT), "tar"),
        (gzip.compress(GOOD_TAR), "tar"),
        (bz2.compress(GOOD_TAR), "tar"),
        (lzma.compress(GOOD_TAR), "tar"),
        (RED, None),
        (b"", None),
        (b"hello, world\n" * 100, None),
        (b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(100), None),
    ],
)
def test_archive_kind(head: bytes, kind: str | None) -> None:
    assert archive_kind(head[:512]) == kind


def test_not_an_archive_is_refused_as_a_whole() -> None:
    for data in (RED, b"", b"just text"):
        assert archive_kind(data) is None
        with pytest.raises(ArchiveError, match="not a zip or tar") as caught:
            read(data)
        assert caught.value.too_large is False


def test_a_compressed_stream_that_is_no_tar_is_refused() -> None:
    data = gzip.compress(RED * 10)
    assert archive_kind(data) == "tar"
    with pytest.raises(ArchiveError, match="unreadable tar") as caught:
        read(data)
    assert caught.value.too_large is False


# --- good archives ----------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_good_zip_comes_back_byte_identical(compression: int) -> None:
    data = zip_bytes(("cats/", b""), ("cats/a.png", RED), ("b.png", GREEN), compression=compression)
    entries = read(data)
    assert entries == [Member("cats/a.png", RED), Member("b.png", GREEN)]


@pytest.mark.parametrize(
    "compress",
    [lambda d: d, gzip.compress, bz2.compress, lzma.compress],
    ids=["tar", "tar.gz", "tar.bz2", "tar.xz"],
)
def test_good_tar_in_every_compression(compress: object) -> None:
    data = compress(GOOD_TAR)  # type: ignore[operator]
    assert archive_kind(data[:512]) == "tar"
    assert read(data) == [Member("cats/a.png", RED), Member("b.png", GREEN)]


def test_empty_zip_has_no_entries() -> None:
    assert read(zip_bytes()) == []


def test_names_are_normalised() -> None:
    entries = read(zip_bytes(("./a.png", RED), ("x//y/./b.png", GREEN)))
    assert entries == [Member("a.png", RED), Member("x/y/b.png", GREEN)]


def test_member_repr_leaves_out_the_bytes() -> None:
    assert "data" not in repr(Member("a.png", RED * 100))


# --- hostile names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../x.png", "path escapes the archive (..)"),
        ("a/../../x.png", "path escapes the archive (..)"),
        ("a/../x.png", "path escapes the archive (..)"),  # stays inside, but refused all the same
        ("/abs.png", "absolute path"),
        ("/etc/cron.d/x", "absolute path"),
        ("C:x.png", "drive letter"),
        ("C:/Windows/x.png", "drive letter"),
        ("evil\\..\\..\\x.png", "backslash in name"),
        ("dir\\x.png", "backslash in name"),
        ("x" * 256 + ".png", "name too long"),
        ("/".join(["d" * 200] * 6) + "/x.png", "name too long"),
    ],
)
def test_hostile_names_in_zip_and_tar(name: str, reason: str) -> None:
    assert only_rejection(zip_bytes((name, RED))) == Rejected(name, reason)
    assert only_rejection(tar_bytes(reg(name, RED))) == Rejected(name, reason)


def test_control_character_in_name_is_refused_and_shown_escaped() -> None:
    for data in (zip_bytes(("bell\x07.png", RED)), tar_bytes(reg("bell\x07.png", RED))):
        assert only_rejection(data) == Rejected("bell\\x07.png", "control character in name")
    assert only_rejection(zip_bytes(("a\x85b.png", RED))).reason == "control character in name"
    assert only_rejection(tar_bytes(reg("new\nline.png", RED))).name == "new\\nline.png"


def test_tar_name_that_is_not_utf8_is_refused() -> None:
    data = tar_bytes(reg("café.png", RED), format=tarfile.GNU_FORMAT, encoding="latin-1")
    assert only_rejection(data) == Rejected("caf\\udce9.png", "name is not valid UTF-8")


def test_macos_metadata_is_skipped_silently() -> None:
    data = zip_bytes(
        ("__MACOSX/", b""),
        ("__MACOSX/cats/._a.png", b"\x00\x05\x16\x07 AppleDouble"),
        ("cats/.DS_Store", b"Bud1 junk"),
        ("cats/._a.png", b"\x00\x05\x16\x07"),
        ("cats/a.png", RED),
    )
    assert read(data) == [Member("cats/a.png", RED)]
    tar = tar_bytes(reg("._a.png", b"junk"), reg(".DS_Store", b"junk"), reg("a.png", RED))
    assert read(tar) == [Member("a.png", RED)]


def test_directories_are_skipped_silently() -> None:
    dir_by_mode = zinfo("folder", stat.S_IFDIR | 0o755)  # no trailing slash, a Unix mode
    assert read(zip_bytes(("cats/", b""), (dir_by_mode, b""), ("a.png", RED))) == [
        Member("a.png", RED)
    ]
    assert read(tar_bytes(special("cats", tarfile.DIRTYPE), reg("cats/a.png", RED))) == [
        Member("cats/a.png", RED)
    ]


# --- duplicates -------------------------------------------------------------------------------


def test_duplicate_names_are_refused_after_the_first() -> None:
    for data in (
        zip_bytes(("a.png", RED), ("a.png", GREEN)),
        tar_bytes(reg("a.png", RED), reg("a.png", GREEN)),
    ):
        assert read(data) == [
            Member("a.png", RED),
            Rejected("a.png", "duplicate name (same as a.png)"),
        ]


def test_duplicates_compare_case_insensitively_and_normalised() -> None:
    data = zip_bytes(("Cats/A.png", RED), ("cats/a.PNG", GREEN), ("./Cats//A.png", BLUE))
    assert read(data) == [
        Member("Cats/A.png", RED),
        Rejected("cats/a.PNG", "duplicate name (same as Cats/A.png)"),
        Rejected("./Cats//A.png", "duplicate name (same as Cats/A.png)"),
    ]


def test_a_name_taken_by_a_rejected_entry_stays_taken() -> None:
    data = zip_bytes(("a.png", b""), ("A.png", RED))
    assert read(data) == [
        Rejected("a.png", "empty file"),
        Rejected("A.png", "duplicate name (same as a.png)"),
    ]


def test_a_name_cannot_be_both_file_and_folder() -> None:
    assert read(zip_bytes(("x", RED), ("x/y.png", GREEN))) == [
        Member("x", RED),
        Rejected("x/y.png", "name clash: x is also a file"),
    ]
    assert read(tar_bytes(reg("x/y.png", GREEN), reg("X", RED))) == [
        Member("x/y.png", GREEN),
        Rejected("X", "name clash: X is also a folder (of x/y.png)"),
    ]


# --- links, devices, nested archives, empty files ---------------------------------------------


def test_symlink_in_zip() -> None:
    link = zinfo("link.png", stat.S_IFLNK | 0o777)
    assert only_rejection(zip_bytes((link, b"/etc/passwd"))) == Rejected(
        "link.png", "symbolic link"
    )


def test_special_file_in_zip() -> None:
    fifo = zinfo("pipe.png", stat.S_IFIFO | 0o644)
    assert only_rejection(zip_bytes((fifo, RED))) == Rejected("pipe.png", "device or special file")


def test_regular_zip_mode_is_accepted() -> None:
    assert read(zip_bytes((zinfo("a.png", stat.S_IFREG | 0o644), RED))) == [Member("a.png", RED)]


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (special("link.png", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
        (special("rel.png", tarfile.SYMTYPE, "../../x.png"), "symbolic link"),
        (special("hard.png", tarfile.LNKTYPE, "a.png"), "hard link"),
        (special("tty.png", tarfile.CHRTYPE), "device or special file"),
        (special("disk.png", tarfile.BLKTYPE), "device or special file"),
        (special("pipe.png", tarfile.FIFOTYPE), "device or special file"),
    ],
)
def test_links_and_devices_in_tar(entry: TarEntry, reason: str) -> None:
    entries = read(tar_bytes(reg("a.png", RED), entry))
    assert entries == [Member("a.png", RED), Rejected(entry[0].name, reason)]


NESTED_ZIP = zip_bytes(("inner.png", RED))
NESTED_TGZ = gzip.compress(GOOD_TAR)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("inner.zip", NESTED_ZIP),
        ("photos.tar.gz", NESTED_TGZ),
        ("photos.tgz", NESTED_TGZ),
        ("renamed.png", NESTED_ZIP),  # by content
        ("renamed2.png", NESTED_TGZ),
        ("plain.jpg", GOOD_TAR),
        ("seven.png", b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(64)),
        ("rar.png", b"Rar!\x1a\x07\x01\x00" + bytes(64)),
        ("empty.zip", zip_bytes()),
        ("text.rar", b"not really a rar"),  # by name
    ],
)
def test_nested_archives(name: str, data: bytes) -> None:
    assert only_rejection(zip_bytes((name, data))) == Rejected(name, "nested archive")
    assert only_rejection(tar_bytes(reg(name, data))) == Rejected(name, "nested archive")


def test_empty_file() -> None:
    assert only_rejection(zip_bytes(("empty.png", b""))) == Rejected("empty.png", "empty file")
    assert only_rejection(tar_bytes(reg("empty.png", b""))) == Rejected("empty.png", "empty file")


def test_data_filter_is_consulted_for_tar_members(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
        raise tarfile.AbsolutePathError(member)

    monkeypatch.setattr(tarfile, "data_filter", refuse)
    rejected = only_rejection(tar_bytes(reg("a.png", RED)))
    assert rejected == Rejected("a.png", "member 'a.png' has an absolute path")


# --- sizes, bombs, lies, encryption -----------------------------------------------------------


def test_zip_bomb_by_ratio() -> None:
    data = zip_bytes(("zeros.png", bytes(20 * 2**20)), ("a.png", RED))
    assert len(data) < 100_000
    entries = read(data)
    assert entries[1] == Member("a.png", RED)
    bomb = entries[0]
    assert isinstance(bomb, Rejected) and bomb.name == "zeros.png"
    assert bomb.reason.startswith("compression ratio ")
    assert bomb.reason.endswith(":1 over the 200:1 limit (zip bomb)")
    assert int(bomb.reason.split()[2].split(":")[0]) > 200


def test_member_over_the_size_limit_is_refused_before_reading() -> None:
    limits = ArchiveLimits(max_member_bytes=1000)
    data = noise(5000)
    for archive in (zip_bytes(("big.png", data)), tar_bytes(reg("big.png", data))):
        assert only_rejection(archive, limits) == Rejected(
            "big.png", "too large: 5 KB > 1000 bytes limit"
        )
    limit = 50 * 2**20
    limits = ArchiveLimits(max_member_bytes=limit)
    sized = zip_patch(zip_bytes(("huge.png", RED)), "huge.png", declared=60 * 2**20)
    assert only_rejection(sized, limits) == Rejected("huge.png", "too large: 60 MB > 50 MB limit")
    one_over = zip_patch(zip_bytes(("huge.png", RED)), "huge.png", declared=limit + 1)
    assert only_rejection(one_over, limits).reason == (
        f"too large: {limit + 1} bytes > {limit} bytes limit"
    )


def test_zip_member_whose_declared_size_lies_is_read_with_a_bound() -> None:
    real = noise(100_000)
    data = zip_patch(zip_bytes(("liar.png", real), ("a.png", RED)), "liar.png", declared=1000)
    entries = read(data, ArchiveLimits(max_member_bytes=10_000))
    assert entries[1] == Member("a.png", RED)  # the next member is still read
    liar = entries[0]
    assert isinstance(liar, Rejected) and liar.name == "liar.png"
    assert liar.reason.startswith("unreadable: ") and "CRC" in liar.reason


def test_corrupt_zip_member_is_unreadable_and_the_rest_still_read() -> None:
    data = bytearray(zip_bytes(("bad.png", noise(20_000)), ("a.png", RED)))
    start = data.index(b"bad.png") + len("bad.png")
    data[start + 100 : start + 200] = bytes(100)  # inside its deflated bytes
    entries = read(bytes(data))
    assert entries[1] == Member("a.png", RED)
    assert isinstance(entries[0], Rejected) and entries[0].name == "bad.png"
    assert entries[0].reason.startswith("unreadable: ")


def test_encrypted_zip_member() -> None:
    data = zip_patch(zip_bytes(("secret.png", RED), ("a.png", GREEN)), "secret.png", flags=0x1)
    assert read(data) == [Rejected("secret.png", "encrypted"), Member("a.png", GREEN)]


def test_many_unreadable_members_cannot_cost_more_than_the_total() -> None:
    entries = [(f"bad{i}.png", noise(2000, seed=i)) for i in range(10)]
    data = zip_bytes(*entries)
    for name, _ in entries:
        data = zip_patch(data, name, declared=1000)  # every one fails its CRC check
    assert all(isinstance(e, Rejected) for e in read(data))
    with pytest.raises(ArchiveError, match="unreadable or refused") as caught:
        read(data, ArchiveLimits(max_total_bytes=5000))
    assert caught.value.too_large is True


def test_compressed_tar_bomb_is_refused_before_inflating() -> None:
    data = gzip.compress(tar_bytes(reg("zeros.png", bytes(20 * 2**20)), reg("a.png", RED)), 9)
    assert len(data) < 100_000
    limits = ArchiveLimits(max_member_bytes=2**20)
    with pytest.raises(ArchiveError, match="tar bomb") as caught:
        read(data, limits)
    assert caught.value.too_large is True


def test_tar_long_name_header_cannot_make_tarfile_inflate_gigabytes() -> None:
    header = tarfile.TarInfo("././@LongLink")
    header.type = tarfile.GNUTYPE_LONGNAME
    header.size = 4 * 2**30  # tarfile reads a long name whole, in one read()
    data = gzip.compress(header.tobuf(tarfile.GNU_FORMAT) + bytes(4096))
    with pytest.raises(ArchiveError, match="tar bomb") as caught:
        read(data, ArchiveLimits(max_member_bytes=2**20))
    assert caught.value.too_large is True


# --- totals -----------------------------------------------------------------------------------


def test_total_size_limit() -> None:
    limits = ArchiveLimits(max_total_bytes=len(RED) + len(GREEN) - 1)
    for data in (
        zip_bytes(("a.png", RED), ("b.png", GREEN)),
        tar_bytes(reg("a.png", RED), reg("b.png", GREEN)),
        gzip.compress(tar_bytes(reg("a.png", RED), reg("b.png", GREEN))),
    ):
        with pytest.raises(ArchiveError, match="add up to more than") as caught:
            read(data, limits)
        assert caught.value.too_large is True
        assert read(data, ArchiveLimits(max_total_bytes=len(RED) + len(GREEN))) == [
            Member("a.png", RED),
            Member("b.png", GREEN),
        ]


def test_rejected_members_do_not_count_towards_the_total() -> None:
    limits = ArchiveLimits(max_total_bytes=len(RED), max_member_bytes=len(RED))
    data = zip_bytes(("big.png", BLUE), ("a.png", RED))
    assert len(BLUE) > len(RED)
    assert read(data, limits)[1] == Member("a.png", RED)


def test_member_count_limit_counts_directories_too() -> None:
    limits = ArchiveLimits(max_members=3)
    zipped = zip_bytes(("d/", b""), ("e/", b""), ("d/a.png", RED), ("e/b.png", GREEN))
    tarred = tar_bytes(
        special("d", tarfile.DIRTYPE),
        special("e", tarfile.DIRTYPE),
        reg("d/a.png", RED),
        reg("e/b.png", GREEN),
    )
    for data in (zipped, tarred):
        with pytest.raises(ArchiveError, match="more than 3 entries") as caught:
            read(data, limits)
        assert caught.value.too_large is True
        assert len(read(data, ArchiveLimits(max_members=4))) == 2


def test_zip_member_count_is_refused_before_any_member() -> None:
    archive = read_archive(
        io.BytesIO(zip_bytes(("a.png", RED), ("b.png", GREEN))), ArchiveLimits(1)
    )
    with pytest.raises(ArchiveError):
        next(archive)


# --- truncated and broken archives ------------------------------------------------------------


def test_truncated_zip() -> None:
    data = zip_bytes(("a.png", RED), ("b.png", noise(10_000)))
    for cut in (len(data) // 2, len(data) - 10, 30):
        with pytest.raises(ArchiveError, match="unreadable zip") as caught:
            read(data[:cut])
        assert caught.value.too_large is False


def test_truncated_tar_gz_before_any_entry() -> None:
    data = gzip.compress(GOOD_TAR)
    with pytest.raises(ArchiveError, match="unreadable tar") as caught:
        read(data[:40])
    assert caught.value.too_large is False


def test_truncated_tar_gz_keeps_what_came_before() -> None:
    first, second = noise(64_000, seed=1), noise(64_000, seed=2)
    data = gzip.compress(tar_bytes(reg("first.png", first), reg("second.png", second)))
    entries = read(data[:100_000])
    assert entries[0] == Member("first.png", first)
    assert len(entries) == 2
    last = entries[-1]
    assert isinstance(last, Rejected) and last.name == "second.png"
    assert last.reason.startswith("unreadable: ")
    assert last.reason.endswith("(the rest of the archive is lost)")


def test_broken_tar_header_after_entries_ends_with_the_rest_rejected() -> None:
    second = tarfile.TarInfo("second.png")
    second.size = len(GREEN)
    second.pax_headers = {"comment": "a pax header, then a broken one"}
    data = bytearray(tar_bytes(reg("first.png", RED), (second, GREEN), format=tarfile.PAX_FORMAT))
    header = data.index(b"second.png\x00")  # the ustar header after the pax one
    assert header % 512 == 0
    data[header + 148 : header + 156] = b"0000000\x00"  # a wrong checksum
    entries = read(bytes(data))
    assert entries[0] == Member("first.png", RED)
    assert len(entries) == 2
    assert entries[1].name == "<rest of the archive>"
    assert isinstance(entries[1], Rejected) and entries[1].reason.startswith("unreadable: ")


# --- everything at once ------------------------------------------------------------------------

GOOD = {"cats/a.png": RED, "dogs/b.png": GREEN, "c.png": BLUE}


def test_zip_mixing_every_hostile_entry_with_good_images() -> None:
    lying = ("lying.png", noise(30_000))
    data = zip_bytes(
        ("cats/", b""),
        ("cats/a.png", RED),
        ("../x.png", RED),
        ("a/../../y.png", RED),
        ("/abs.png", RED),
        ("C:/drive.png", RED),
        ("evil\\..\\z.png", RED),
        (zinfo("link.png", stat.S_IFLNK | 0o777), b"/etc/passwd"),
        (zinfo("fifo.png", stat.S_IFIFO | 0o644), b""),
        ("inner.zip", NESTED_ZIP),
        ("photos.tar.gz", NESTED_TGZ),
        ("disguised.png", NESTED_ZIP),
        ("dogs/b.png", GREEN),
        ("CATS/A.PNG", GREEN),
        ("bomb.png", bytes(2 * 2**20)),
        lying,
        ("secret.png", RED),
        ("empty.png", b""),
        ("bell\x07.png", RED),
        ("__MACOSX/cats/._a.png", b"junk"),
        (".DS_Store", b"junk"),
        ("c.png", BLUE),
        ("c.png", RED),
    )
    data = zip_patch(data, "secret.png", flags=0x1)
    data = zip_patch(data, "lying.png", declared=100)
    entries = read(data)
    assert accepted(entries) == GOOD
    assert [e.name for e in entries if isinstance(e, Member)] == list(GOOD)
    rejections = [(e.name, e.reason) for e in entries if isinstance(e, Rejected)]
    variable = {name: reason for name, reason in rejections if name in ("lying.png", "bomb.png")}
    assert variable["lying.png"].startswith("unreadable: ")
    assert variable["bomb.png"].endswith("(zip bomb)")
    assert [r for r in rejections if r[0] not in variable] == [
        ("../x.png", "path escapes the archive (..)"),
        ("a/../../y.png", "path escapes the archive (..)"),
        ("/abs.png", "absolute path"),
        ("C:/drive.png", "drive letter"),
        ("evil\\..\\z.png", "backslash in name"),
        ("link.png", "symbolic link"),
        ("fifo.png", "device or special file"),
        ("inner.zip", "nested archive"),
        ("photos.tar.gz", "nested archive"),
        ("disguised.png", "nested archive"),
        ("CATS/A.PNG", "duplicate name (same as cats/a.png)"),
        ("secret.png", "encrypted"),
        ("empty.png", "empty file"),
        ("bell\\x07.png", "control character in name"),
        ("c.png", "duplicate name (same as c.png)"),
    ]
    assert len(entries) == len(GOOD) + 17  # macOS junk and the folder are not reported


def test_tar_mixing_every_hostile_entry_with_good_images() -> None:
    data = tar_bytes(
        special("cats", tarfile.DIRTYPE),
        reg("cats/a.png", RED),
        reg("../x.png", RED),
        reg("a/../../y.png", RED),
        reg("/abs.png", RED),
        reg("C:drive.png", RED),
        reg("evil\\..\\z.png", RED),
        special("link.png", tarfile.SYMTYPE, "/etc/passwd"),
        special("hard.png", tarfile.LNKTYPE, "cats/a.png"),
        special("tty.png", tarfile.CHRTYPE),
        special("pipe.png", tarfile.FIFOTYPE),
        reg("inner.zip", NESTED_ZIP),
        reg("photos.tar.gz", NESTED_TGZ),
        reg("disguised.png", NESTED_TGZ),
        reg("dogs/b.png", GREEN),
        reg("Cats/A.png", GREEN),
        reg("empty.png", b""),
        reg("bell\x07.png", RED),
        reg("._c.png", b"junk"),
        reg("x/__MACOSX/y.png", b"junk"),
        reg("c.png", BLUE),
    )
    entries = read(gzip.compress(data))
    assert accepted(entries) == GOOD
    assert len(entries) == len(GOOD) + 15  # macOS junk and the folder are not reported
    assert refused(entries) == {
        "../x.png": "path escapes the archive (..)",
        "a/../../y.png": "path escapes the archive (..)",
        "/abs.png": "absolute path",
        "C:drive.png": "drive letter",
        "evil\\..\\z.png": "backslash in name",
        "link.png": "symbolic link",
        "hard.png": "hard link",
        "tty.png": "device or special file",
        "pipe.png": "device or special file",
        "inner.zip": "nested archive",
        "photos.tar.gz": "nested archive",
        "disguised.png": "nested archive",
        "Cats/A.png": "duplicate name (same as cats/a.png)",
        "empty.png": "empty file",
        "bell\\x07.png": "control character in name",
    }


def test_reading_never_writes_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    outside = str(tmp_path / "outside.png")
    tarred = tar_bytes(
        reg("a.png", RED),
        reg("../escaped.png", RED),
        reg(outside, RED),
        special("link", tarfile.SYMTYPE, str(tmp_path)),
        reg("link/through.png", RED),
        special("pipe", tarfile.FIFOTYPE),
        special("hard.png", tarfile.LNKTYPE, outside),
    )
    zipped = zip_bytes(
        ("a.png", RED),
        ("../escaped.png", RED),
        (outside, RED),
        (zinfo("link", stat.S_IFLNK | 0o777), str(tmp_path).encode()),
        ("link/through.png", RED),
    )
    for data in (tarred, gzip.compress(tarred), zipped):
        entries = read(data)
        assert accepted(entries) == {"a.png": RED}
        assert "../escaped.png" in refused(entries)
    assert os.listdir(work) == []
    assert os.listdir(tmp_path) == ["work"]
