"""What travels between the API and the workers through Redis: task names, payloads, replies.

Image bytes cross in one way only (:class:`ImageCarrier`): inline in the message when small,
under a key of their own with a TTL when larger than ``blob_threshold_bytes``, so large images
never sit inside queue messages. A failure the user can explain (a rejected image, an unknown
model, a passed deadline) comes back as an ``error`` reply naming its type
(:func:`service.errors.to_message`), and the API raises that type again, so both modes answer
from the same table in :mod:`service.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, NoReturn

import redis
import redis.asyncio as aioredis

from service.errors import DeadlineExceeded, from_message, to_message
from service.inference.requests import OutputSpec, Translated, TranslationRequest

__all__ = [
    "BLOB_PREFIX",
    "BULK_TASK",
    "CANCEL_PREFIX",
    "TRANSLATE_TASK",
    "ImageCarrier",
    "cancel_key",
    "deadline_reply",
    "error_reply",
    "raise_error_reply",
    "request_from_payload",
    "request_payload",
    "success_reply",
]

TRANSLATE_TASK: Final = "unpaired.translate"  # one interactive request
BULK_TASK: Final = "unpaired.bulk_chunk"  # one chunk of a bulk job: (job id, chunk index)
BLOB_PREFIX: Final = "unpaired:blob:"
CANCEL_PREFIX: Final = "unpaired:cancelled:"


def cancel_key(task_id: str) -> str:
    """Set by the API when nobody waits for a request any more (its client hung up); the
    worker running it drops the work left (a large image's remaining tiles)."""
    return f"{CANCEL_PREFIX}{task_id}"


ImageRef = dict[str, Any]  # {"data": bytes} or {"blob": key}


@dataclass(frozen=True)
class ImageCarrier:
    """Image bytes in a message: inline up to `threshold` bytes, else a Redis blob with a TTL.

    The API carries requests' inputs (``kind="in"``), the workers their outputs (``"out"``);
    the sync methods serve worker threads, the async ones the API's event loop.
    """

    threshold: int

    @staticmethod
    def key(task_id: str, kind: Literal["in", "out"]) -> str:
        return f"{BLOB_PREFIX}{task_id}:{kind}"

    def _inline(self, data: bytes) -> bool:
        return len(data) <= self.threshold

    def put(
        self, client: redis.Redis, task_id: str, kind: Literal["in", "out"], data: bytes, ttl: int
    ) -> ImageRef:
        if self._inline(data):
            return {"data": data}
        key = self.key(task_id, kind)
        client.set(key, data, ex=max(1, ttl))
        return {"blob": key}

    async def put_async(
        self,
        client: aioredis.Redis,
        task_id: str,
        kind: Literal["in", "out"],
        data: bytes,
        ttl: int,
    ) -> ImageRef:
        if self._inline(data):
            return {"data": data}
        key = self.key(task_id, kind)
        await client.set(key, data, ex=max(1, ttl))
        return {"blob": key}

    @staticmethod
    def get(client: redis.Redis, ref: ImageRef) -> bytes | None:
        """The bytes; None when the blob has expired (nobody waits for them any more)."""
        data = ref.get("data")
        if data is not None:
            return bytes(data)
        return _as_bytes(client.get(ref["blob"]))

    @staticmethod
    async def take_async(client: aioredis.Redis, ref: ImageRef) -> bytes | None:
        """The bytes, deleting their blob (read once); None when it has expired."""
        data = ref.get("data")
        if data is not None:
            return bytes(data)
        return _as_bytes(await client.getdel(ref["blob"]))

    @staticmethod
    async def discard_async(client: aioredis.Redis, ref: ImageRef) -> None:
        if "blob" in ref:
            await client.delete(ref["blob"])


def _as_bytes(value: object) -> bytes | None:
    """A Redis reply as bytes (clients here never decode responses)."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"expected bytes from Redis, got {type(value).__name__}")


# --- requests -------------------------------------------------------------------------------


def request_payload(request: TranslationRequest, image: ImageRef) -> dict[str, Any]:
    """The task's one argument; `image` is ``{"data": bytes}`` or ``{"blob": key}``."""
    return {
        "model": request.model,
        "direction": request.direction,
        "image": image,
        "name": request.name,
        "format": request.output.format,
        "quality": request.output.quality,
        "deadline": request.deadline,
        "request_id": request.request_id,
    }


def request_from_payload(payload: dict[str, Any], data: bytes) -> TranslationRequest:
    return TranslationRequest(
        model=payload["model"],
        direction=payload["direction"],
        data=data,
        output=OutputSpec(format=payload["format"], quality=payload["quality"]),
        deadline=payload["deadline"],
        name=payload["name"],
        request_id=payload["request_id"],
    )


# --- replies --------------------------------------------------------------------------------


def success_reply(result: Translated, image: ImageRef) -> dict[str, Any]:
    return {"ok": True, "image": image, **result.to_payload()}


def error_reply(exc: BaseException) -> dict[str, Any] | None:
    """The reply for a failure the user can explain, or None for a worker's own fault."""
    error = to_message(exc)
    return None if error is None else {"ok": False, "error": error}


def deadline_reply() -> dict[str, Any]:
    """The reply for a request whose deadline passed before a worker took it."""
    return {"ok": False, "error": to_message(DeadlineExceeded("the deadline passed in the queue"))}


def raise_error_reply(reply: dict[str, Any]) -> NoReturn:
    """Raise the failure an ``ok: false`` reply reports, as the worker's exception type."""
    raise from_message(reply["error"])
