"""``POST /v1/models/{name}/translate``: images in, translated images out.

One image answers an image; a form with ``files`` (beside its ``file``, if any) answers a zip
holding one output per input that worked and an ``errors.json`` naming those that did not.
The request's deadline (``UNPAIRED_REQUEST_TIMEOUT_S``) covers queueing and the engine; a
client that hangs up stops waiting for its work (its queued images are dropped).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Annotated, Any, Final, Literal, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from service.api.error_handlers import ApiError, to_api_error
from service.api.openapi import error_responses
from service.api.schemas import ModelName
from service.api.state import AuthDep, ServiceState, StateDep, resolve_model
from service.api.uploads import Upload, choose_format, read_uploads
from service.api.zips import ZipItemError, zip_bytes
from service.files import safe_stem
from service.inference.requests import OutputSpec, Translated, TranslationRequest, Translator

router = APIRouter(prefix="/v1/models", tags=["translate"])

T = TypeVar("T")

_BINARY: Final = {"type": "string", "format": "binary"}
_ANSWER_TYPES: Final = ("image/png", "image/jpeg", "image/webp", "application/zip")
_HEADERS: Final = {
    "X-Request-ID": "echoed from the request, or made up",
    "X-Model": "the model's name (an alias in the URL is resolved)",
    "X-Direction": "AtoB or BtoA",
    "X-Batch-Size": "images in the engine call this one ran in (one image)",
    "X-Queue-Seconds": "time spent waiting for the batch to start (one image)",
    "X-Engine-Seconds": "engine time of that batch (one image)",
    "X-Files": "outputs in the zip (`files`)",
    "X-Failed": "inputs listed in the zip's `errors.json` (`files`)",
}
_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "description": "the translated image; for a form with `files`, a zip of one output "
        "per input (`file` and `files`) that worked and, if some failed, `errors.json`: a JSON "
        "list of `ZipItemError`",
        "content": {media: {"schema": _BINARY} for media in _ANSWER_TYPES},
        "headers": {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in _HEADERS.items()
        },
    },
    **error_responses(
        {
            400: "`corrupt`, `bad_mode`, `empty`: not a readable image (truncated, damaged, "
            "empty); `bad_request`: a malformed form, or more images (`file` and `files` "
            "together) than UNPAIRED_MAX_FILES",
            404: "`model_not_found`: no such model; `direction_not_found`: the model lacks "
            "the direction",
            406: "`not_acceptable`: Accept names no image type the API produces",
            413: "`too_large`: the body or an image is too large (bytes or pixels)",
            415: "`unsupported_media_type`: the body is not an image or a form; "
            "`unsupported_format`: an image format outside UNPAIRED_IMAGE_FORMATS; "
            "`video_needs_job`: a video (send it as a bulk job: POST /v1/jobs)",
            422: "`invalid_parameters`: bad `direction`, `format`, `quality` or form fields; "
            "`direction_required`: no direction for a model with two",
            503: "`queue_full`, `over_budget`, `overloaded`, `starting`, `shutting_down`: at "
            "capacity (`over_budget`: other large images hold the memory budget); "
            "`broker_unavailable`: Redis unreachable (see Retry-After); `model_unavailable`: "
            "the model's files fail their checksums",
            504: "`deadline_exceeded`: not translated within UNPAIRED_REQUEST_TIMEOUT_S",
        }
    ),
}


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
    manifest = await resolve_model(catalog, name)
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
    failures: list[ZipItemError] = []
    outputs: list[tuple[str, bytes]] = []
    for index, (upload, result) in enumerate(zip(uploads, results, strict=True)):
        if isinstance(result, BaseException):
            # _translate turns every failure into an ApiError; anything else is a bug
            error = result if isinstance(result, ApiError) else to_api_error(RuntimeError(result))
            failures.append(
                ZipItemError(
                    item=upload.name, error=error.message, code=error.code, status=error.status
                )
            )
        else:
            name = safe_stem(upload.name, f"image-{index + 1}") + output.suffix
            outputs.append((name, result.data))
    if not outputs:
        first = failures[0]
        assert first.status is not None and first.code is not None
        raise ApiError(
            first.status,
            first.code,
            f"none of the {len(uploads)} images could be translated: {first.error}",
            details=[failure.as_json() for failure in failures],
        )
    return Response(
        zip_bytes(outputs, failures),
        media_type="application/zip",
        headers={
            **headers,
            "X-Files": str(len(outputs)),
            "X-Failed": str(len(failures)),
            **_disposition("translated.zip", "attachment"),
        },
    )
