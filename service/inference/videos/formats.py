"""Which inputs are videos: one rule for the CLI's folder scan, job intake and the API.

Nothing here loads a codec, so the torch-free API process can tell a video from an image
without PyAV: by suffix where a name is all there is, by the container's signature where the
bytes are at hand.
"""

from __future__ import annotations

import posixpath
from typing import Final

__all__ = ["REPORT_SUFFIX", "VIDEO_SUFFIXES", "is_video_name", "looks_like_video"]

#: Containers the decoder reads and a folder scan or a job picks up as videos.
VIDEO_SUFFIXES: Final = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".3gp"}
)

#: A translated clip's report is written beside it: ``clip.mp4`` -> ``clip.mp4.json``.
REPORT_SUFFIX: Final = ".json"


def is_video_name(name: str) -> bool:
    """True for a file name whose suffix is a video container's."""
    return posixpath.splitext(name)[1].lower() in VIDEO_SUFFIXES


def looks_like_video(head: bytes) -> bool:
    """True when the first bytes are a video container's signature (MP4/MOV/3GP, Matroska/
    WebM, AVI, FLV, MPEG program or transport stream)."""
    if len(head) >= 12 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free"):
        brand = head[8:12]
        return not brand.startswith((b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1"))
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska, WebM
        return True
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return True
    if head.startswith((b"FLV\x01", b"\x00\x00\x01\xba")):  # FLV, MPEG-PS pack header
        return True
    return len(head) > 188 and head[0] == 0x47 and head[188] == 0x47  # MPEG-TS sync bytes
