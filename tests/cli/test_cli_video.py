"""`unpaired translate` on videos: a clip among images and folders, written as a clip with
its report; a broken clip is a clear failure that costs only itself."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_cli import unpaired
from tests.service.distributed.test_distributed import photos
from tests.service.servers import running_server, service_env
from tests.service.video_clips import (
    TIMES_MS,
    assert_same_clip,
    audio_packets,
    cli_clip,
    phone_clip,
    timestamps_ms,
)


def test_translate_writes_clips_beside_images_with_their_reports(
    model_store: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    phone_clip(folder / "trip" / "walk.mov")
    photos(folder, 1)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 100)
    out = tmp_path / "out"
    result = unpaired(
        "translate",
        "tiny",
        folder,
        "--direction",
        "AtoB",
        "--out",
        out,
        "--store",
        model_store,
        "--temporal",
        "none",
        "--video-format",
        "mkv",
        "--json",
    )
    assert result.returncode == 1, result.stderr  # one input failed
    assert "Traceback" not in result.stderr
    assert "broken.mp4: not a readable video" in result.stderr
    summary = json.loads(result.stdout)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "photo-000.png",
        "trip/walk.mkv",
    ]
    (video,) = summary["videos"]
    assert video["output"] == str(out / "trip" / "walk.mkv")
    assert video["frames"] == len(TIMES_MS) and video["temporal"] == "none"
    assert video["warping_error"] > video["input_warping_error"] > 0
    assert timestamps_ms(out / "trip" / "walk.mkv") == TIMES_MS
    source = (folder / "trip" / "walk.mov").read_bytes()
    assert audio_packets((out / "trip" / "walk.mkv").read_bytes()) == audio_packets(source)
    assert [f["input"] for f in summary["failed"]] == [str(folder / "broken.mp4")]


def test_bad_video_options_are_clear_errors(model_store: Path, tmp_path: Path) -> None:
    clip = phone_clip(tmp_path / "walk.mp4")
    for flag, value, message in (
        ("--temporal", "smooth", "--temporal must be one of blend, none"),
        ("--video-format", "avi", "--video-format must be one of mp4, mov, mkv"),
        ("--temporal-strength", "1.5", "--temporal-strength"),
    ):
        result = unpaired(
            "translate",
            "tiny",
            clip,
            "--out",
            tmp_path / "out",
            "--store",
            model_store,
            flag,
            value,
        )
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr


def test_jobs_submit_sends_the_clips_of_a_folder(model_store: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    phone_clip(folder / "trip" / "walk.mp4")
    photos(folder, 1)
    expected = cli_clip(model_store, folder / "trip" / "walk.mp4", tmp_path / "cli")
    with running_server(service_env(model_store), tmp_path / "api.log") as server:
        url = ("--url", server.url)
        submitted = unpaired(
            "jobs", "submit", "tiny", folder, "--direction", "AtoB", "--wait", "--json", *url
        )
        assert submitted.returncode == 0, submitted.stderr
        job = json.loads(submitted.stdout)
        assert job["counts"] == {"total": 2, "done": 2, "failed": 0}
        assert job["frames_done"] == len(TIMES_MS)
        got = unpaired("jobs", "download", job["id"], "--out", tmp_path / "out", *url)
        assert got.returncode == 0, got.stderr
    assert_same_clip((tmp_path / "out" / "trip" / "walk.mp4").read_bytes(), expected)
    report = json.loads((tmp_path / "out" / "trip" / "walk.mp4.json").read_text())
    assert report["frames"] == len(TIMES_MS) and report["temporal"] == "blend"
