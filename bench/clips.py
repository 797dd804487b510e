"""Clips with known content, written with PyAV: a camera panning and zooming over a photo, and
any frames a caller renders, with variable timestamps, a rotation and an audio track on
request. The video benchmark and the tests make their inputs here (nothing is downloaded)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction

import av
import cv2
import numpy as np

__all__ = ["pan_frames", "write_clip"]

_TIME_BASE = Fraction(1, 1000)


def pan_frames(
    photo: np.ndarray,
    count: int,
    side: int,
    *,
    step: float = 1.7,
    zoom: float = 0.0,
) -> Iterator[np.ndarray]:
    """`count` square frames of `side` pixels: a window moving `step` pixels per frame
    (sub-pixel, bilinear) diagonally across `photo`, zooming in by `zoom` per frame (0.002: 0.2 %).
    """
    height, width = photo.shape[:2]
    for i in range(count):
        scale = 1.0 + zoom * i
        x, y = 0.1 * width + step * i, 0.1 * height + 0.5 * step * i
        matrix = np.array([[scale, 0, -x * scale], [0, scale, -y * scale]], dtype=np.float32)
        yield cv2.warpAffine(photo, matrix, (side, side), flags=cv2.INTER_LINEAR)


def write_clip(
    path: str,
    frames: Iterable[np.ndarray],
    *,
    fps: int = 24,
    times_ms: Sequence[int] | None = None,
    rotation: int = 0,
    audio_seconds: float = 0.0,
    crf: int = 12,
) -> int:
    """Write uint8 RGB `frames` as H.264 in MP4 (or the container `path`'s suffix names) at
    `times_ms` (variable frame rate) or `fps`; with an AAC track of `audio_seconds` (a tone)
    and a display rotation when asked. Returns the frames written."""
    output = av.open(path, "w")
    video = None
    audio = output.add_stream("aac", rate=22050) if audio_seconds > 0 else None
    written = 0
    for i, rgb in enumerate(frames):
        if video is None:
            video = output.add_stream("libx264", rate=fps)
            video.height, video.width = rgb.shape[:2]
            video.pix_fmt = "yuv420p"
            video.codec_context.time_base = _TIME_BASE
            video.options = {"crf": str(crf)}
            if rotation:
                video.set_display_rotation(rotation)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = times_ms[i] if times_ms is not None else round(i * 1000 / fps)
        frame.time_base = _TIME_BASE
        output.mux(video.encode(frame))
        written += 1
    if video is not None:
        output.mux(video.encode(None))
    if audio is not None:
        samples = int(audio_seconds * 22050)
        tone = 0.2 * np.sin(np.arange(samples, dtype=np.float32) * 2 * np.pi * 440 / 22050)
        for start in range(0, samples, 1024):
            chunk = av.AudioFrame.from_ndarray(
                tone[None, start : start + 1024].copy(), format="fltp", layout="mono"
            )
            chunk.sample_rate = 22050
            chunk.pts = start
            output.mux(audio.encode(chunk))
        output.mux(audio.encode(None))
    output.close()
    return written
