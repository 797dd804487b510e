"""What one translation is: the request, how its answer is encoded, the answer, and the
:class:`Translator` protocol every mode implements.

Both modes take and return these: :class:`~service.inference.local_translator.LocalTranslator`
runs a request in this process (embedded mode, and inside every worker), and
:class:`~service.distributed.remote_translator.RemoteTranslator` sends it to a worker through
Redis (distributed mode). Nothing here imports an engine or torch, so an API process that only
forwards requests stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from service.inference import image_io

__all__ = ["OutputSpec", "Readiness", "Translated", "TranslationRequest", "Translator"]


@dataclass(frozen=True, kw_only=True)
class OutputSpec:
    """How the translated image is encoded; the format is normalised (jpg -> jpeg)."""

    format: str = "png"
    quality: int = 95

    def __post_init__(self) -> None:
        object.__setattr__(self, "format", image_io.output_format(self.format))
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in [1, 100], got {self.quality}")

    @property
    def media_type(self) -> str:
        return image_io.MEDIA_TYPES[self.format]

    @property
    def suffix(self) -> str:
        return ".jpg" if self.format == "jpeg" else f".{self.format}"


@dataclass(frozen=True, kw_only=True)
class TranslationRequest:
    model: str  # canonical name (aliases are resolved before)
    direction: str
    data: bytes = field(repr=False)
    output: OutputSpec
    deadline: float  # time.time() after which nobody waits for the answer
    name: str = "<upload>"
    request_id: str = ""


@dataclass(frozen=True, kw_only=True)
class Translated:
    data: bytes = field(repr=False)
    media_type: str
    width: int
    height: int
    batch_size: int
    queue_seconds: float
    engine_seconds: float
    worker: str | None = None  # the Celery worker that ran it (distributed mode)

    def to_payload(self) -> dict[str, Any]:
        """Everything but the image bytes (which may travel apart, as a blob)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "data"}

    @classmethod
    def from_payload(cls, data: bytes, payload: dict[str, Any]) -> Translated:
        return cls(data=data, **{f.name: payload[f.name] for f in fields(cls) if f.name != "data"})


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: dict[str, Any]


class Translator(Protocol):
    """What the API needs from a mode (embedded or distributed)."""

    mode: str

    async def translate(self, request: TranslationRequest) -> Translated: ...

    async def readiness(self) -> Readiness: ...

    async def queue_depth(self) -> int: ...

    async def close(self) -> None: ...
