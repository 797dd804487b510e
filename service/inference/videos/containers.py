"""Reading and writing clips with PyAV (FFmpeg's libraries, shipped in its wheel): streamed,
one frame at a time, with every limit checked before the work it guards.

The reader yields decoded video frames (RGB, with their timestamps) and the audio packets
between them, in file order; the writer encodes frames at exactly the timestamps given
(variable frame rate stays variable), copies audio packets untouched, and writes the input's
rotation into the output's display matrix. Nothing is held beyond the frame in hand.

Written: H.264 (libx264) in MP4 (default), MOV or Matroska (.mkv); 4:2:0 chroma, or 4:4:4 for
odd sides (4:2:0 needs even ones).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

import av
import av.error
import numpy as np

from service import failpoints
from service.errors import VideoRejected, VideoTooLarge
from service.inference.videos.options import VideoLimits

__all__ = [
    "CONTAINERS",
    "ClipInfo",
    "ClipReader",
    "ClipWriter",
    "Frame",
    "VideoLimits",
]

log = logging.getLogger(__name__)

#: Output suffix -> FFmpeg muxer.
CONTAINERS: Final = {"mp4": "mp4", "mov": "mov", "mkv": "matroska"}

_CODEC: Final = "libx264"

#: Errors PyAV raises for a file that is not (or no longer) a readable clip.
_READ_ERRORS: Final = (av.error.FFmpegError, ValueError, IndexError, EOFError)


@dataclass(frozen=True)
class ClipInfo:
    """What the container says about its video stream."""

    width: int
    height: int
    frames: int  # declared; 0 when the container does not say
    seconds: float | None  # declared duration
    rate: Fraction | None  # average frame rate
    codec: str
    time_base: Fraction
    audio_streams: int


@dataclass(frozen=True)
class Frame:
    """One decoded frame: pixels as stored (rotation is metadata), and when it is shown."""

    index: int
    rgb: np.ndarray  # uint8 (H, W, 3)
    pts: int
    time_base: Fraction
    rotation: int  # degrees, as the frame's display matrix gives it

    @property
    def seconds(self) -> float:
        return float(self.pts * self.time_base)


class ClipReader:
    """A clip opened for streaming; use as a context manager."""

    def __init__(self, path: str, limits: VideoLimits, *, name: str | None = None) -> None:
        self.name = name or path
        self.limits = limits
        self._abandoned = False
        try:
            self.container = av.open(path, metadata_errors="ignore")
        except _READ_ERRORS as exc:
            raise VideoRejected(f"{self.name}: not a readable video ({_reason(exc)})") from exc
        try:
            self._check_streams()
        except BaseException:
            self.container.close()
            raise

    def _check_streams(self) -> None:
        streams = self.container.streams
        if len(streams) > self.limits.max_streams:
            raise VideoTooLarge(
                f"{self.name}: {len(streams)} streams; the limit is {self.limits.max_streams}"
            )
        if not streams.video:
            raise VideoRejected(f"{self.name}: the file holds no video stream")
        self.video = streams.video[0]
        context = self.video.codec_context
        if context is None or not context.codec.is_decoder:
            raise VideoRejected(f"{self.name}: no decoder for the video codec here")
        self.audio = list(streams.audio)
        width, height = context.width, context.height
        if width * height > self.limits.max_pixels:
            raise VideoTooLarge(
                f"{self.name}: frames are {width}x{height} = {width * height} pixels; the "
                f"limit is {self.limits.max_pixels} pixels per frame"
            )
        frames, seconds = self.video.frames, _declared_seconds(self.video, self.container)
        if frames > self.limits.max_frames:
            raise VideoTooLarge(
                f"{self.name}: {frames} frames; the limit is {self.limits.max_frames} frames"
            )
        if seconds is not None and seconds > self.limits.max_seconds:
            raise VideoTooLarge(
                f"{self.name}: {seconds:.1f} s long; the limit is {self.limits.max_seconds:g} s"
            )
        self.info = ClipInfo(
            width=width,
            height=height,
            frames=frames,
            seconds=seconds,
            rate=self.video.average_rate,
            codec=context.codec.name,
            time_base=self.video.time_base or Fraction(1, 90_000),
            audio_streams=len(self.audio),
        )

    def __enter__(self) -> ClipReader:
        return self

    def __exit__(self, *_: object) -> None:
        if not self._abandoned:
            self.container.close()

    def abandon(self) -> None:
        """A thread is stuck inside the demuxer or decoder: closing the container under it
        could crash the process, so it is left as it is (a restart reclaims it)."""
        self._abandoned = True
        log.error("%s: a decoding thread is stuck; its clip's container is left open", self.name)

    def read(self) -> Iterator[Frame | av.Packet]:
        """Video frames and audio packets in file order; the limits hold on what decodes."""
        index = 0
        size: tuple[int, int] | None = None
        last_pts: int | None = None
        last_seconds: float | None = None
        try:
            for packet in self.container.demux(self.video, *self.audio):
                if packet.stream.type == "audio":
                    if (
                        packet.dts is not None
                    ):  # FFmpeg's demuxer ends each stream with an empty one
                        yield packet
                    continue
                for decoded in packet.decode():
                    if not isinstance(decoded, av.VideoFrame):
                        continue
                    if size is None:
                        size = (decoded.width, decoded.height)
                    elif (decoded.width, decoded.height) != size:
                        raise VideoRejected(
                            f"{self.name}: the frame size changes at frame {index} "
                            f"({size[0]}x{size[1]} -> {decoded.width}x{decoded.height})"
                        )
                    failpoints.hit("decode", (f"{self.name}#frame{index}",))
                    frame = self._frame(decoded, index, last_pts)
                    last_pts, last_seconds = frame.pts, frame.seconds
                    yield frame
                    index += 1
        except (VideoRejected, VideoTooLarge):
            raise  # a limit or a rule found while decoding: said as it is
        except _READ_ERRORS as exc:
            raise VideoRejected(
                f"{self.name}: the video is damaged at frame {index} ({_reason(exc)})"
            ) from exc
        if index == 0:
            raise VideoRejected(f"{self.name}: the clip has no frames")
        if self.info.frames and index < self.info.frames:
            raise VideoRejected(
                f"{self.name}: truncated: {self.info.frames} frames declared, {index} decoded"
            )
        self._check_length(index, last_seconds)

    def _check_length(self, frames: int, last_seconds: float | None) -> None:
        """A container that declares no frame count (Matroska) but a duration: the last frame
        must come within two frame periods of its end, or the file was cut short."""
        if self.info.frames or self.info.seconds is None or last_seconds is None:
            return
        if self.audio and self.video.duration is None:
            return  # the container's duration may be the audio's, longer than the picture
        period = float(1 / self.info.rate) if self.info.rate else 0.04
        shown_until = last_seconds + period
        start = float((self.video.start_time or 0) * self.info.time_base)
        if shown_until + 2 * period < self.info.seconds + start:
            raise VideoRejected(
                f"{self.name}: truncated: {self.info.seconds:.2f} s declared, frames end at "
                f"{shown_until - start:.2f} s ({frames} decoded)"
            )

    def _frame(self, decoded: av.VideoFrame, index: int, last_pts: int | None) -> Frame:
        if index >= self.limits.max_frames:
            raise VideoTooLarge(
                f"{self.name}: more than {self.limits.max_frames} frames (the limit)"
            )
        if decoded.width * decoded.height > self.limits.max_pixels:
            raise VideoTooLarge(
                f"{self.name}: frames are {decoded.width}x{decoded.height}; the limit is "
                f"{self.limits.max_pixels} pixels per frame"
            )
        time_base = decoded.time_base or self.info.time_base
        pts = decoded.pts if decoded.pts is not None else decoded.best_effort_timestamp
        if pts is None or (last_pts is not None and pts <= last_pts):
            # no timestamp, or one out of order: one frame period after the last
            step = _frame_period(self.info.rate, time_base)
            pts = (last_pts + step) if last_pts is not None else 0
        if float(pts * time_base) > self.limits.max_seconds:
            raise VideoTooLarge(
                f"{self.name}: longer than {self.limits.max_seconds:g} s (the limit)"
            )
        rgb = decoded.to_ndarray(format="rgb24")
        return Frame(index, rgb, int(pts), time_base, int(decoded.rotation or 0))


class ClipWriter:
    """An output clip; frames must come in display order. Use as a context manager: it is
    finished (encoder flushed, index written) only when the block ends without an error."""

    def __init__(
        self,
        path: str,
        info: ClipInfo,
        audio: list[Any],
        *,
        rotation: int = 0,
        container: str = "mp4",
        crf: int = 18,
        preset: str = "fast",
        name: str | None = None,
    ) -> None:
        if container not in CONTAINERS:
            raise ValueError(f"container must be one of {', '.join(CONTAINERS)}, got {container}")
        self.name = name or path
        self._container = container
        # AAC's priming samples start before 0: by default FFmpeg shifts every stream of a
        # Matroska file to make them non-negative (each frame shown ~46 ms late); kept as is
        self.output = av.open(
            path,
            mode="w",
            format=CONTAINERS[container],
            options={"avoid_negative_ts": "disabled"} if container == "mkv" else None,
        )
        self.frames = 0
        self._audio: dict[int, Any] = {}
        try:
            self._video = self._add_video(info, rotation, crf, preset)
            for stream in audio:
                try:
                    self._audio[stream.index] = self.output.add_stream_from_template(stream)
                except _READ_ERRORS as exc:
                    raise VideoRejected(
                        f"{self.name}: its audio ({stream.codec_context.name}) cannot be copied "
                        f"into {container.upper()}; ask for an .mkv output"
                    ) from exc
        except BaseException:
            self.output.close()
            raise

    def _add_video(self, info: ClipInfo, rotation: int, crf: int, preset: str) -> Any:
        width, height = info.width, info.height
        stream = self.output.add_stream(_CODEC, rate=info.rate or None)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        stream.codec_context.time_base = info.time_base
        stream.time_base = info.time_base
        # x264's AVX-512 routines gave identical frames two different encodings depending on
        # what OpenCV had run in between (about half the runs here); up to AVX2 they encode
        # the same bytes every time, and AVX-512 gains x264 little
        stream.options = {"crf": str(crf), "preset": preset, "x264-params": "asm=AVX2"}
        if rotation:
            stream.set_display_rotation(rotation)
        return stream

    def write_frame(self, frame: Frame, rgb: np.ndarray) -> None:
        """Encode `rgb` (the translation of `frame`) at `frame`'s timestamp."""
        encoded = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        encoded.pts = round(frame.pts * frame.time_base / self._video.codec_context.time_base)
        encoded.time_base = self._video.codec_context.time_base
        self._mux(self._video.encode(encoded))
        self.frames += 1

    def write_audio(self, packet: av.Packet) -> None:
        stream = self._audio.get(packet.stream.index)
        if stream is None:
            return
        packet.stream = stream
        self._mux([packet])

    def _mux(self, packets: list[av.Packet]) -> None:
        """Write packets; a stream the container refuses (its header is written with the
        first packet: PCM audio in MP4) is the clip's clear error, not a crash."""
        try:
            self.output.mux(packets)
        except av.error.FFmpegError as exc:
            raise VideoRejected(
                f"{self.name}: {self._container.upper()} cannot hold this clip's streams "
                f"({_reason(exc)}); PCM audio, say, needs an .mkv output"
            ) from exc

    def __enter__(self) -> ClipWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:  # the file is abandoned: closing it must not hide why
            with contextlib.suppress(av.error.FFmpegError):
                self.output.close()
            return
        try:
            self._mux(self._video.encode(None))  # the encoder's delayed frames
        finally:
            try:
                self.output.close()  # the trailer (MP4's index)
            except av.error.FFmpegError as exc:
                raise VideoRejected(
                    f"{self.name}: {self._container.upper()} cannot hold this clip's streams "
                    f"({_reason(exc)}); PCM audio, say, needs an .mkv output"
                ) from exc


def _declared_seconds(stream: Any, container: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _frame_period(rate: Fraction | None, time_base: Fraction) -> int:
    if not rate:
        rate = Fraction(25)
    return max(1, math.floor(1 / (rate * time_base)))


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "strerror", None) or exc).strip() or type(exc).__name__
    return text.split(";")[0][:200]
