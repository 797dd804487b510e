"""``/v1/jobs``: bulk conversion. Submit once, come back to every image converted, or to a
precise list of those that could not be.

A job takes uploads, an uploaded zip or tar (``archive``) and/or uploaded images (``files``: the
archive's members and the files are the job's items, a name given twice is one failed item), or
a ``source`` folder inside the configured roots, optionally with a ``destination``. It answers
202 with the job at once; the work runs in chunks behind interactive requests. With API keys,
a job is visible only to the key that submitted it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service.api.error_handlers import ApiError, invalid_parameters
from service.api.job_schemas import (
    JobCreate,
    JobList,
    JobOptions,
    JobOutputs,
    JobView,
    OutputView,
)
from service.api.openapi import error_responses
from service.api.state import AuthDep, ServiceState, StateDep
from service.api.zips import ZipItemError, zip_chunks
from service.files import safe_file_name
from service.inference.requests import OutputSpec
from service.inference.videos.formats import REPORT_SUFFIX, is_video_name
from service.jobs.archives import ArchiveLimits, archive_kind
from service.jobs.intake import Intake
from service.jobs.manager import JobManager, JobRequest
from service.jobs.records import Item, JobStatus
from service.jobs.storage import Storage

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_FORM_FIELDS: Final = ("model", "direction", "format", "quality", "source", "destination")
_FILE_FIELDS: Final = ("archive", "files")
_ERRORS: Final = {
    400: "`bad_archive`: an unreadable archive, or nothing to convert in it; `bad_request`: "
    "a malformed form",
    404: "`job_not_found`: no such job (or not yours); `model_not_found`, "
    "`direction_not_found`: the model or its direction",
    409: "`job_not_finished`: the job has not finished yet",
    413: "`too_large`: the upload is too large, or holds more than UNPAIRED_MAX_JOB_ITEMS images",
    415: "`unsupported_media_type`: neither multipart/form-data nor JSON; "
    "`unsupported_archive`: `archive` is not a zip or tar",
    422: "`invalid_parameters`: bad or unknown fields, no images (no `archive`, `files` or "
    "`source`), or a `source` beside uploads; `direction_required`: no direction for a two-way "
    "model; "
    "`invalid_location`: a source/destination outside the allowed roots (or none configured)",
    503: "`starting`, `overloaded`; `job_store_unavailable`, `broker_unavailable`: the job "
    "store or queue is unreachable; `model_unavailable`; see Retry-After",
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The jobs' error answers: these, and the ones every operation has (401, 429, 503)."""
    return error_responses({s: _ERRORS[s] for s in (*statuses, 503)})


def _owner(state: ServiceState, client: str) -> str | None:
    """Whose jobs the caller may see: their key's, or everyone's without keys."""
    return client if state.keys.required else None


def _jobs(state: ServiceState) -> JobManager:
    state.ready()
    if state.jobs is None:
        raise ApiError(503, "starting", "the job service is still starting; retry shortly")
    return state.jobs


