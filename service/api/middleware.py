"""What every request goes through: request id, limits, metrics and the access log.

A plain ASGI middleware (no per-request task or body copy): it

- takes the client's ``X-Request-ID`` (if it is a sane token) or makes one, and returns it on
  every response;
- refuses a request at once (JSON 503 with ``Retry-After``) when ``max_inflight`` requests are
  already being handled, so a burst costs bounded memory;
- refuses a body larger than ``max_request_bytes``: from ``Content-Length`` before reading,
  and while streaming for chunked uploads (the request handler sees :class:`RequestTooLarge`);
- refuses a body (503 ``overloaded``, ``Retry-After``) when the bodies held in memory at once
  would exceed ``max_inflight_bytes``, so many large uploads at once cannot exhaust memory
  before their images reach the memory budget (job uploads, which go to disk, are exempt);
- counts requests and latencies by route template, and writes one JSON access-log line with
  the fields the handlers recorded in ``scope["state"]["log"]``.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.error_handlers import RequestTooLarge, UploadsInFlightFull
from service.api.metrics import Metrics
from service.errors import RETRY_AFTER_S

__all__ = ["ServiceMiddleware"]

access_log = logging.getLogger("unpaired.access")

_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: Probes and scrapes must answer even when the server is saturated.
_UNLIMITED: Final = frozenset({"/healthz", "/readyz", "/metrics"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class ServiceMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_inflight: int,
        max_request_bytes: int,
        max_inflight_bytes: int | None = None,
        body_limits: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_inflight = max_inflight
        self.max_request_bytes = max_request_bytes
        self.body_limits = body_limits or {}  # exact path -> its own limit (job uploads)
        self.max_inflight_bytes = max_inflight_bytes
        self.inflight = 0
        self.inflight_bytes = 0  # of bodies in memory (paths with their own limit exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = _header(scope, b"x-request-id")
        request_id = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        fields: dict[str, Any] = {}
        state["log"] = fields
        status = 500
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        limited = scope["path"] not in _UNLIMITED
        held = _Held(counted=scope["path"] not in self.body_limits)
        self.inflight += 1
        self.metrics.in_flight.inc()
        try:
            limit = self.body_limits.get(scope["path"], self.max_request_bytes)
            refusal = self._refusal(scope, limited, limit)
            if refusal is not None:
                status, code, message, extra = refusal
                await _send_json(send_with_id, status, code, message, request_id, extra)
            else:
                receiving = self._limited_receive(receive, limit, held)
                await self.app(scope, receiving, send_with_id)
        finally:
            self.inflight_bytes -= held.bytes
            self.inflight -= 1
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.latency.labels(template).observe(seconds)
            access_log.info(
                "%s %s %d",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "client": (scope.get("client") or ("", 0))[0],
                    **fields,
                },
            )

    def _refusal(
        self, scope: Scope, limited: bool, limit: int
    ) -> tuple[int, str, str, list[tuple[bytes, bytes]]] | None:
        if limited and self.inflight > self.max_inflight:
            return (
                503,
                "overloaded",
                f"the server is handling {self.max_inflight} requests; retry shortly",
                _RETRY,
            )
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return (
                413,
                "too_large",
                f"the request body is {length} bytes; the limit is {limit}",
                [(b"connection", b"close")],
            )
        counted = scope["path"] not in self.body_limits
        if counted and length is not None and length.isdigit() and self._over(int(length)):
            return (503, "overloaded", self._bytes_message(), _RETRY)
        return None

    def _over(self, more: int) -> bool:
        cap = self.max_inflight_bytes
        return cap is not None and self.inflight_bytes + more > cap

    def _bytes_message(self) -> str:
        return (
            f"the server holds {self.inflight_bytes} bytes of uploads (the limit is "
            f"{self.max_inflight_bytes}); retry shortly"
        )

    def _limited_receive(self, receive: Receive, limit: int, held: _Held) -> Receive:
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                received += size
                if received > limit:
                    raise RequestTooLarge(f"the request body is over the limit of {limit} bytes")
                if held.counted:
                    if self._over(size):
                        raise UploadsInFlightFull(self._bytes_message())
                    held.bytes += size
                    self.inflight_bytes += size
            return message

        return limited_receive


@dataclass
class _Held:
    """One request's body bytes counted against ``max_inflight_bytes``."""

    counted: bool
    bytes: int = 0


_RETRY: Final = [(b"retry-after", str(RETRY_AFTER_S).encode())]


async def _send_json(
    send: Send,
    status: int,
    code: str,
    message: str,
    request_id: str,
    extra_headers: list[tuple[bytes, bytes]],
) -> None:
    body = json.dumps(
        {"error": {"code": code, "message": message, "request_id": request_id}}
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
