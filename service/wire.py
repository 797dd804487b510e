"""What travels between the API and the workers through Redis: names, payloads, errors.

A task's payload carries the image inline when it is small and by reference (a blob key with a
TTL) when it is over ``blob_threshold_bytes``, so large images never sit inside queue messages;
replies do the same. Expected failures (a rejected image, an unknown model, a passed deadline)
come back as an ``error`` reply naming the exception, and the API raises the same exception
type the embedded mode would, so both modes answer the same HTTP error.
"""

from __future__ import annotations

from typing import Any, Final, Literal, NoReturn

from models.manifest import DirectionRequiredError, UnknownDirectionError

from .batching import DeadlineExceeded, QueueFull
from .imaging import CorruptImage, ImageRejected, ImageTooLarge, UnsupportedFormat, UnsupportedMode
from .store import ModelNotFoundError
from .translation import OutputSpec, TranslationRequest

__all__ = [
    "BLOB_PREFIX",
    "TRANSLATE_TASK",
    "WorkerError",
    "blob_key",
    "error_reply",
    "raise_error_reply",
    "request_from_payload",
    "request_payload",
]

TRANSLATE_TASK: Final = "unpaired.translate"
BLOB_PREFIX: Final = "unpaired:blob:"

_ERRORS: Final[dict[str, type[Exception]]] = {
    cls.__name__: cls
    for cls in (
        ImageTooLarge,
        UnsupportedFormat,
        UnsupportedMode,
        CorruptImage,
        ImageRejected,
        ModelNotFoundError,
        UnknownDirectionError,
        DirectionRequiredError,
        DeadlineExceeded,
        QueueFull,
    )
}


class WorkerError(RuntimeError):
    """A worker failed on a request in a way no client input explains (a bug or a crash)."""


def blob_key(task_id: str, kind: Literal["in", "out"]) -> str:
    return f"{BLOB_PREFIX}{task_id}:{kind}"


def request_payload(request: TranslationRequest, image: dict[str, Any]) -> dict[str, Any]:
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


def error_reply(exc: Exception) -> dict[str, Any] | None:
    """The reply for an expected failure, or None for one that is a worker's own fault."""
    for cls in type(exc).__mro__:
        if _ERRORS.get(cls.__name__) is cls:
            return {"ok": False, "error": {"type": cls.__name__, "message": str(exc)}}
    return None


def raise_error_reply(reply: dict[str, Any]) -> NoReturn:
    error = reply["error"]
    raise _ERRORS.get(error["type"], WorkerError)(error["message"])
