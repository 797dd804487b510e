"""Video clips end to end: the real tiny model translating real photos panned into clips.

Clips are written with PyAV (bench.clips, or by hand where a test needs an odd file), small
(64x64 or 96x96, at most 16 frames), and read back with PyAV: what a player would see.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from bench.clips import pan_frames, write_clip
from models.sample_photos import load_photo
from service.errors import VideoRejected, VideoTooLarge, WorkDropped
from service.files import partial_name
from service.inference.engine import Engine, EngineOptions
from service.inference.image_io import DecodedImage
from service.inference.videos.containers import ClipReader, VideoLimits
from service.inference.videos.formats import is_video_name, looks_like_video
from service.inference.videos.pipeline import ClipReport, VideoOptions, translate_clip
from service.inference.videos.temporal import Stabiliser, TemporalOptions
from service.store.model_store import ModelStore

#: Variable frame rate: gaps of 40 ms, then 120 ms, then 180 ms.
VFR_TIMES_MS = [0, 40, 80, 200, 240, 280, 320, 500, 540, 580, 620, 660]
NONE = VideoOptions(temporal=TemporalOptions(mode="none"))
#: libx264 at crf 0 is lossless: two outputs decode equal wherever their frames were equal.
LOSSLESS = 0

Translator = Callable[[Sequence[DecodedImage]], Sequence[DecodedImage | Exception]]


# --- helpers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """One decoded video frame as a player gets it."""

    seconds: float
    rotation: int
    width: int
    height: int
    rgb: np.ndarray


@pytest.fixture
def engine(model_store: Path) -> Engine:
    return Engine(ModelStore(model_store).open("tiny"), "AtoB", EngineOptions())


@dataclass
class Counting:
    """A translator that counts its calls and frames."""

    translate: Translator
    calls: int = 0
    frames: int = 0

    def __call__(self, images: Sequence[DecodedImage]) -> Sequence[DecodedImage | Exception]:
        self.calls += 1
        self.frames += len(images)
        return self.translate(images)


def shown(path: Path) -> list[Shown]:
    with av.open(str(path)) as container:
        return [
            Shown(
                seconds=float(frame.time),
                rotation=int(frame.rotation or 0),
                width=frame.width,
                height=frame.height,
                rgb=frame.to_ndarray(format="rgb24"),
            )
            for frame in container.decode(video=0)
        ]


def audio_packets(path: Path) -> tuple[str, int, list[bytes]]:
    """The first audio stream's codec, sample rate and packet payloads, in order."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        codec, rate = stream.codec_context.name, stream.codec_context.sample_rate
        payloads = [bytes(p) for p in container.demux(stream) if p.dts is not None]
    return codec, rate, payloads


def container_format(path: Path) -> str:
    with av.open(str(path)) as container:
        return str(container.format.name)


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def photo(name: str = "astronaut") -> np.ndarray:
    return load_photo(name)


def write_odd_clip(path: Path, width: int, height: int, count: int) -> None:
    """A clip of odd sides (4:4:4 chroma: libx264's 4:2:0 needs even ones), 25 fps."""
    frames = pan_frames(photo("chelsea"), count, max(width, height))
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(rgb[:height, :width]), format="rgb24"
            )
            frame.pts, frame.time_base = i * 40, Fraction(1, 1000)
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))


def assert_nothing_written(target: Path, *keep: Path) -> None:
    assert not target.exists()
    assert not Path(partial_name(target)).exists()
    assert sorted(target.parent.iterdir()) == sorted(keep)  # no stray file under any name


