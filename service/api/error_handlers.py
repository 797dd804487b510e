"""Every error the API answers is JSON ``{"error": {"code", "message"}}`` with the right status.

Domain exceptions (a rejected image, an unknown model, a full queue, a passed deadline) are
mapped to HTTP in one table here, so the embedded and the distributed modes, which raise the
same exceptions, answer the same way. Only a bug answers 500, and it never shows a traceback.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.manifest import DirectionRequiredError, ManifestError, UnknownDirectionError
from service.errors import (
    ArchiveError,
    BatcherClosed,
    BrokerUnavailable,
    DeadlineExceeded,
    ImageRejected,
    IntakeError,
    JobNotFound,
    LocationError,
    ModelIntegrityError,
    ModelNotFoundError,
    QueueFull,
    StoreError,
)

__all__ = ["ApiError", "RequestTooLarge", "install_error_handlers", "to_api_error"]

log = logging.getLogger("unpaired.api")

#: An ImageRejected code -> status; every other rejection is a 400.
IMAGE_STATUS: Final = {"too_large": 413, "unsupported_format": 415}
RETRY_AFTER_S: Final = 1


class ApiError(Exception):
    """An answer other than success, with the status, a stable code and a readable message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details


class RequestTooLarge(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(413, "too_large", message)


def _busy(code: str, message: str, status: int = 503) -> ApiError:
    return ApiError(status, code, message, headers={"Retry-After": str(RETRY_AFTER_S)})


def to_api_error(exc: Exception) -> ApiError:
    """The HTTP answer for an exception raised while serving a request."""
    match exc:
        case ApiError():
            return exc
        case ImageRejected():
            return ApiError(IMAGE_STATUS.get(exc.code, 400), exc.code, str(exc))
        case ModelNotFoundError():
            return ApiError(404, "model_not_found", str(exc))
        case UnknownDirectionError():
            return ApiError(404, "direction_not_found", str(exc))
        case DirectionRequiredError():
            return ApiError(422, "direction_required", str(exc))
        case ModelIntegrityError() | ManifestError() | StoreError():
            log.error("model store problem: %s", exc)
            return ApiError(503, "model_unavailable", f"the model cannot be served: {exc}")
        case QueueFull():
            return _busy("queue_full", f"the server is at capacity ({exc}); retry shortly")
        case BatcherClosed():
            return _busy("shutting_down", "the server is shutting down; retry shortly")
        case BrokerUnavailable():
            return _busy("broker_unavailable", f"the job queue is unreachable: {exc}")
        case JobNotFound():
            return ApiError(404, "job_not_found", str(exc))
        case LocationError():
            return ApiError(422, "invalid_location", str(exc))
        case ArchiveError() | IntakeError():
            if exc.too_large:
                return ApiError(413, "too_large", str(exc))
            return ApiError(400, "bad_archive", str(exc))
        case RedisError():
            return _busy("job_store_unavailable", f"the job store is unreachable: {exc}")
        case DeadlineExceeded() | TimeoutError():
            return ApiError(504, "deadline_exceeded", "the translation did not finish in time")
    log.exception("unexpected error while serving a request", exc_info=exc)
    return ApiError(500, "internal_error", "the server failed to handle this request")


def error_response(request: Request | None, error: ApiError) -> JSONResponse:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    state = request.scope.get("state", {}) if request else {}
    if state.get("request_id"):
        body["request_id"] = state["request_id"]
    if "log" in state:
        state["log"]["error_code"] = error.code  # for the access log line
    if error.details is not None:
        body["details"] = error.details
    return JSONResponse({"error": body}, status_code=error.status, headers=error.headers)


_HTTP_CODES: Final = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "too_large",
    415: "unsupported_media_type",
}


def install_error_handlers(app: FastAPI) -> None:
    async def on_domain_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(request, to_api_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        error = ApiError(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))
        return error_response(request, error)

    async def on_invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details = [
            {"location": [str(p) for p in e["loc"]], "message": e["msg"]} for e in exc.errors()
        ]
        summary = "; ".join(f"{'.'.join(d['location'])}: {d['message']}" for d in details)
        error = ApiError(422, "invalid_parameters", summary, details=details)
        return error_response(request, error)

    for exc_type in (
        ApiError,
        ImageRejected,
        StoreError,
        ManifestError,
        QueueFull,
        BatcherClosed,
        DeadlineExceeded,
        BrokerUnavailable,
        JobNotFound,
        LocationError,
        ArchiveError,
        IntakeError,
        RedisError,
    ):
        app.add_exception_handler(exc_type, on_domain_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_invalid)
