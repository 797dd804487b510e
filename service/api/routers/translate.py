"""``POST /v1/models/{name}/translate``: images in, translated images out.

One image answers an image; several (multipart ``files``) answer a zip holding one output per
input that worked and an ``errors.json`` naming those that did not. The request's deadline
(``UNPAIRED_REQUEST_TIMEOUT_S``) covers queueing and the engine; a client that hangs up stops
waiting for its work (its queued images are dropped).
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import zipfile
from collections.abc import Awaitable
from typing import Annotated, Any, Final, Literal, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from service.api.error_handlers import ApiError, to_api_error
from service.api.schemas import ErrorResponse, ModelName
from service.api.state import AuthDep, ServiceState, StateDep
from service.api.uploads import Upload, choose_format, read_uploads
from service.files import OutputNames, safe_stem
from service.inference.requests import OutputSpec, Translated, TranslationRequest, Translator

router = APIRouter(prefix="/v1/models", tags=["translate"])

T = TypeVar("T")

_BINARY: Final = {"type": "string", "format": "binary"}
_IMAGE_TYPES: Final = ("image/png", "image/jpeg", "image/webp")
_REQUEST_BODY: Final = {
    "required": True,
    "description": (
        "The image as the raw body (`Content-Type: image/*`), or multipart/form-data with one "
        "`file` (answered with an image) or one or more `files` (answered with a zip)."
    ),
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {**_BINARY, "description": "one image; the answer is an image"},
                    "files": {
                        "type": "array",
                        "items": _BINARY,
                        "description": "several images; the answer is a zip",
                    },
                },
            }
        },
        **{media: {"schema": _BINARY} for media in (*_IMAGE_TYPES, "application/octet-stream")},
    },
}
_HEADERS: Final = {
    "X-Request-ID": "echoed from the request, or made up",
    "X-Model": "the model's name (an alias in the URL is resolved)",
    "X-Direction": "AtoB or BtoA",
    "X-Batch-Size": "images in the engine call this one ran in",
    "X-Queue-Seconds": "time spent waiting for the batch to start",
    "X-Engine-Seconds": "engine time of that batch",
}
_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "description": "the translated image (or a zip for `files`)",
        "content": {media: {"schema": _BINARY} for media in (*_IMAGE_TYPES, "application/zip")},
        "headers": {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in _HEADERS.items()
        },
    },
    **{
        status: {"model": ErrorResponse, "description": text}
        for status, text in {
            400: "not a readable image, or an empty body",
            401: "API key missing or wrong",
            404: "no such model, or the model lacks the direction",
            406: "Accept names no image type the API produces",
            413: "the body or an image is too large (bytes or pixels)",
            415: "the body is not an image / form, or the image format is not accepted",
            422: "bad parameters (direction, format, quality, form fields)",
            429: "rate limit; see Retry-After",
            503: "the queue is full or the job queue is unreachable; see Retry-After",
            504: "the translation did not finish before the request's deadline",
        }.items()
    },
}
_ZIP_DATE: Final = (1980, 1, 1, 0, 0, 0)  # fixed, so the same images give the same zip


@router.post(
    "/{name}/translate",
    summary="Translate images with a model",
    description=(
        "`direction` may be left out for a model with one direction. The answer's format is "
        "`?format=` if given, else the first image type `Accept` prefers (PNG for `*/*`). "
        "Example: `curl -H 'Content-Type: image/jpeg' --data-binary @day.jpg "
        "'http://localhost:8000/v1/models/day2night/translate?direction=AtoB' -o night.png`"
    ),
    response_class=Response,
    responses=_RESPONSES,
    openapi_extra={"requestBody": _REQUEST_BODY},
)
async def translate(
    request: Request,
    name: ModelName,
    state: StateDep,
    _: AuthDep,
    direction: Annotated[
        Literal["AtoB", "BtoA"] | None,
        Query(description="AtoB (G: X->Y) or BtoA (F: Y->X); optional for one-way models"),
    ] = None,
    format: Annotated[
        Literal["png", "jpeg", "jpg", "webp"] | None,
        Query(description="output format; default from Accept, else png"),
    ] = None,
    quality: Annotated[int, Query(ge=1, le=100, description="JPEG / WebP quality")] = 95,
) -> Response:
    catalog, translator = state.ready()
    settings = state.settings
    manifest = await run_in_threadpool(catalog.resolve, name)
    chosen = manifest.resolve_direction(direction)
    output = OutputSpec(
        format=choose_format(format, request.headers.get("accept")), quality=quality
    )
    log = request.scope["state"]["log"]
    log.update(model=manifest.name, direction=chosen, format=output.format)
    uploads, as_zip = await read_uploads(
        request, max_bytes=settings.max_image_bytes, max_files=settings.max_files
    )
    log.update(files=len(uploads), input_bytes=sum(len(u.data) for u in uploads))
    deadline = time.time() + settings.request_timeout_s
    base = {
        "model": manifest.name,
        "direction": chosen,
        "output": output,
        "deadline": deadline,
        "request_id": request.scope["state"]["request_id"],
    }
    jobs = [TranslationRequest(data=u.data, name=u.name, **base) for u in uploads]
    headers = {"X-Model": manifest.name, "X-Direction": chosen}
    if not as_zip:
        result = await _until_disconnect(request, _translate(state, translator, jobs[0]))
        log.update(
            width=result.width,
            height=result.height,
            batch_size=result.batch_size,
            queue_seconds=round(result.queue_seconds, 4),
            engine_seconds=round(result.engine_seconds, 4),
            worker=result.worker,
        )
        filename = safe_stem(uploads[0].name, "image") + output.suffix
        return Response(
            result.data,
            media_type=result.media_type,
            headers={**headers, **_timing_headers(result), **_disposition(filename, "inline")},
        )
    results = await _until_disconnect(
        request,
        asyncio.gather(
            *(_translate(state, translator, job) for job in jobs), return_exceptions=True
        ),
    )
    return _zip_response(uploads, list(results), output, headers)


async def _translate(
    state: ServiceState, translator: Translator, job: TranslationRequest
) -> Translated:
    try:
        result = await asyncio.wait_for(translator.translate(job), job.deadline - time.time())
    except Exception as exc:  # every failure becomes its HTTP answer (bugs: a logged 500)
        raise to_api_error(exc) from None
    state.metrics.observe(job.model, job.direction, result)
    return result


async def _until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """`work`, cancelled if the client hangs up first (nobody would read the answer)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise ApiError(499, "client_closed", "the client closed the connection")
    return task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _timing_headers(result: Translated) -> dict[str, str]:
    headers = {
        "X-Batch-Size": str(result.batch_size),
        "X-Queue-Seconds": f"{result.queue_seconds:.4f}",
        "X-Engine-Seconds": f"{result.engine_seconds:.4f}",
        "Server-Timing": (
            f"queue;dur={result.queue_seconds * 1000:.1f}, "
            f"engine;dur={result.engine_seconds * 1000:.1f}"
        ),
    }
    if result.worker:
        headers["X-Worker"] = result.worker
    return headers