def translated(engine: Engine, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    results = engine.translate_each([DecodedImage(rgb=rgb, alpha=None) for rgb in frames])
    out = []
    for result in results:
        assert isinstance(result, DecodedImage)
        out.append(result.rgb)
    return out


# --- 1. round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_a_clip_keeps_its_frames_timestamps_size_rotation_and_audio(
    tmp_path: Path, engine: Engine, rotation: int
) -> None:
    source, target = tmp_path / "in.mp4", tmp_path / "out" / "out.mp4"
    frames = list(pan_frames(photo(), len(VFR_TIMES_MS), 64))
    write_clip(str(source), frames, times_ms=VFR_TIMES_MS, rotation=rotation, audio_seconds=0.6)

    report = translate_clip(
        str(source), str(target), engine.translate_each, limits=VideoLimits(), options=NONE
    )

    before, after = shown(source), shown(target)
    assert len(after) == len(before) == len(VFR_TIMES_MS) == report.frames
    assert [f.seconds for f in after] == pytest.approx([t / 1000 for t in VFR_TIMES_MS])
    assert {(f.width, f.height) for f in after} == {(64, 64)}
    assert (report.width, report.height) == (64, 64)
    assert report.duration_s == pytest.approx(VFR_TIMES_MS[-1] / 1000)
    assert {f.rotation % 360 for f in after} == {f.rotation % 360 for f in before} == {rotation}
    # each frame is the model's translation of its own input frame (up to the codec: luma,
    # as 4:2:0 halves the chroma), not a copy of the input nor of another frame
    expected = [luma(rgb) for rgb in translated(engine, [f.rgb for f in before])]
    for i, (out, given) in enumerate(zip(after, before, strict=True)):
        errors = [mean_abs(luma(out.rgb), want) for want in expected]
        assert errors[i] < 4.0
        assert errors[i] == min(errors)
        assert mean_abs(luma(out.rgb), luma(given.rgb)) > 4 * errors[i]
    # audio copied: same codec, same packets byte for byte (a re-encode changes them)
    assert report.audio_streams == 1
    codec, rate, payloads = audio_packets(source)
    assert audio_packets(target) == (codec, rate, payloads)
    assert codec == "aac" and len(payloads) > 5


def test_an_odd_sized_clip_keeps_its_size(tmp_path: Path, engine: Engine) -> None:
    source, target = tmp_path / "odd.mp4", tmp_path / "odd-out.mp4"
    write_odd_clip(source, 67, 45, 6)

    report = translate_clip(str(source), str(target), engine.translate_each, limits=VideoLimits())

    after = shown(target)
    assert (report.width, report.height, report.frames) == (67, 45, 6)
    assert [(f.width, f.height) for f in after] == [(67, 45)] * 6
    assert [f.seconds for f in after] == pytest.approx([i * 0.04 for i in range(6)])


def test_mkv_output_keeps_frames_timestamps_size_and_rotation(
    tmp_path: Path, engine: Engine
) -> None:
    source, target = tmp_path / "in.mp4", tmp_path / "out.mkv"
    write_clip(str(source), pan_frames(photo(), 8, 64), times_ms=VFR_TIMES_MS[:8], rotation=90)

    report = translate_clip(
        str(source),
        str(target),
        engine.translate_each,
        limits=VideoLimits(),
        options=VideoOptions(container="mkv"),
    )

    assert container_format(target) == "matroska,webm"
    after = shown(target)
    assert report.frames == len(after) == 8
    assert [f.seconds for f in after] == pytest.approx([t / 1000 for t in VFR_TIMES_MS[:8]])
    assert {(f.width, f.height, f.rotation % 360) for f in after} == {(64, 64, 90)}


def test_mkv_output_copies_the_audio_and_keeps_every_frame_time(
    tmp_path: Path, engine: Engine
) -> None:
    source, target = tmp_path / "in.mp4", tmp_path / "out.mkv"
    write_clip(
        str(source), pan_frames(photo(), 8, 64), times_ms=VFR_TIMES_MS[:8], audio_seconds=0.5
    )

    translate_clip(
        str(source),
        str(target),
        engine.translate_each,
        limits=VideoLimits(),
        options=VideoOptions(container="mkv"),
    )

    assert audio_packets(target) == audio_packets(source)
    # each frame is shown when the input shows it (not moved by the audio's priming delay)
    assert [f.seconds for f in shown(target)] == pytest.approx([f.seconds for f in shown(source)])


# --- 2. the temporal blend -------------------------------------------------------------------


def translate_pan(tmp_path: Path, engine: Engine, temporal: TemporalOptions) -> ClipReport:
    source = tmp_path / "pan.mp4"
    if not source.exists():
        write_clip(str(source), pan_frames(photo(), 16, 96, step=0.7))
    target = tmp_path / f"pan-{temporal.mode}-{temporal.strength}.mp4"
    return translate_clip(
        str(source),
        str(target),
        engine.translate_each,
        limits=VideoLimits(),
        options=VideoOptions(temporal=temporal),
    )


