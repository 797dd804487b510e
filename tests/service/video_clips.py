"""Clips for the service tests: a slow pan over a real photo with variable timestamps, a
rotation and an AAC track (what phones record), and what `unpaired translate` makes of it."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
from skimage import data

from bench.clips import pan_frames, write_clip
from tests.cli.test_cli import unpaired

#: Variable frame rate: the gaps differ (a phone drops and repeats frames).
TIMES_MS = [0, 40, 80, 160, 200, 240, 250, 330, 370, 410, 500, 540]


def phone_clip(path: Path, side: int = 64) -> Path:
    """12 frames panning over a real photo, VFR, rotated 90 degrees, with sound."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = pan_frames(data.coffee(), len(TIMES_MS), side)
    write_clip(str(path), frames, times_ms=TIMES_MS, rotation=90, audio_seconds=0.6)
    return path


def cli_clip(store: Path, clip: Path, out: Path) -> bytes:
    """The clip `unpaired translate` writes (tiny model, AtoB, the default blend)."""
    result = unpaired(
        "translate", "tiny", clip, "--direction", "AtoB", "--out", out, "--store", store
    )
    assert result.returncode == 0, result.stderr
    return (out / (clip.stem + ".mp4")).read_bytes()


def decoded(data: bytes) -> list[tuple[float, np.ndarray]]:
    """(time, RGB) of each frame of an encoded clip, as a player shows them."""
    with av.open(io.BytesIO(data)) as container:
        return [
            (float(frame.time), frame.to_ndarray(format="rgb24"))
            for frame in container.decode(container.streams.video[0])
        ]


def assert_same_clip(got: bytes, expected: bytes) -> None:
    """The same frames at the same times, up to the encoder: libx264 does not always encode
    identical frames to identical bytes (in this build it varies with what ran between two
    frames), so the pictures are compared, within codec noise."""
    mine, theirs = decoded(got), decoded(expected)
    assert [t for t, _ in mine] == [t for t, _ in theirs]
    for (_, a), (_, b) in zip(mine, theirs, strict=True):
        assert np.abs(a.astype(np.int16) - b).mean() < 2.0


def audio_packets(data: bytes) -> list[bytes]:
    """The audio packets of an encoded clip, as stored (a copy has the same ones)."""
    with av.open(io.BytesIO(data)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]


def timestamps_ms(path: Path) -> list[int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [round(float(f.pts * f.time_base) * 1000) for f in container.decode(stream)]