def _disposition(filename: str, kind: str) -> dict[str, str]:
    return {"Content-Disposition": f'{kind}; filename="{filename}"'}


def _zip_response(
    uploads: list[Upload],
    results: list[Translated | BaseException],
    output: OutputSpec,
    headers: dict[str, str],
) -> Response:
    failures: list[dict[str, Any]] = []
    buffer = io.BytesIO()
    names = OutputNames()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index, (upload, result) in enumerate(zip(uploads, results, strict=True)):
            if isinstance(result, BaseException):
                # _translate turns every failure into an ApiError; anything else is a bug
                error = (
                    result if isinstance(result, ApiError) else to_api_error(RuntimeError(result))
                )
                failures.append(
                    {
                        "file": upload.name,
                        "status": error.status,
                        "code": error.code,
                        "message": error.message,
                    }
                )
                continue
            stem = safe_stem(upload.name, f"image-{index + 1}")
            entry = names.unique(stem, output.suffix, upload.name)
            archive.writestr(_zip_info(entry), result.data)
        if failures:
            archive.writestr(_zip_info("errors.json"), json.dumps(failures, indent=2) + "\n")
    if len(failures) == len(uploads):
        first = failures[0]
        raise ApiError(
            first["status"],
            first["code"],
            f"none of the {len(uploads)} images could be translated: {first['message']}",
            details=failures,
        )
    return Response(
        buffer.getvalue(),
        media_type="application/zip",
        headers={
            **headers,
            "X-Files": str(len(uploads) - len(failures)),
            "X-Failed": str(len(failures)),
            **_disposition("translated.zip", "attachment"),
        },
    )


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.external_attr = 0o644 << 16
    return info