def test_the_blend_steadies_a_slow_pan(tmp_path: Path, engine: Engine) -> None:
    plain = translate_pan(tmp_path, engine, TemporalOptions(mode="none"))
    steady = translate_pan(tmp_path, engine, TemporalOptions(mode="blend", strength=0.6))

    assert plain.warping_error is not None and steady.warping_error is not None
    assert steady.warping_error < 0.5 * plain.warping_error
    assert steady.input_warping_error is not None
    assert steady.input_warping_error == plain.input_warping_error  # the same input
    assert steady.input_warping_error < steady.warping_error < plain.warping_error
    assert plain.scene_cuts == steady.scene_cuts == []
    assert (plain.temporal, steady.temporal, steady.strength) == ("none", "blend", 0.6)
    # the blend changed the pictures, not only the report
    frames = zip(shown(Path(plain.output)), shown(Path(steady.output)), strict=True)
    assert max(mean_abs(a.rgb, b.rgb) for a, b in frames) > 2.0


def test_blend_at_strength_zero_is_no_blend(tmp_path: Path, engine: Engine) -> None:
    plain = translate_pan(tmp_path, engine, TemporalOptions(mode="none"))
    zero = translate_pan(tmp_path, engine, TemporalOptions(mode="blend", strength=0.0))

    assert zero.warping_error == plain.warping_error
    pairs = list(zip(shown(Path(plain.output)), shown(Path(zero.output)), strict=True))
    assert len(pairs) == 16
    assert all(np.array_equal(a.rgb, b.rgb) for a, b in pairs)


# --- 3. scene cuts ---------------------------------------------------------------------------


def test_a_scene_cut_is_reported_and_nothing_is_blended_across_it(
    tmp_path: Path, engine: Engine
) -> None:
    source = tmp_path / "cut.mp4"
    scenes = [*pan_frames(photo("astronaut"), 8, 64), *pan_frames(photo("coffee"), 8, 64)]
    write_clip(str(source), scenes)
    outputs: dict[str, list[Shown]] = {}
    for mode in ("none", "blend"):
        target = tmp_path / f"{mode}.mp4"
        report = translate_clip(
            str(source),
            str(target),
            engine.translate_each,
            limits=VideoLimits(),
            options=VideoOptions(temporal=TemporalOptions(mode=mode), crf=LOSSLESS),
        )
        assert report.scene_cuts == [8]
        outputs[mode] = shown(target)

    plain, steady = outputs["none"], outputs["blend"]
    # the first frame of each scene is its own translation; the next ones are blended
    assert mean_abs(steady[8].rgb, plain[8].rgb) < 0.5
    assert mean_abs(steady[0].rgb, plain[0].rgb) < 0.5
    assert mean_abs(steady[9].rgb, plain[9].rgb) > 2.0
    assert mean_abs(steady[7].rgb, plain[7].rgb) > 2.0


# --- 4. bad videos ---------------------------------------------------------------------------


def good_mp4(folder: Path, audio_seconds: float = 0.0) -> Path:
    path = folder / "good.mp4"
    write_clip(str(path), pan_frames(photo(), 12, 64), audio_seconds=audio_seconds)
    return path


def good_mkv(folder: Path) -> Path:
    path = folder / "good.mkv"
    write_clip(str(path), pan_frames(photo(), 12, 64))
    return path


def not_a_video(folder: Path, path: Path) -> None:
    path.write_bytes(np.random.default_rng(7).bytes(4096))


