"""The OpenAPI document, complete enough for a client generator and a schema fuzzer.

FastAPI derives most of it from the routes. What it cannot see is added here, from the
settings the server runs with (the document describes *this* server):

- the request bodies the translate and job handlers read themselves: multipart forms that
  take ``file`` and/or ``files`` (translate: ``UNPAIRED_MAX_FILES`` images in all), ``archive``
  and/or ``files`` or, with ``UNPAIRED_JOBS_ROOTS``, a ``source`` instead (jobs), so that a
  request without images, or with a ``source`` beside uploads, is schema-invalid; the
  archive's media types; the raw image types ``UNPAIRED_IMAGE_FORMATS``
  accepts (not ``application/octet-stream``, which the API reads too: to a fuzzer it means
  any bytes, and only images are translated);
- the models those bodies and the zips refer to (``JobCreate``, ``JobOutputs``,
  ``ZipItemError``) as components, so no reference dangles;
- links from the 202 of ``POST /v1/jobs`` to the job's resources;
- the error answers: every operation documents its 4xx with :class:`ErrorResponse` (FastAPI's
  own 422 model, which the API never answers, is removed);
- a bearer security scheme when API keys are configured.

``direction`` is required by the document (query parameter, form field, JSON field): a model
with two directions needs it, and the schema cannot tell models apart. The API still accepts
it left out for a model with one direction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from service.api.job_schemas import DIRECTION_SCHEMA, JobCreate, JobOutputs
from service.api.schemas import ErrorResponse
from service.api.zips import ZipItemError
from service.settings import Settings

__all__ = [
    "ARCHIVE_TYPES",
    "COMMON_ERRORS",
    "error_responses",
    "image_media_types",
    "install_openapi",
]

_REF: Final = "#/components/schemas/{model}"
_BINARY: Final = {"type": "string", "format": "binary"}
#: A file the API reads: it refuses an empty one (400 `empty`, 415 `unsupported_archive`).
_FILE: Final = {**_BINARY, "minLength": 1}
#: What ``service.jobs.archives`` reads (compression is detected from the bytes).
ARCHIVE_TYPES: Final = (
    "application/zip",
    "application/x-tar",
    "application/gzip",
    "application/x-bzip2",
    "application/x-xz",
)
_IMAGE_TYPES: Final = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
_OUTPUT_FIELDS: Final = {
    "format": {
        "type": "string",
        "enum": ["png", "jpeg", "jpg", "webp"],
        "default": "png",
        "description": "the outputs' format",
    },
    "quality": {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 95,
        "description": "JPEG / WebP quality",
    },
}

#: The errors every ``/v1`` operation may answer.
COMMON_ERRORS: Final[dict[int, str]] = {
    401: "`unauthorized`: API keys are configured and the request has none "
    "(`Authorization: Bearer <key>`) or a wrong one",
    429: "`rate_limited`: over the per-key rate limit; see `Retry-After`",
    503: "`starting`: the server is still starting; `overloaded`: it holds "
    "`UNPAIRED_MAX_INFLIGHT` requests; see `Retry-After`",
}


def error_responses(texts: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: each status answered with :class:`ErrorResponse`."""
    return {
        status: {"model": ErrorResponse, "description": text}
        for status, text in sorted({**COMMON_ERRORS, **texts}.items())
    }


