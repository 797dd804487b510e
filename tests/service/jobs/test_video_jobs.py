"""Videos in distributed bulk jobs: a real worker on a private redis-server translates a clip
as `unpaired translate` does (the same frames at the same times), its report beside it in the
result; a clip that is not one fails alone. (Embedded mode: tests/service/api/test_video_api.py.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.local_redis import LocalRedis
from tests.service.distributed.test_distributed import photos
from tests.service.jobs_http import outputs, wait_for_job
from tests.service.servers import (
    running_server,
    running_workers,
    service_env,
    wait_for_workers,
)
from tests.service.video_clips import TIMES_MS, assert_same_clip, cli_clip, phone_clip

pytestmark = [pytest.mark.timeout(300)]


def job_files(clip: Path, image: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [
        ("files", ("walk.mp4", clip.read_bytes(), "video/mp4")),
        ("files", ("cat.png", image.read_bytes(), "image/png")),
        ("files", ("broken.mov", b"\x00\x00\x00\x18ftypqt  " + b"\x00" * 64, "video/quicktime")),
    ]


def check_clip_job(result: dict[str, bytes], expected_clip: bytes, done: dict[str, Any]) -> None:
    assert done["state"] == "partially_failed", done
    assert done["counts"] == {"total": 3, "done": 2, "failed": 1}
    (failure,) = done["errors"]
    assert failure["item"] == "broken.mov" and "not a readable video" in failure["error"]
    assert sorted(result) == ["cat.png", "errors.json", "walk.mp4", "walk.mp4.json"]
    assert_same_clip(result["walk.mp4"], expected_clip)  # the CLI's: same engine, same blend
    report = json.loads(result["walk.mp4.json"])
    assert report["input"] == "walk.mp4" and report["output"] == "walk.mp4"
    assert report["frames"] == len(TIMES_MS) and report["audio_streams"] == 1
    assert done["frames_done"] == len(TIMES_MS)  # the job's progress, in frames
    assert report["temporal"] == "blend" and report["scene_cuts"] == []
    assert 0 < report["input_warping_error"] < report["warping_error"]


@pytest.mark.slow
def test_a_distributed_job_translates_a_clip_on_a_worker_like_the_cli(
    model_store: Path, tmp_path: Path, make_redis: Callable[..., LocalRedis]
) -> None:
    clip = phone_clip(tmp_path / "in" / "walk.mp4")
    (image,) = photos(tmp_path / "img", 1)
    expected = cli_clip(model_store, clip, tmp_path / "cli")
    with make_redis(tmp_path / "redis") as redis_server:
        env = service_env(model_store, broker_url=redis_server.url, jobs_dir=tmp_path / "jobs")
        with (
            running_workers(env, tmp_path, count=1),
            running_server(env, tmp_path / "api.log") as server,
        ):
            wait_for_workers(server.url, 1)
            response = httpx.post(
                f"{server.url}/v1/jobs",
                data={"model": "tiny", "direction": "AtoB"},
                files=job_files(clip, image),
                timeout=60,
            )
            assert response.status_code == 202, response.text
            done = wait_for_job(server.url, response.json()["id"], timeout=240)
            result = outputs(server.url, done["id"])
    check_clip_job(result, expected, done)
