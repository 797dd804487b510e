"""Every failure a user can cause or meet, and the one table of how the service answers it.

The rooms raise these exceptions; :data:`ANSWERS` gives each its HTTP status, stable error
code and ``Retry-After``, and :func:`to_message` / :func:`from_message` carry one from a Celery
worker back to the API by name. Embedded mode raises the exception in the API process,
distributed mode raises the same type again on the API side, and both are answered from this
table, so the two modes give the same status and code for the same failure.

This module sits at the bottom of the service (beside ``settings``): every room may import it,
and it imports nothing of the service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

from redis.exceptions import RedisError

from models.manifest import DirectionRequiredError, ManifestError, UnknownDirectionError

__all__ = [
    "ANSWERS",
    "RETRY_AFTER_S",
    "Answer",
    "ArchiveError",
    "BackendUnavailableError",
    "BatcherClosed",
    "BrokerUnavailable",
    "CorruptImage",
    "DeadlineExceeded",
    "EngineError",
    "ImageRejected",
    "ImageTooLarge",
    "IntakeError",
    "JobNotFinished",
    "JobNotFound",
    "LocationError",
    "ModelIntegrityError",
    "ModelNotFoundError",
    "OverBudget",
    "QueueFull",
    "StoreError",
    "UnsupportedFormat",
    "UnsupportedMode",
    "VideoNeedsJob",
    "VideoRejected",
    "VideoTooLarge",
    "WorkDropped",
    "WorkerCrashed",
    "WorkerError",
    "answer_for",
    "from_message",
    "to_message",
]

#: Seconds a client is told to wait before retrying a busy or unreachable service.
RETRY_AFTER_S: Final = 1


# --- images (service.inference.image_io) ---------------------------------------------------


class ImageRejected(ValueError):
    """An input the service will not process; ``str(exc)`` is safe to show the user."""

    code: ClassVar[str] = "rejected"


class ImageTooLarge(ImageRejected):
    """More bytes or pixels than the image limits allow."""

    code: ClassVar[str] = "too_large"


class UnsupportedFormat(ImageRejected):
    """A real image, but in a format outside the allow-list."""

    code: ClassVar[str] = "unsupported_format"


class CorruptImage(ImageRejected):
    """Not an image, or a damaged / truncated one."""

    code: ClassVar[str] = "corrupt"


class UnsupportedMode(CorruptImage):
    """The pixels decoded, but their mode has no defined RGB meaning (see models.imaging)."""

    code: ClassVar[str] = "bad_mode"


# --- videos (service.inference.videos) --------------------------------------------------------


class VideoRejected(ImageRejected):
    """Not a readable video: damaged, truncated, no frames, a codec the decoder lacks."""

    code: ClassVar[str] = "bad_video"


class VideoTooLarge(ImageTooLarge):
    """More frames, seconds, streams or pixels per frame than the video limits allow."""


class VideoNeedsJob(UnsupportedFormat):
    """A video sent where one image is answered at once: videos are bulk jobs."""

    code: ClassVar[str] = "video_needs_job"


# --- the engine and its queue (service.inference) ------------------------------------------


class QueueFull(Exception):
    """The engine's queue already holds its maximum; try again shortly."""


class OverBudget(QueueFull):
    """The images in flight already hold this process's memory budget; try again shortly."""


class WorkDropped(RuntimeError):
    """Bulk work nobody wants any more (its job was cancelled) was dropped before it was done:
    the image is neither done nor failed, like those of the job's chunks that never started."""


class DeadlineExceeded(TimeoutError):
    """The request's deadline passed before the engine reached or finished it."""


class BatcherClosed(RuntimeError):
    """The process is shutting down and takes no new work."""


class EngineError(Exception):
    """The engine cannot run as asked (bad direction, precision, shape)."""


class BackendUnavailableError(EngineError):
    """The requested backend or device is not installed or not present on this machine."""


# --- the model store (service.store) --------------------------------------------------------


class StoreError(Exception):
    """Base for model-store errors a user can act on."""


class ModelNotFoundError(StoreError, LookupError):
    """No model (or alias) of that name in the store; the message lists what is there."""


class ModelIntegrityError(StoreError):
    """A model's files do not match its manifest (missing, truncated or modified)."""


# --- distributed mode (service.distributed) -------------------------------------------------


class BrokerUnavailable(Exception):
    """Distributed mode cannot reach its Redis right now (the request was not accepted)."""


class WorkerError(RuntimeError):
    """A worker failed on a request in a way no client input explains (a bug or a crash)."""


class WorkerCrashed(WorkerError):
    """The request took down every worker that translated it, as often as allowed
    (UNPAIRED_POISON_ATTEMPTS): it is answered instead of tried again."""


# --- bulk jobs (service.jobs) ---------------------------------------------------------------


class JobNotFound(LookupError):
    """No such job (or not the caller's)."""


