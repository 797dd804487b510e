"""Images out of a request, and the format of the answer.

A translate request carries its image(s) one of two ways: the raw body with an ``image/*`` (or
``application/octet-stream``) type, or ``multipart/form-data`` with one ``file`` field and/or
``files`` fields: ``file`` alone is answered with an image, any ``files`` with a zip of every
image sent (``file`` first). ``UNPAIRED_MAX_FILES`` bounds the images of a form, ``file`` and
``files`` together. Sizes are enforced while the body streams in: the whole body by the
middleware, each image here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from starlette.datastructures import UploadFile
from starlette.requests import Request

from service.api.error_handlers import ApiError
from service.errors import VideoNeedsJob
from service.inference import image_io
from service.inference.videos.formats import is_video_name, looks_like_video

__all__ = ["Upload", "choose_format", "read_uploads"]

RAW_TYPES: Final = ("image/", "application/octet-stream")
VIDEO_HOW_TO: Final = (
    "videos are translated as bulk jobs: POST /v1/jobs with the clip as a 'files' field (or "
    "inside an archive), or `unpaired jobs submit MODEL clip.mp4`; the job's outputs hold the "
    "translated clip"
)
HOW_TO_SEND: Final = (
    "send the image as the raw body with Content-Type image/* (or application/octet-stream), "
    "or as multipart/form-data field 'file' and/or fields 'files' (answered with a zip)"
)


@dataclass(frozen=True)
class Upload:
    name: str  # the client's file name, or a made-up one
    data: bytes


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_uploads(
    request: Request, *, max_bytes: int, max_files: int
) -> tuple[list[Upload], bool]:
    """The uploaded images and whether the client asked for a zip (a ``files`` field)."""
    media_type = _media_type(request)
    if media_type.startswith("video/"):
        raise VideoNeedsJob(VIDEO_HOW_TO)  # before a byte of the clip is read
    if media_type == "multipart/form-data":
        uploads, as_zip = await _read_multipart(request, max_bytes=max_bytes, max_files=max_files)
        _refuse_videos(uploads)
        return uploads, as_zip
    if media_type.startswith(RAW_TYPES):
        uploads = [Upload("upload", await _read_raw(request, max_bytes))]
        _refuse_videos(uploads)
        return uploads, False
    given = f"Content-Type {media_type!r}" if media_type else "no Content-Type"
    raise ApiError(415, "unsupported_media_type", f"{given}: {HOW_TO_SEND}")


def _refuse_videos(uploads: list[Upload]) -> None:
    """A clip is a job's work, not an answer to wait for (a one-minute clip takes minutes on a
    CPU, far beyond the request timeout): said at once, rather than as a corrupt image."""
    for upload in uploads:
        if is_video_name(upload.name) or looks_like_video(upload.data[:512]):
            raise VideoNeedsJob(f"{upload.name!r} is a video: {VIDEO_HOW_TO}")


def _too_large(size: int | str, max_bytes: int, name: str = "the image") -> ApiError:
    return ApiError(413, "too_large", f"{name} is {size} bytes; the limit is {max_bytes} bytes")


async def _read_raw(request: Request, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, "too_large", f"the image is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    if size == 0:
        raise ApiError(400, "empty", f"the request body is empty; {HOW_TO_SEND}")
    return b"".join(chunks)


async def _read_multipart(
    request: Request, *, max_bytes: int, max_files: int
) -> tuple[list[Upload], bool]:
    async with request.form(max_files=max_files, max_fields=max_files + 16) as form:
        unknown = ", ".join(repr(k) for k in sorted(set(form.keys()) - {"file", "files"}))
        single = form.getlist("file")
        several = form.getlist("files")
        if len(single) > 1:
            raise ApiError(
                422, "invalid_parameters", "'file' takes one image; send several as 'files'"
            )
        parts = [*single, *several]  # starlette refused more than max_files of them (400)
        if not parts:
            also = f" (unknown field(s) {unknown})" if unknown else ""
            raise ApiError(422, "invalid_parameters", f"no image in the form{also}: {HOW_TO_SEND}")
        if unknown:
            raise ApiError(
                422,
                "invalid_parameters",
                f"unknown form field(s) {unknown}: the form takes 'file' and 'files' "
                "(direction, format and quality are query parameters)",
            )
        uploads = []
        for index, part in enumerate(parts):
            if not isinstance(part, UploadFile):
                raise ApiError(
                    422, "invalid_parameters", "the 'file'/'files' fields must be file uploads"
                )
            name = part.filename or f"image-{index + 1}"
            if part.size is not None and part.size > max_bytes:
                raise _too_large(part.size, max_bytes, repr(name))
            uploads.append(Upload(name, await part.read()))
    return uploads, bool(several)


# --- the answer's format -------------------------------------------------------------------

_ACCEPT_ITEM: Final = re.compile(r"^\s*([^;\s]+)\s*(?:;(.*))?$")
_Q: Final = re.compile(r"(?:^|;)\s*q\s*=\s*([0-9.]+)")


def choose_format(format: str | None, accept: str | None) -> str:
    """``?format=`` wins; else the most preferred image type in ``Accept``; else PNG."""
    if format is not None:
        return image_io.output_format(format)
    if not accept:
        return "png"
    by_type = {media: name for name, media in image_io.MEDIA_TYPES.items()}
    offers: list[tuple[float, int, str]] = []
    for position, item in enumerate(accept.split(",")):
        match = _ACCEPT_ITEM.match(item)
        if not match:
            continue
        q = _Q.search(match.group(2) or "")
        try:
            weight = float(q.group(1)) if q else 1.0
        except ValueError:
            weight = 0.0
        if weight > 0:
            offers.append((-weight, position, match.group(1).lower()))
    for _, _, media in sorted(offers):
        if media in by_type:
            return by_type[media]
        if media in ("image/*", "*/*"):
            return "png"
    raise ApiError(
        406,
        "not_acceptable",
        f"cannot answer with any of {accept!r}; the API returns "
        f"{', '.join(image_io.MEDIA_TYPES.values())} (or use ?format=)",
    )