def half_an_mp4(folder: Path, path: Path) -> None:
    data = good_mp4(folder).read_bytes()  # the index (moov) is at the end: cut off
    path.write_bytes(data[: len(data) // 2])


def cut_faststart_mp4(folder: Path, path: Path) -> None:
    """Index first (declares 12 frames), media cut short."""
    good = good_mp4(folder, audio_seconds=0.5)
    whole = folder / "whole.mp4"
    with (
        av.open(str(good)) as source,
        av.open(str(whole), "w", options={"movflags": "faststart"}) as output,
    ):
        streams = {s.index: output.add_stream_from_template(s) for s in source.streams}
        for packet in source.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                output.mux(packet)
    data = whole.read_bytes()
    assert data[36:40] == b"moov"  # right after ftyp
    path.write_bytes(data[: len(data) // 2])


def cut_mkv(folder: Path, path: Path) -> None:
    """A Matroska clip cut at 80 %: its header declares 0.5 s; some frames, not all, decode."""
    data = good_mkv(folder).read_bytes()
    path.write_bytes(data[: len(data) * 8 // 10])


def audio_only(folder: Path, path: Path) -> None:
    with av.open(str(path), "w") as output:
        stream = output.add_stream("aac", rate=22050)
        for start in range(0, 22050, 1024):
            chunk = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            chunk.sample_rate, chunk.pts = 22050, start
            output.mux(stream.encode(chunk))
        output.mux(stream.encode(None))


def no_frames(folder: Path, path: Path) -> None:
    """A Matroska header with its video track, cut inside the first cluster."""
    data = good_mkv(folder).read_bytes()
    cluster = data.index(b"\x1f\x43\xb6\x75")
    path.write_bytes(data[: cluster + 40])


def many_streams(folder: Path, path: Path) -> None:
    with av.open(str(path), "w") as output:
        video = output.add_stream("libx264", rate=24)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        tracks = [output.add_stream("aac", rate=22050) for _ in range(20)]
        for i, rgb in enumerate(pan_frames(photo(), 3, 64)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            output.mux(video.encode(frame))
        output.mux(video.encode(None))
        for track in tracks:
            chunk = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            chunk.sample_rate, chunk.pts = 22050, 0
            output.mux(track.encode(chunk))
            output.mux(track.encode(None))


def huge_declared(folder: Path, path: Path) -> None:
    """A 10000x10000 YUV4MPEG header and a kilobyte: what a decoder would allocate for."""
    path.write_bytes(b"YUV4MPEG2 W10000 H10000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(1000))


def copy_of(make: Callable[[Path], Path]) -> Callable[[Path, Path], None]:
    def write(folder: Path, path: Path) -> None:
        path.write_bytes(make(folder).read_bytes())

    return write


def mkv_declaring_50_ms(folder: Path, path: Path) -> None:
    """A 0.5 s Matroska clip whose header says 0.05 s: the limit holds on what decodes."""
    data = good_mkv(folder).read_bytes()
    at = data.index(b"\x44\x89\x88") + 3  # Segment Info's Duration, a float64 in ms
    assert struct.unpack(">d", data[at : at + 8]) == (500.0,)
    path.write_bytes(data[:at] + struct.pack(">d", 50.0) + data[at + 8 :])


@dataclass(frozen=True)
class Bad:
    make: Callable[[Path, Path], None]
    suffix: str
    error: type[Exception]
    says: tuple[str, ...]
    limits: VideoLimits = field(default_factory=VideoLimits)
    decodes: bool = False  # found while decoding (the translator may have run)


BAD = {
    "not a video": Bad(not_a_video, ".mp4", VideoRejected, ("not a readable video",)),
    "mp4 cut in half": Bad(half_an_mp4, ".mp4", VideoRejected, ("not a readable video",)),
    "faststart mp4 cut short": Bad(
        cut_faststart_mp4, ".mp4", VideoRejected, ("truncated", "12 frames declared"), decodes=True
    ),
    "mkv cut short": Bad(cut_mkv, ".mkv", VideoRejected, ("truncated",), decodes=True),
    "audio only": Bad(audio_only, ".mp4", VideoRejected, ("no video stream",)),
    "video track, no frames": Bad(no_frames, ".mkv", VideoRejected, ("no frames",)),
    "pixels": Bad(
        copy_of(good_mp4),
        ".mp4",
        VideoTooLarge,
        ("64x64", "the limit is 1000 pixels"),
        VideoLimits(max_pixels=1000),
    ),
    "frames declared": Bad(
        copy_of(good_mp4),
        ".mp4",
        VideoTooLarge,
        ("12 frames", "the limit is 5 frames"),
        VideoLimits(max_frames=5),
    ),
    "frames found decoding": Bad(
        copy_of(good_mkv),
        ".mkv",
        VideoTooLarge,
        ("more than 5 frames",),
        VideoLimits(max_frames=5),
        decodes=True,
    ),
    "duration declared": Bad(
        copy_of(good_mp4),
        ".mp4",
        VideoTooLarge,
        ("0.5 s long", "the limit is 0.2 s"),
        VideoLimits(max_seconds=0.2),
    ),
    "duration found decoding": Bad(
        mkv_declaring_50_ms,
        ".mkv",
        VideoTooLarge,
        ("longer than 0.2 s",),
        VideoLimits(max_seconds=0.2),
        decodes=True,
    ),
    "21 streams": Bad(
        many_streams,
        ".mp4",
        VideoTooLarge,
        ("21 streams", "the limit is 16"),
        VideoLimits(max_streams=16),
    ),
    "huge declared size": Bad(
        huge_declared, ".y4m", VideoTooLarge, ("10000x10000", "8294400 pixels per frame")
    ),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_a_bad_clip_is_refused_and_leaves_no_file(
    tmp_path: Path, engine: Engine, case: Bad
) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    source, target = tmp_path / f"clip{case.suffix}", out / "translated.mp4"
    case.make(work, source)
    translator = Counting(engine.translate_each)

    with pytest.raises(case.error) as caught:
        translate_clip(str(source), str(target), translator, limits=case.limits, name="clip")

    message = str(caught.value)
    assert message.startswith("clip: ")  # the name given, not the path
    for words in case.says:
        assert words in message
    if not case.decodes:
        assert translator.calls == 0  # refused before any frame went to the model
    assert_nothing_written(target)


def test_a_huge_declared_size_is_refused_on_opening(tmp_path: Path) -> None:
    source = tmp_path / "huge.y4m"
    huge_declared(tmp_path, source)
    assert source.stat().st_size < 2000

    with pytest.raises(VideoTooLarge, match="10000x10000"):
        ClipReader(str(source), VideoLimits())  # before a frame is read, let alone decoded


# --- 5. which files are videos ---------------------------------------------------------------

#: (file name, FFmpeg muxer, codec): each muxer's real first bytes.
CONTAINERS = [
    ("clip.mp4", "mp4", "libx264"),
    ("clip.MOV", "mov", "libx264"),
    ("clip.mkv", "matroska", "libx264"),
    ("clip.webm", "webm", "libvpx"),
    ("clip.avi", "avi", "mpeg4"),
    ("clip.flv", "flv", "flv"),
    ("clip.ts", "mpegts", "mpeg2video"),
    ("clip.mpg", "mpeg", "mpeg1video"),
    ("clip.3gp", "3gp", "libx264"),
]


@pytest.mark.parametrize(("name", "muxer", "codec"), CONTAINERS)
def test_real_clips_look_like_videos(tmp_path: Path, name: str, muxer: str, codec: str) -> None:
    path = tmp_path / name
    with av.open(str(path), "w", format=muxer) as output:
        stream = output.add_stream(codec, rate=25)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i, rgb in enumerate(pan_frames(photo(), 4, 64)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    head = path.read_bytes()[:512]

    assert is_video_name(name)
    assert is_video_name(f"some/folder/{name}")
    assert looks_like_video(head)
    assert not looks_like_video(head[:3])  # too short to tell
    assert not looks_like_video(bytes(12) + head[12:])  # its signature gone


def image_bytes(format: str, **options: object) -> bytes:
    picture = Image.fromarray(photo("coffee")[:64, :64])
    buffer = io.BytesIO()
    picture.save(buffer, format=format, **options)
    return buffer.getvalue()


def test_images_do_not_look_like_videos() -> None:
    avif = image_bytes("AVIF")
    frames = [Image.fromarray(rgb) for rgb in pan_frames(photo(), 3, 64)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="AVIF", save_all=True, append_images=frames[1:])
    avif_sequence = buffer.getvalue()
    assert avif[4:12] == b"ftypavif" and avif_sequence[4:12] == b"ftypavis"
    for head in (image_bytes("PNG"), image_bytes("JPEG"), avif, avif_sequence):
        assert not looks_like_video(head[:512])
    for name in ("photo.png", "photo.JPG", "photo.avif", "photo.heic", "clip.mp4.zip", "mp4"):
        assert not is_video_name(name)


@pytest.mark.parametrize("brand", [b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis"])
def test_heif_and_avif_brands_are_images(brand: bytes) -> None:
    """An ISO base media file whose major brand is an image format's (HEIF as a phone writes
    it: ftyp, then meta): the same box a video starts with, not a video."""
    ftyp = b"ftyp" + brand + b"\x00\x00\x00\x00" + b"mif1" + brand
    head = struct.pack(">I", 4 + len(ftyp)) + ftyp + b"\x00\x00\x00\x22meta"
    assert not looks_like_video(head)
    video = head[:8] + b"isom" + head[12:]  # the same box with a video's brand
    assert looks_like_video(video)


# --- 6. stopping -----------------------------------------------------------------------------


def test_should_stop_drops_the_clip_and_leaves_no_file(tmp_path: Path, engine: Engine) -> None:
    folder = tmp_path / "clips"
    source, target = folder / "in.mp4", folder / "out" / "out.mp4"
    folder.mkdir()
    write_clip(str(source), pan_frames(photo(), 12, 64), audio_seconds=0.5)
    translator = Counting(engine.translate_each)
    asked: list[int] = []

    def should_stop() -> bool:
        asked.append(translator.calls)
        return translator.calls >= 1  # once the first batch is done

    with pytest.raises(WorkDropped, match="stopped at frame 4"):
        translate_clip(
            str(source),
            str(target),
            translator,
            limits=VideoLimits(),
            options=VideoOptions(batch=4),
            should_stop=should_stop,
        )

    assert (translator.calls, translator.frames) == (1, 4)
    assert asked == [0, 1]  # asked before each batch
    assert_nothing_written(target)
    assert sorted(os.listdir(folder)) == ["in.mp4", "out"]


def test_a_clip_translated_again_is_the_same_file(tmp_path: Path) -> None:
    """Bug: x264's AVX-512 routines encoded identical frames two ways, depending on what
    OpenCV's flow had run in between (about half the runs on an AVX-512 machine); a retried
    job chunk or a second `unpaired translate` then wrote a different file. (The frames are
    kept as they are here: the encoder is under test, not a model.)"""
    source = tmp_path / "in.mp4"
    frames = pan_frames(load_photo("coffee"), len(VFR_TIMES_MS), 64)
    write_clip(str(source), frames, times_ms=VFR_TIMES_MS, rotation=90, audio_seconds=0.6)
    outputs = set()
    for attempt in range(8):
        target = tmp_path / f"out-{attempt}.mp4"
        translate_clip(str(source), str(target), _copies, limits=VideoLimits(), options=NONE)
        outputs.add(target.read_bytes())
    assert len(outputs) == 1


def _copies(images: Sequence[DecodedImage]) -> list[DecodedImage | Exception]:
    return [DecodedImage(rgb=image.rgb.copy()) for image in images]


def _pcm_clip(path: Path) -> None:
    """Six frames in Matroska with PCM audio (which MP4 cannot hold)."""
    with av.open(str(path), "w") as output:
        video = output.add_stream("libx264", rate=24)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        audio = output.add_stream("pcm_s16le", rate=22050)
        for i in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 30, np.uint8), "rgb24")
            frame.pts = i
            output.mux(video.encode(frame))
        output.mux(video.encode(None))
        sound = av.AudioFrame.from_ndarray(np.zeros((1, 4410), np.int16), "s16", "mono")
        sound.sample_rate, sound.pts = 22050, 0
        output.mux(audio.encode(sound))
        output.mux(audio.encode(None))


def test_audio_the_container_cannot_hold_is_a_clear_error_and_mkv_takes_it(
    tmp_path: Path,
) -> None:
    source = tmp_path / "pcm.mkv"
    _pcm_clip(source)
    target = tmp_path / "out" / "pcm.mp4"
    with pytest.raises(VideoRejected, match=r"MP4 cannot hold .* needs an \.mkv output"):
        translate_clip(str(source), str(target), _copies, limits=VideoLimits())
    assert not target.exists() and not Path(partial_name(target)).exists()
    kept = tmp_path / "out" / "pcm.mkv"
    report = translate_clip(
        str(source), str(kept), _copies, limits=VideoLimits(), options=VideoOptions(container="mkv")
    )
    assert report.frames == 6 and report.audio_streams == 1
    assert audio_packets(kept) == audio_packets(source)


def test_the_warping_error_measures_known_flicker_on_known_motion() -> None:
    """A real photo moving 2 px per frame (exactly, no resampling): the input's own warping
    error is nearly 0; the same frames with fresh noise of sigma 0.05 each (what a flickering
    translation adds) score the noise's variance twice over (two frames' noise differ)."""
    photo = load_photo("astronaut")[:160, :200]
    frames = [np.ascontiguousarray(photo[:128, 2 * i : 2 * i + 128]) for i in range(8)]
    rng = np.random.default_rng(0)
    sigma = 0.05
    stabiliser = Stabiliser(TemporalOptions(mode="none"))
    for frame in frames:
        noise = rng.normal(0.0, sigma * 255, frame.shape)
        flickering = np.clip(frame + noise, 0, 255).round().astype(np.uint8)
        stabiliser.step(frame, flickering)
    assert stabiliser.input_error.pairs == stabiliser.output_error.pairs == 7
    assert stabiliser.input_error.value is not None and stabiliser.input_error.value < 2e-4
    assert stabiliser.output_error.value == pytest.approx(2 * sigma**2, rel=0.2)
