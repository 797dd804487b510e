"""Videos at the HTTP API (embedded mode, the real app): a job translates a clip as the CLI
does; the interactive endpoint answers a video with 415 `video_needs_job`, before reading it."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.service.api.test_jobs_api import wait_done, wait_settled
from tests.service.distributed.test_distributed import photos
from tests.service.gates import Gate
from tests.service.jobs.test_video_jobs import check_clip_job, job_files
from tests.service.video_clips import TIMES_MS, cli_clip, phone_clip

pytestmark = pytest.mark.timeout(300)


def test_an_embedded_job_translates_a_clip_like_the_cli(
    api: Any, model_store: Path, tmp_path: Path
) -> None:
    clip = phone_clip(tmp_path / "in" / "walk.mp4")
    (image,) = photos(tmp_path / "img", 1)
    expected = cli_clip(model_store, clip, tmp_path / "cli")
    with api() as client:
        response = client.post(
            "/v1/jobs", data={"model": "tiny", "direction": "AtoB"}, files=job_files(clip, image)
        )
        assert response.status_code == 202, response.text
        done = wait_done(client, response.json()["id"], timeout=240)
        with zipfile.ZipFile(io.BytesIO(client.get(done["result_url"]).content)) as archive:
            result = {name: archive.read(name) for name in archive.namelist()}
    check_clip_job(result, expected, done, clip.read_bytes())


def test_the_translate_endpoint_sends_videos_to_jobs(api: Any, tmp_path: Path) -> None:
    clip = phone_clip(tmp_path / "walk.mp4").read_bytes()
    (image,) = photos(tmp_path / "img", 1)
    url = "/v1/models/tiny/translate?direction=AtoB"
    with api() as client:
        answers = [
            client.post(url, content=clip, headers={"content-type": "video/mp4"}),
            client.post(url, content=clip, headers={"content-type": "application/octet-stream"}),
            client.post(url, content=clip, headers={"content-type": "image/png"}),  # mislabelled
            client.post(url, files={"file": ("walk.mov", b"whatever", "video/quicktime")}),
            client.post(
                url,
                files=[
                    ("files", ("a.png", image.read_bytes(), "image/png")),
                    ("files", ("b.bin", clip, "application/octet-stream")),
                ],
            ),
        ]
        still_fine = client.post(
            url, content=image.read_bytes(), headers={"content-type": "image/png"}
        )
    for answer in answers:
        assert answer.status_code == 415, answer.text
        error = answer.json()["error"]
        assert error["code"] == "video_needs_job"
        assert "POST /v1/jobs" in error["message"]
    assert still_fine.status_code == 200


def test_a_cancelled_clip_stops_mid_clip_and_leaves_nothing_behind(
    api: Any, tmp_path: Path
) -> None:
    clip = phone_clip(tmp_path / "walk.mp4")
    held = Gate(tmp_path / "held")  # the clip's fourth frame waits here (one frame per batch)
    jobs = tmp_path / "jobs"
    with api(jobs_dir=str(jobs), failpoints=[held.failpoint("batch", after=3)]) as client:
        response = client.post(
            "/v1/jobs",
            data={"model": "tiny", "direction": "AtoB"},
            files=[("files", ("walk.mp4", clip.read_bytes(), "video/mp4"))],
        )
        job = response.json()
        held.wait_reached()
        assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["state"] == "cancelled"
        held.open()
        after = wait_settled(client, job["id"])
    assert after["state"] == "cancelled"
    assert after["counts"] == {"total": 1, "done": 0, "failed": 0}  # dropped, not failed
    assert after["frames_done"] < len(TIMES_MS)
    outputs = jobs / job["id"] / "outputs"
    assert sorted(p.name for p in outputs.rglob("*")) == []  # no clip, partial file or report


def test_a_clip_whose_decoder_hangs_fails_alone_and_the_server_serves_on(
    api: Any, tmp_path: Path
) -> None:
    clip = phone_clip(tmp_path / "hang.mp4")
    (image,) = photos(tmp_path / "img", 1)
    stuck = Gate(tmp_path / "stuck")  # the decoder hangs before frame 3, until the test ends
    hang = stuck.failpoint("decode", match="hang.mp4#frame3", timeout_s=600)
    try:
        with api(video_stall_s=1, failpoints=[hang]) as client:
            response = client.post(
                "/v1/jobs",
                data={"model": "tiny", "direction": "AtoB"},
                files=[
                    ("files", ("hang.mp4", clip.read_bytes(), "video/mp4")),
                    ("files", ("cat.png", image.read_bytes(), "image/png")),
                ],
            )
            done = wait_done(client, response.json()["id"])
            again = client.post(
                "/v1/models/tiny/translate?direction=AtoB",
                content=image.read_bytes(),
                headers={"content-type": "image/png"},
            )
    finally:
        stuck.open()  # let the abandoned decoding thread go
    assert stuck.reached == 1
    assert done["state"] == "partially_failed", done
    assert done["counts"] == {"total": 2, "done": 1, "failed": 1}
    (failure,) = done["errors"]
    assert (
        failure["item"] == "hang.mp4" and "decoding stalled: no frame for 1 s" in failure["error"]
    )
    assert again.status_code == 200