@router.post(
    "",
    status_code=202,
    summary="Submit a bulk job",
    description=(
        "Example: `curl -F model=day2night -F direction=AtoB -F archive=@photos.zip "
        "http://localhost:8000/v1/jobs`. An `archive` and `files` may be sent together: the "
        "job converts the archive's members and the files (a name given twice is a failed "
        "item, the first one is converted). Entries of an archive that are unsafe (paths "
        "escaping it, links, devices, nested archives, duplicates, bombs) or empty are not "
        "extracted: they are the job's failed items, with the reason."
    ),
    response_model=JobView,
    responses={
        202: {
            "description": "the job, queued",
            "headers": {
                "Location": {
                    "description": "the job's URL, `/v1/jobs/{id}`",
                    "schema": {"type": "string"},
                }
            },
        },
        **_errors(400, 404, 413, 415, 422),
    },
)
async def submit_job(request: Request, state: StateDep, client: AuthDep) -> JSONResponse:
    jobs = _jobs(state)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/json":
        try:
            body = JobCreate.model_validate_json(await request.body())
        except ValidationError as exc:
            raise invalid_parameters(exc) from None
        status = await _submit(state, jobs, client, body.model_dump(), None, [])
    elif media == "multipart/form-data":
        settings = state.settings
        async with request.form(  # the archive and up to max_job_items files
            max_files=settings.max_job_items + 1, max_fields=len(_FORM_FIELDS) + 8
        ) as form:
            unknown = sorted(set(form.keys()) - {*_FORM_FIELDS, *_FILE_FIELDS})
            if unknown:
                raise ApiError(
                    422,
                    "invalid_parameters",
                    f"unknown form field(s) {', '.join(map(repr, unknown))}; the fields are "
                    + ", ".join(repr(f) for f in (*_FORM_FIELDS, *_FILE_FIELDS)),
                )
            fields = {k: v for k in _FORM_FIELDS if isinstance(v := form.get(k), str)}
            archives = form.getlist("archive")
            files = form.getlist("files")
            if len(archives) > 1:
                raise ApiError(
                    422,
                    "invalid_parameters",
                    "'archive' takes one zip or tar; send images beside it as 'files'",
                )
            archive = archives[0] if archives else None
            if archive is not None and not isinstance(archive, UploadFile):
                raise ApiError(422, "invalid_parameters", "'archive' must be a file upload")
            if not all(isinstance(f, UploadFile) for f in files):
                raise ApiError(422, "invalid_parameters", "'files' must be file uploads")
            uploads = [f for f in files if isinstance(f, UploadFile)]
            status = await _submit(state, jobs, client, fields, archive, uploads)
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            "send multipart/form-data (model + archive or files) or JSON (model + source)",
        )
    request.scope["state"]["log"].update(job=status.spec.id, files=status.spec.total)
    return JSONResponse(
        JobView.of(status).model_dump(mode="json"),
        status_code=202,
        headers={"Location": f"/v1/jobs/{status.spec.id}"},
    )


def _job_request(state: ServiceState, fields: dict[str, Any], client: str) -> JobRequest:
    """The job the fields describe (``source`` apart); 422 for bad fields, 404 for no model."""
    catalog, _ = state.ready()
    source = fields.pop("source", None) or None
    try:
        options = JobOptions.model_validate(fields)
    except ValidationError as exc:
        raise invalid_parameters(exc) from None
    manifest = catalog.resolve(options.model)
    return JobRequest(
        model=manifest.name,
        direction=manifest.resolve_direction(options.direction),
        output=OutputSpec(format=options.format, quality=options.quality),
        owner=client,
        source=source,
        destination=options.destination or None,
    )


async def _submit(
    state: ServiceState,
    jobs: JobManager,
    client: str,
    fields: dict[str, Any],
    archive: UploadFile | None,
    files: list[UploadFile],
) -> JobStatus:
    uploads = [n for n, v in (("archive", archive), ("files", files)) if v]
    if fields.get("source") and uploads:
        raise ApiError(
            422,
            "invalid_parameters",
            "give the images either as uploads ('archive' and/or 'files') or as a 'source' "
            f"location, not both (got {', '.join(uploads)} and source)",
        )
    if not uploads and not fields.get("source"):
        raise ApiError(
            422,
            "invalid_parameters",
            "no images: upload an 'archive' and/or 'files', or name a 'source' location",
        )
    job = await run_in_threadpool(_job_request, state, dict(fields), client)
    settings = state.settings
    limits = ArchiveLimits(
        max_members=settings.max_job_items,
        max_member_bytes=settings.max_image_bytes,
        max_total_bytes=settings.max_job_bytes,
    )
    if archive is not None:
        head = await archive.read(1024)
        await archive.seek(0)
        if archive_kind(head) is None:
            raise ApiError(
                415, "unsupported_archive", "'archive' is not a zip or tar (gz, bz2, xz) file"
            )

    def add_inputs(intake: Intake) -> None:
        if archive is not None:
            intake.add_archive(archive.file, limits)
        for index, upload in enumerate(files):
            data = upload.file.read(settings.max_image_bytes + 1)
            name = safe_file_name(upload.filename, f"upload-{index + 1}")
            if len(data) > settings.max_image_bytes:
                intake.refuse(name, f"over the limit of {settings.max_image_bytes} bytes")
            else:
                intake.add_upload(name, data)

    return await run_in_threadpool(jobs.submit, job, add_inputs)


