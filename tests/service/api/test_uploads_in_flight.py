"""Request bodies held in memory at once are bounded (UNPAIRED_MAX_INFLIGHT_BYTES): many large
uploads at once get 503 + Retry-After instead of exhausting memory before admission."""

from __future__ import annotations

import asyncio
from typing import Any

from service.api.error_handlers import UploadsInFlightFull
from service.api.metrics import Metrics
from service.api.middleware import ServiceMiddleware
from service.settings import Settings
from tests.waiting import eventually

TRANSLATE = "/v1/models/m/translate"


class HoldingApp:
    """Reads the whole body, then holds the request until `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.refused: list[Exception] = []
        self.holding: list[str] = []  # paths of the requests read and held

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            while (await receive()).get("more_body"):
                pass
        except UploadsInFlightFull as exc:
            self.refused.append(exc)
            return
        self.holding.append(scope["path"])
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def _request(
    middleware: ServiceMiddleware, path: str, size: int, *, chunked: bool = False
) -> list[dict[str, Any]]:
    headers = [] if chunked else [(b"content-length", str(size).encode())]
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    half = size // 2
    parts = [
        {"type": "http.request", "body": b"x" * half, "more_body": True},
        {"type": "http.request", "body": b"x" * (size - half), "more_body": False},
    ]

    async def receive() -> dict[str, Any]:
        if parts:
            return parts.pop(0)
        await asyncio.Event().wait()  # the client sends nothing more
        raise AssertionError("unreachable")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await middleware(scope, receive, send)
    return sent


def test_bodies_beyond_the_bytes_in_flight_get_503_and_room_comes_back() -> None:
    async def scenario() -> None:
        app = HoldingApp()
        middleware = ServiceMiddleware(
            app,
            metrics=Metrics(),
            max_inflight=100,
            max_request_bytes=1000,
            max_inflight_bytes=1500,
            body_limits={"/v1/jobs": 10_000},
        )
        first = asyncio.create_task(_request(middleware, TRANSLATE, 1000))
        await eventually(lambda: app.holding == [TRANSLATE], "the first request is held")
        assert middleware.inflight_bytes == 1000
        refused = await _request(middleware, TRANSLATE, 1000)  # declared: refused at once
        assert refused[0]["status"] == 503
        assert (b"retry-after", b"1") in refused[0]["headers"]
        chunked = asyncio.create_task(_request(middleware, TRANSLATE, 1000, chunked=True))
        await eventually(lambda: app.refused, "the chunked request is refused")
        assert len(app.refused) == 1  # refused while streaming: the handler answers 503
        assert app.refused[0].status == 503 and app.refused[0].code == "overloaded"
        await chunked
        job = asyncio.create_task(_request(middleware, "/v1/jobs", 5000))  # to disk: exempt
        await eventually(lambda: "/v1/jobs" in app.holding, "the job upload is held")
        app.release.set()
        assert (await first)[0]["status"] == 200
        assert (await job)[0]["status"] == 200
        assert middleware.inflight_bytes == 0
        assert (await _request(middleware, TRANSLATE, 1000))[0]["status"] == 200

    asyncio.run(scenario())


def test_the_default_bound_holds_a_few_of_the_largest_requests() -> None:
    settings = Settings()
    assert settings.max_inflight_bytes >= 4 * settings.max_request_bytes
