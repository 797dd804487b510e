"""The zips the API answers: one writer and one ``errors.json`` for translate and jobs.

``POST /v1/models/{name}/translate`` with several ``files`` and ``GET /v1/jobs/{id}/result``
both answer a zip of outputs. Both are written here, the same way:

- entries are stored (images are compressed already), dated 1980-01-01 and readable by all,
  so the same outputs always give the same bytes;
- entry names are made unique with :class:`service.files.OutputNames` (case-insensitive:
  ``a.png`` and ``A.png`` never share a zip that unpacks on macOS or Windows): ``a.png``,
  ``a-2.png``...;
- when some inputs have no output, ``errors.json`` lists them: a JSON list of
  :class:`ZipItemError`, ``{"item", "error"}`` plus ``code`` and ``status`` when known.

The zip is produced piece by piece (:func:`zip_chunks`), so a large job streams to the client
with one output in memory at a time.
"""

from __future__ import annotations

import io
import json
import posixpath
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from service.files import OutputNames

__all__ = ["ERRORS_ENTRY", "ZipItemError", "zip_bytes", "zip_chunks"]

#: The entry naming the inputs without an output.
ERRORS_ENTRY: Final = "errors.json"
_ZIP_DATE: Final = (1980, 1, 1, 0, 0, 0)  # fixed, so the same outputs give the same zip


class ZipItemError(BaseModel):
    """An input that has no output in the zip, and why (one entry of ``errors.json``)."""

    model_config = ConfigDict(title="ZipItemError")

    item: str = Field(
        description="the input's name as submitted (an upload's file name, an archive entry's "
        "path)",
        examples=["cats/007.png"],
    )
    error: str = Field(
        description="what went wrong", examples=["not a readable image (truncated or damaged)"]
    )
    code: str | None = Field(
        None,
        description="the stable error code, as in an error answer (translate requests)",
        examples=["corrupt"],
    )
    status: int | None = Field(
        None,
        description="the HTTP status this input alone would have been answered with "
        "(translate requests)",
        examples=[400],
    )

    def as_json(self) -> dict[str, Any]:
        """The entry as written: the fields that are known."""
        return self.model_dump(mode="json", exclude_none=True)


class _Sink(io.RawIOBase):
    """A write-only stream zipfile writes into while its bytes are handed on."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


def zip_chunks(
    outputs: Iterable[tuple[str, bytes]], errors: Sequence[ZipItemError] = ()
) -> Iterator[bytes]:
    """The zip of `outputs` (name, data; read lazily, one at a time) and, when there are
    `errors`, ``errors.json``, as consecutive pieces of bytes."""
    names = OutputNames()
    names.claim(ERRORS_ENTRY, ERRORS_ENTRY)  # no output may take the errors' name
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as archive:
        for name, data in outputs:
            stem, suffix = posixpath.splitext(name)
            archive.writestr(_entry(names.unique(stem, suffix, name)), data)
            yield sink.drain()
        if errors:
            listing = json.dumps([e.as_json() for e in errors], indent=2, ensure_ascii=False)
            archive.writestr(_entry(ERRORS_ENTRY), listing + "\n")
    yield sink.drain()


def zip_bytes(outputs: Iterable[tuple[str, bytes]], errors: Sequence[ZipItemError] = ()) -> bytes:
    """The whole zip at once (for answers small enough to hold: a translate request)."""
    return b"".join(zip_chunks(outputs, errors))