class JobNotFinished(Exception):
    """The job is still queued or running: its outputs are not complete, it cannot be deleted."""


class LocationError(ValueError):
    """A source or destination outside the allowed roots, or one that does not exist."""


class _Submission(ValueError):
    """A submission that cannot become a job; ``too_large`` when a limit, not bad data."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large  # a limit, not a malformed archive: 413 rather than 400


class ArchiveError(_Submission):
    """The upload is not a readable zip or tar, or exceeds a limit as a whole."""


class IntakeError(_Submission):
    """The submission as a whole cannot become a job (too many items, nothing usable)."""


class ExampleNotFound(LookupError):
    """No example photo of that name on this server (the message lists those it has)."""


# --- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """How the API answers one kind of failure."""

    status: int
    code: str | None  # None: the exception's own ``code`` (image rejections)
    message: str = "{}"  # the user's message; ``{}`` is ``str(exc)``
    retry: bool = False  # send Retry-After: the failure passes by itself
    operator: bool = False  # log it as an error: someone running the service must look

    def code_for(self, exc: BaseException) -> str:
        return self.code or str(getattr(exc, "code", "rejected"))

    def message_for(self, exc: BaseException) -> str:
        return self.message.format(str(exc) or type(exc).__name__)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(RETRY_AFTER_S)} if self.retry else {}


_UNSERVABLE: Final = Answer(
    503, "model_unavailable", "the model cannot be served: {}", operator=True
)

#: Exception type -> answer; the most specific class of an exception's MRO that is listed wins.
ANSWERS: Final[dict[type[Exception], Answer]] = {
    ImageTooLarge: Answer(413, None),
    UnsupportedFormat: Answer(415, None),
    ImageRejected: Answer(400, None),  # corrupt, bad_mode, rejected
    ModelNotFoundError: Answer(404, "model_not_found"),
    UnknownDirectionError: Answer(404, "direction_not_found"),
    DirectionRequiredError: Answer(422, "direction_required"),
    ModelIntegrityError: _UNSERVABLE,
    ManifestError: _UNSERVABLE,
    StoreError: _UNSERVABLE,
    EngineError: _UNSERVABLE,
    OverBudget: Answer(
        503, "over_budget", "the server's memory is taken by other images ({}); retry shortly", True
    ),
    QueueFull: Answer(503, "queue_full", "the server is at capacity ({}); retry shortly", True),
    BatcherClosed: Answer(503, "shutting_down", "the server is shutting down; retry shortly", True),
    BrokerUnavailable: Answer(503, "broker_unavailable", "the job queue is unreachable: {}", True),
    JobNotFound: Answer(404, "job_not_found"),
    ExampleNotFound: Answer(404, "example_not_found"),
    JobNotFinished: Answer(409, "job_not_finished"),
    LocationError: Answer(422, "invalid_location"),
    ArchiveError: Answer(400, "bad_archive"),
    IntakeError: Answer(400, "bad_archive"),
    RedisError: Answer(503, "job_store_unavailable", "the job store is unreachable: {}", True),
    DeadlineExceeded: Answer(504, "deadline_exceeded", "the translation did not finish in time"),
    WorkerCrashed: Answer(500, "worker_crashed", operator=True),
    TimeoutError: Answer(504, "deadline_exceeded", "the translation did not finish in time"),
}
_TOO_LARGE: Final = Answer(413, "too_large")


def answer_for(exc: BaseException) -> Answer | None:
    """The table's answer for `exc`, or None for an exception no user explains (a bug: 500)."""
    for cls in type(exc).__mro__:
        answer = ANSWERS.get(cls)
        if answer is not None:
            return _TOO_LARGE if getattr(exc, "too_large", False) else answer
    return None


# --- across the queue -----------------------------------------------------------------------

#: What a worker may send back by name: the service's own failures and the manifest's, each
#: as its most specific type (third-party ones, such as a worker's lost Redis, stay local).
_BY_NAME: Final[dict[str, type[Exception]]] = {
    cls.__name__: cls
    for cls in (*list(globals().values()), DirectionRequiredError, UnknownDirectionError)
    if isinstance(cls, type)
    and issubclass(cls, Exception)
    and cls.__module__ in (__name__, ManifestError.__module__)
    and not cls.__name__.startswith("_")
}


def to_message(exc: BaseException) -> dict[str, Any] | None:
    """``{"type", "message"}`` for a failure the API answers from the table; None for a
    worker's own fault (a bug, a lost connection), which must not pass for the user's."""
    for cls in type(exc).__mro__:
        if _BY_NAME.get(cls.__name__) is cls:
            return {"type": cls.__name__, "message": str(exc)}
    return None


def from_message(error: dict[str, Any]) -> Exception:
    """The exception a worker reported, as the same type; :class:`WorkerError` if unknown."""
    cls = _BY_NAME.get(str(error.get("type")), WorkerError)
    return cls(str(error.get("message", "")))