@router.get(
    "",
    summary="List jobs",
    response_model=JobList,
    responses=_errors(422),
)
async def list_jobs(
    state: StateDep,
    client: AuthDep,
    limit: Annotated[int, Query(ge=1, le=200, description="jobs per page")] = 50,
    before: Annotated[float | None, Query(description="`next_before` of the previous page")] = None,
) -> JobList:
    jobs = _jobs(state)
    found = await run_in_threadpool(jobs.page, _owner(state, client), limit, before)
    return JobList(
        jobs=[JobView.of(s, with_errors=False) for s in found],
        next_before=found[-1].spec.created_at if len(found) == limit else None,
    )


@router.get(
    "/{job_id}",
    summary="A job's state, counts, progress, throughput, ETA and failed images",
    response_model=JobView,
    responses=_errors(404),
)
async def get_job(job_id: str, state: StateDep, client: AuthDep) -> JobView:
    jobs = _jobs(state)
    status = await run_in_threadpool(jobs.get, job_id, _owner(state, client))
    return JobView.of(status)


@router.post(
    "/{job_id}/cancel",
    summary="Cancel a job",
    description="No new chunk starts; images already converted are kept. Cancelling a "
    "finished job changes nothing.",
    response_model=JobView,
    responses=_errors(404),
)
async def cancel_job(job_id: str, state: StateDep, client: AuthDep) -> JobView:
    jobs = _jobs(state)
    status = await run_in_threadpool(jobs.cancel, job_id, _owner(state, client))
    return JobView.of(status)


@router.delete(
    "/{job_id}",
    status_code=204,
    summary="Delete a finished job",
    description="The job's record, its uploaded inputs and its outputs are removed (outputs "
    "written to a `destination` stay). A job still queued or running is refused with 409: "
    "cancel it first (`POST /v1/jobs/{job_id}/cancel`).",
    response_class=Response,
    responses={204: {"description": "deleted"}, **_errors(404, 409)},
)
async def delete_job(job_id: str, state: StateDep, client: AuthDep) -> Response:
    jobs = _jobs(state)
    await run_in_threadpool(jobs.delete, job_id, _owner(state, client))
    return Response(status_code=204)


@router.get(
    "/{job_id}/result",
    summary="Download a finished job's outputs",
    description=(
        "A zip of the outputs (with `errors.json` listing the failed images, and beside each "
        "translated clip `<clip>.json`: its frames, scene cuts and warping error, the input's "
        "too), or, for a job with a `destination`, the list of where each output was written."
    ),
    response_class=Response,
    responses={
        200: {
            "description": "the outputs: a zip (`errors.json` in it: a JSON list of "
            "`ZipItemError`, one per failed image), or `JobOutputs` for a job with a "
            "`destination`",
            "content": {
                "application/zip": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"$ref": "#/components/schemas/JobOutputs"}},
            },
        },
        **_errors(404, 409),
    },
)
async def get_job_result(job_id: str, state: StateDep, client: AuthDep) -> Response:
    jobs = _jobs(state)
    status = await run_in_threadpool(jobs.finished, job_id, _owner(state, client))
    written = await run_in_threadpool(jobs.store.written, job_id)
    spec = status.spec
    if spec.destination is not None:
        storage = Storage(spec.outputs)
        body = JobOutputs(
            id=spec.id,
            state=status.state.value,
            outputs=[OutputView(item=i.name, output=storage.path(i.output)) for i in written],
        )
        return JSONResponse(body.model_dump(mode="json"))
    errors = [ZipItemError(item=e.item, error=e.error) for e in status.errors]
    return StreamingResponse(
        zip_chunks(_outputs(Storage(spec.outputs), written), errors),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="job-{spec.id}.zip"'},
    )


def _outputs(storage: Storage, written: list[Item]) -> Iterator[tuple[str, bytes]]:
    """The job's outputs, read one at a time as the zip streams; a clip with its report."""
    for item in written:
        yield item.output, storage.read(item.output)
        if is_video_name(item.name):
            report = item.output + REPORT_SUFFIX
            with contextlib.suppress(FileNotFoundError):
                yield report, storage.read(report)
