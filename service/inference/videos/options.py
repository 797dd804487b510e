"""What a clip may hold and how it is translated: plain values, no codec loaded (the API
process reads them without PyAV or OpenCV)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from service.settings import Settings

__all__ = ["TemporalMode", "TemporalOptions", "VideoLimits", "VideoOptions", "video_options"]

TemporalMode = Literal["blend", "none"]


@dataclass(frozen=True)
class VideoLimits:
    """What a clip may hold (settings ``video_max_*``); each is checked on what the container
    declares before decoding, and again on what is decoded (a header may lie)."""

    max_frames: int = 18_000
    max_seconds: float = 600.0
    max_streams: int = 16
    max_pixels: int = 3840 * 2160  # per frame
    stall_s: float = 300.0  # no frame decoded for this long: the decoder hangs

    @classmethod
    def from_settings(cls, settings: Settings) -> VideoLimits:
        return cls(
            max_frames=settings.video_max_frames,
            max_seconds=settings.video_max_seconds,
            max_streams=settings.video_max_streams,
            max_pixels=settings.video_max_pixels,
            stall_s=settings.video_stall_s,
        )


@dataclass(frozen=True)
class TemporalOptions:
    mode: TemporalMode = "blend"
    strength: float = 0.6  # weight of the previous output where it is visible, [0, 1)
    cut_share: float = 0.4  # a frame less visible in its predecessor than this starts a scene

    def __post_init__(self) -> None:
        if self.mode not in ("blend", "none"):
            raise ValueError(f"temporal mode must be blend or none, got {self.mode!r}")
        if not 0.0 <= self.strength < 1.0:
            raise ValueError(f"temporal strength must be in [0, 1), got {self.strength}")
        if not 0.0 <= self.cut_share <= 1.0:
            raise ValueError(f"cut share must be in [0, 1], got {self.cut_share}")


@dataclass(frozen=True)
class VideoOptions:
    temporal: TemporalOptions = field(default_factory=TemporalOptions)
    container: str = "mp4"
    crf: int = 18  # libx264's constant quality: 18 is visually lossless for most content
    batch: int = 8  # frames per call of the translator


def video_options(
    settings: Settings,
    *,
    temporal: str | None = None,
    strength: float | None = None,
    container: str | None = None,
    crf: int | None = None,
    batch: int | None = None,
) -> VideoOptions:
    """The settings' video options (``temporal``, ``temporal_strength``, ``video_container``,
    ``video_crf``, ``max_batch``), each overridable (a CLI flag; None keeps the setting)."""
    mode = settings.temporal if temporal is None else temporal
    if mode not in ("blend", "none"):
        raise ValueError(f"temporal must be blend or none, got {mode!r}")
    return VideoOptions(
        temporal=TemporalOptions(
            mode="blend" if mode == "blend" else "none",
            strength=settings.temporal_strength if strength is None else strength,
        ),
        container=settings.video_container if container is None else container,
        crf=settings.video_crf if crf is None else crf,
        batch=settings.max_batch if batch is None else batch,
    )