def image_media_types(settings: Settings) -> list[str]:
    """The media types of the input formats the server accepts, in a stable order."""
    return [media for name, media in _IMAGE_TYPES.items() if name in settings.image_formats]


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Serve the completed document at ``/openapi.json`` (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            complete(schema, settings)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(schema: dict[str, Any], settings: Settings) -> None:
    """Add to FastAPI's document what the routes cannot tell it (see the module's doc)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (JobOutputs, "serialization"),
        (ZipItemError, "serialization"),
    ]
    if settings.jobs_roots:
        models.append((JobCreate, "validation"))
    _add_models(components, models)
    components.update(_forms(settings))
    paths = schema["paths"]
    _drop_fastapi_validation_errors(schema)
    translate = paths["/v1/models/{name}/translate"]["post"]
    translate["requestBody"] = _translate_body(settings)
    for parameter in translate["parameters"]:
        if parameter["name"] == "direction":
            parameter["required"] = True
            parameter["schema"] = DIRECTION_SCHEMA
    submit = paths["/v1/jobs"]["post"]
    submit["requestBody"] = _job_body(settings)
    submit["responses"]["202"]["links"] = _JOB_LINKS
    if settings.api_keys:
        _add_security(schema)


def _add_models(
    components: dict[str, Any], models: Iterable[tuple[type[BaseModel], JsonSchemaMode]]
) -> None:
    _, top = models_json_schema(list(models), ref_template=_REF)
    for name, definition in top.get("$defs", {}).items():
        components.setdefault(name, definition)


def _drop_fastapi_validation_errors(schema: dict[str, Any]) -> None:
    """FastAPI documents a 422 ``HTTPValidationError`` on every route with parameters; this
    API answers its own :class:`ErrorResponse`, declared by the routes that can fail so."""
    ref = _REF.format(model="HTTPValidationError")
    for operations in schema["paths"].values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            for status, response in list(responses.items()):
                content = response.get("content", {}).get("application/json", {})
                if content.get("schema", {}).get("$ref") == ref:
                    del responses[status]
    components = schema["components"]["schemas"]
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)


def _one_of(*branches: dict[str, Any]) -> dict[str, Any]:
    """``allOf: [oneOf: branches]``: the body matches exactly one of the branches (or
    ``allOf: [branch]`` for one).

    (Nested in ``allOf`` so that client generators, which turn a top-level ``oneOf`` into a
    union of models without a multipart encoder, keep one model.)
    """
    return {"allOf": [{"oneOf": list(branches)} if len(branches) > 1 else branches[0]]}


def _some_files(**others: Any) -> dict[str, Any]:
    """A branch: at least one part in ``files`` (an empty list sends no part at all), and
    `others` (keywords of the branch)."""
    return {"required": ["files"], "properties": {"files": {"minItems": 1}}, **others}


#: Several files, each one item: one that is empty or unreadable is a failed item, not a
#: refused request. No ``minItems`` here (beside another input, an empty list is nothing on the
#: wire); the branches that need a file say so.
_FILES: Final = {"type": "array", "items": _BINARY}


def _forms(settings: Settings) -> dict[str, Any]:
    """The multipart bodies as named components (a generated client names its classes so)."""
    job: dict[str, Any] = {
        "model": {
            "type": "string",
            "description": "model name or alias",
            "examples": ["day2night"],
        },
        "direction": DIRECTION_SCHEMA,
        **_OUTPUT_FIELDS,
        "archive": {
            **_FILE,
            "description": "a zip or tar of images (optionally gzip, bzip2 or xz compressed); "
            "its members are items of the job, beside any `files`",
        },
        "files": {
            **_FILES,
            "maxItems": settings.max_job_items,
            "description": "images, each one item of the job (beside the `archive`'s "
            "members, if any; a name given twice is one failed item)",
        },
    }
    uploads: dict[str, Any] = {"anyOf": [{"required": ["archive"]}, _some_files()]}
    branches = [uploads]
    if settings.jobs_roots:
        job["source"] = {
            "type": "string",
            "minLength": 1,
            "description": "a folder inside UNPAIRED_JOBS_ROOTS whose images (recursively) "
            "the job converts in place",
        }
        job["destination"] = {
            "type": "string",
            "description": "where outputs go (inside UNPAIRED_JOBS_ROOTS); default: the "
            "job's folder, downloadable as a zip",
        }
        branches.append({"required": ["source"]})
    images = ", ".join(image_media_types(settings))
    most = settings.max_files
    inputs = "an `archive` and/or `files`" + (", or a `source`" if settings.jobs_roots else "")
    return {
        "JobUpload": {
            "title": "JobUpload",
            "description": "A bulk job's form: the model, the direction, the output format "
            f"and the images: {inputs}.",
            "type": "object",
            "properties": job,
            "required": ["model", "direction"],
            "additionalProperties": False,
            **_one_of(*branches),
        },
        "TranslateUpload": {
            "title": "TranslateUpload",
            "description": f"`file` and/or `files`, each an image ({images}); at most {most} "
            "(UNPAIRED_MAX_FILES) in all. `file` alone is answered with an image; with "
            "`files`, the answer is a zip of every image's output (`file` first).",
            "type": "object",
            "properties": {
                "file": {**_FILE, "description": "one image"},
                "files": {
                    **_FILES,
                    "maxItems": most,
                    "description": f"images ({most - 1} at most beside a `file`); the answer is "
                    "a zip (an input that is not a readable image is listed in its "
                    "`errors.json`)",
                },
            },
            "additionalProperties": False,
            # `file` and up to UNPAIRED_MAX_FILES - 1 `files`, or `files` alone. ("Alone" is
            # `maxProperties`: a `false` or `not` schema for `file` says it too, but
            # openapi-python-client refuses `false` and schemathesis's coverage phase fails on
            # `not` beside binary values.)
            **_one_of(
                {"required": ["file"], "properties": {"files": {"maxItems": most - 1}}},
                _some_files(maxProperties=1),
            ),
        },
    }


def _translate_body(settings: Settings) -> dict[str, Any]:
    return {
        "required": True,
        "description": "The image as the raw body with its media type (the API also takes "
        "`application/octet-stream` and reads the format from the bytes), or "
        "multipart/form-data (`TranslateUpload`) with a `file` (answered with an image) "
        "and/or `files` (answered with a zip).",
        "content": {
            "multipart/form-data": {"schema": {"$ref": _REF.format(model="TranslateUpload")}},
            **{media: {"schema": _FILE} for media in image_media_types(settings)},
        },
    }


def _job_body(settings: Settings) -> dict[str, Any]:
    content: dict[str, Any] = {
        "multipart/form-data": {
            "schema": {"$ref": _REF.format(model="JobUpload")},
            "encoding": {"archive": {"contentType": ", ".join(ARCHIVE_TYPES)}},
        }
    }
    text = (
        "multipart/form-data (`JobUpload`): `model`, `direction` (and `format`, `quality`) "
        "and the images as an `archive` (zip or tar, optionally gzip/bzip2/xz-compressed) "
        "and/or `files`"
    )
    if settings.jobs_roots:
        content["application/json"] = {"schema": {"$ref": _REF.format(model="JobCreate")}}
        text += (
            ", or a `source` folder; or JSON (`JobCreate`) naming a `source` folder and an "
            "optional `destination`"
        )
    return {"required": True, "description": text + ".", "content": content}


_JOB_ID: Final = {"job_id": "$response.body#/id"}
_JOB_LINKS: Final = {
    "GetJob": {
        "operationId": "get_job",
        "parameters": _JOB_ID,
        "description": "the job's state and progress (`id` of this answer)",
    },
    "CancelJob": {
        "operationId": "cancel_job",
        "parameters": _JOB_ID,
        "description": "cancel the job",
    },
    "DeleteJob": {
        "operationId": "delete_job",
        "parameters": _JOB_ID,
        "description": "delete the job once it has ended",
    },
    "GetJobResult": {
        "operationId": "get_job_result",
        "parameters": _JOB_ID,
        "description": "the outputs, once the job has finished",
    },
}


def _add_security(schema: dict[str, Any]) -> None:
    """With API keys, every operation that can answer 401 needs ``Authorization: Bearer``."""
    schemes = schema["components"].setdefault("securitySchemes", {})
    schemes["ApiKey"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "one of UNPAIRED_API_KEYS",
    }
    for operations in schema["paths"].values():
        for operation in operations.values():
            if "401" in operation.get("responses", {}):
                operation["security"] = [{"ApiKey": []}]
