"""Every error the API answers is JSON ``{"error": {"code", "message"}}`` with the right status.

Domain exceptions (a rejected image, an unknown model, a full queue, a passed deadline) are
answered from the one table in :mod:`service.errors`, so the embedded and the distributed
modes, which raise the same exceptions, answer the same way. :class:`ApiError` is for what
only HTTP knows (a missing key, an unacceptable ``Accept``). Only a bug answers 500, and it
never shows a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Route, get_route_path

from models.validation import ValidationErrors, describe_validation_error, problems
from service.errors import ANSWERS, RETRY_AFTER_S, answer_for

__all__ = [
    "AllowedMethods",
    "ApiError",
    "RequestTooLarge",
    "UploadsInFlightFull",
    "install_error_handlers",
    "to_api_error",
]

log = logging.getLogger("unpaired.api")


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


class UploadsInFlightFull(ApiError):
    """The request bodies held in memory at once reached UNPAIRED_MAX_INFLIGHT_BYTES."""

    def __init__(self, message: str) -> None:
        super().__init__(503, "overloaded", message, headers={"Retry-After": str(RETRY_AFTER_S)})


def to_api_error(exc: Exception) -> ApiError:
    """The HTTP answer for an exception raised while serving a request."""
    if isinstance(exc, ApiError):
        return exc
    answer = answer_for(exc)
    if answer is None:
        log.exception("unexpected error while serving a request", exc_info=exc)
        return ApiError(500, "internal_error", "the server failed to handle this request")
    if answer.operator:
        log.error("%s: %s", type(exc).__name__, exc)
    return ApiError(
        answer.status,
        answer.code_for(exc),
        answer.message_for(exc),
        headers=answer.headers(),
    )


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


def invalid_parameters(exc: ValidationErrors) -> ApiError:
    """422 for request parameters or a body pydantic refused, each problem in ``details``."""
    details = [problem.as_detail() for problem in problems(exc)]
    return ApiError(
        422, "invalid_parameters", describe_validation_error(exc, root="body"), details=details
    )


_HTTP_CODES: Final = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "too_large",
    415: "unsupported_media_type",
}


class AllowedMethods:
    """Every method some route serves at a path, for the ``Allow`` of a 405.

    Starlette's 405 names the methods of the first route whose path matched (``POST`` where
    ``/v1/jobs`` serves GET and POST); this looks at all of them.
    """

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        self._routes = [
            (route.path_regex, sorted(route.methods))
            for route in routes
            if isinstance(route, Route) and route.methods
        ]

    def at(self, path: str) -> list[str]:
        methods: list[str] = []
        for pattern, route_methods in self._routes:
            if pattern.match(path):
                methods.extend(m for m in route_methods if m not in methods)
        return methods


def install_error_handlers(app: FastAPI, allowed: AllowedMethods | None = None) -> None:
    """JSON answers for every error; `allowed` gives a 405 its full ``Allow``."""

    async def on_domain_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(request, to_api_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        headers = dict(exc.headers or {})
        message = str(exc.detail)
        methods = allowed.at(get_route_path(request.scope)) if allowed is not None else []
        if exc.status_code == 405 and methods:
            headers["Allow"] = ", ".join(methods)
            message = f"{request.method} is not allowed here; use {' or '.join(methods)}"
        error = ApiError(exc.status_code, code, message, headers=headers)
        return error_response(request, error)

    async def on_invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        error = invalid_parameters(exc)
        return error_response(request, error)

    handled: list[type[Exception]] = [ApiError, *ANSWERS]
    for exc_type in handled:
        app.add_exception_handler(exc_type, on_domain_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_invalid)
