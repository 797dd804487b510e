"""Schemathesis hooks for this API: real files where the schema says "an image" or "an archive".

A JSON Schema can say that a value is binary, and which media types it may be, but not that
its bytes decode. Left alone, schemathesis sends random bytes as images and as archives, which
the API rightly refuses (400 `corrupt`, 415 `unsupported_archive`), so schema-valid requests
would look refused. These hooks

- generate raw image bodies as real images of their media type (`media_type` strategies);
- turn bytes that do not decode in a multipart `file` / `files` into a real image (random
  pixels, seeded by the bytes they replace), and a job's `archive` into a real zip or tar
  (gzip, bzip2, xz) holding an image and a text file (`map_case`);
- drop a multipart case whose verdict (valid or not) is not that of what it sends
  (`filter_case`, see there).

Everything else in a request is left as generated. Load them with
``SCHEMATHESIS_HOOKS=tests/service/api/schemathesis_hooks.py`` (README, "Checking the schema").
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from functools import partial
from typing import Any

import jsonschema_rs
import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis import Case, HookContext
from schemathesis.core.parameters import ParameterLocation
from schemathesis.transport.serialization import Binary

#: The media type the schema names -> the PIL format of an image sent as it.
IMAGE_FORMATS = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
    "application/octet-stream": "PNG",
}
TRANSLATE = ("POST", "/v1/models/{name}/translate")
SUBMIT_JOB = ("POST", "/v1/jobs")
#: A job's uploads (`archive` and/or `files`) and `source` exclude each other (the `oneOf`).
UPLOADS, SOURCE = ("archive", "files"), "source"


def encode(fmt: str, seed: int) -> bytes:
    """A small random RGB image in `fmt`, the same one for the same seed."""
    rng = np.random.default_rng(seed)
    height, width = (int(side) for side in rng.integers(1, 25, 2))
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def is_image(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception:
        return False
    return True


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


#: An archive of each kind the API reads (the schema's `encoding` of `archive` names them).
ARCHIVES: list[Callable[[list[tuple[str, bytes]]], bytes]] = [
    _zip,
    _tar,
    lambda members: gzip.compress(_tar(members), mtime=0),
    lambda members: bz2.compress(_tar(members)),
    lambda members: lzma.compress(_tar(members)),
]


def _bytes_of(value: object) -> bytes | None:
    data = value.data if isinstance(value, Binary) else value
    return data if isinstance(data, bytes) else None


def real_image(value: object) -> object:
    """`value` if it is not bytes or already decodes; else an image in its place."""
    data = _bytes_of(value)
    if data is None or is_image(data):
        return value
    return Binary(encode("PNG", zlib.crc32(data)))


def real_archive(value: object) -> object:
    """`value` if it is not bytes; else an archive (of a kind chosen by its bytes)."""
    data = _bytes_of(value)
    if data is None:
        return value
    seed = zlib.crc32(data)
    pack = ARCHIVES[seed % len(ARCHIVES)]
    return Binary(pack([("in/photo.png", encode("PNG", seed)), ("in/notes.txt", b"not one")]))


# raw bodies are generated from these (schemathesis has real files only for PNG, JPEG, GIF, WebP)
for _media, _fmt in IMAGE_FORMATS.items():
    schemathesis.openapi.media_type(_media, st.integers(0, 2**32 - 1).map(partial(encode, _fmt)))


def _operation(case: Case) -> tuple[str, str]:
    return case.operation.method.upper(), case.operation.path


@schemathesis.hook
def map_case(context: HookContext, case: Case) -> Case:
    """Real images and archives in multipart bodies (raw bodies come from the strategies)."""
    operation, body = _operation(case), case.body
    if not isinstance(body, dict):
        return case
    if operation == TRANSLATE:
        if "file" in body:
            body["file"] = real_image(body["file"])
        if isinstance(body.get("files"), list):
            body["files"] = [real_image(item) for item in body["files"]]
    elif operation == SUBMIT_JOB and "archive" in body:
        body["archive"] = real_archive(body["archive"])
    return case


@schemathesis.hook
def before_call(context: HookContext, case: Case, kwargs: dict[str, Any]) -> None:
    """The examples phase makes its cases without `map_case` and `filter_case`, and fills a
    body's fields without its `oneOf`: keep a job's uploads (not its `source`), make the
    files real."""
    if case.meta is None or case.meta.phase.name.value != "examples":
        return
    body = case.body
    uploads = isinstance(body, dict) and any(name in body for name in UPLOADS)
    if _operation(case) == SUBMIT_JOB and uploads and SOURCE in body:
        del body[SOURCE]
    map_case(context, case)


def _as_sent(value: object) -> object:
    """A multipart value as the server reads it, for a JSON Schema validator: file bytes as a
    string (`format: binary` asserts nothing more), and no empty lists (they send no part)."""
    if isinstance(value, dict):
        return {k: _as_sent(v) for k, v in value.items() if v != []}
    if isinstance(value, list):
        return [_as_sent(item) for item in value]
    return "" if isinstance(value, Binary | bytes) else value


@schemathesis.hook
def filter_case(context: HookContext, case: Case) -> bool:
    """Drop a multipart case whose verdict is not that of what it sends.

    Schemathesis cannot validate binary values, so it judges multipart bodies with files
    loosely: an empty `files` list (nothing on the wire) may make a body "invalid", a negative
    draw for a file part may be a real file. Each body is judged again as sent; the case is
    kept when both verdicts agree.
    """
    body, meta, media_type = case.body, case.meta, case.media_type
    if not isinstance(body, dict) or meta is None or media_type != "multipart/form-data":
        return True
    component = meta.components.get(ParameterLocation.BODY)
    alternative = case.operation.get_body_for_media_type(media_type)
    if component is None or alternative is None:
        return True
    valid = jsonschema_rs.validator_for(alternative.validation_schema).is_valid(_as_sent(body))
    return bool(valid == component.mode.is_positive)
