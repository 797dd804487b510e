"""`unpaired jobs` against a real `unpaired serve`: submit, wait, status, list, download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli import assert_user_error, unpaired
from tests.service.distributed.test_distributed import photos
from tests.service.servers import running_server, service_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_the_jobs_commands_drive_a_server(model_store: Path, tmp_path: Path) -> None:
    photos(tmp_path / "in" / "sub", 6)
    (tmp_path / "in" / "notes.txt").write_text("skipped: not an image file name")
    unpaired(
        "translate", "tiny", tmp_path / "in", "--direction", "AtoB", "--out", tmp_path / "cli",
        "--store", model_store,
    )  # fmt: skip
    expected = {
        p.relative_to(tmp_path / "cli"): p.read_bytes() for p in tmp_path.glob("cli/**/*.png")
    }
    with running_server(service_env(model_store), tmp_path / "api.log") as server:
        url = ("--url", server.url)
        submitted = unpaired(
            "jobs", "submit", "tiny", tmp_path / "in", "--direction", "AtoB", "--wait", "--json",
            *url,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        job = json.loads(submitted.stdout)
        assert job["state"] == "succeeded" and job["counts"]["done"] == 6

        status = unpaired("jobs", "status", job["id"], "--json", *url)
        assert json.loads(status.stdout)["id"] == job["id"]
        listed = unpaired("jobs", "list", "--json", *url)
        assert [j["id"] for j in json.loads(listed.stdout)["jobs"]] == [job["id"]]

        downloaded = unpaired("jobs", "download", job["id"], "--out", tmp_path / "out", *url)
        assert downloaded.returncode == 0, downloaded.stderr
        got = {
            p.relative_to(tmp_path / "out"): p.read_bytes() for p in tmp_path.glob("out/**/*.png")
        }
        assert got == expected and len(got) == 6
        kept = unpaired("jobs", "download", job["id"], "--out", tmp_path / "all.zip", *url)
        assert kept.returncode == 0 and (tmp_path / "all.zip").stat().st_size > 0

        quick = unpaired(
            "jobs", "submit", "tiny", tmp_path / "in" / "sub", "--direction", "AtoB", *url
        )
        assert quick.returncode == 0, quick.stderr
        job_id = quick.stdout.strip()
        waited = unpaired("jobs", "wait", job_id, *url)
        assert waited.returncode == 0, waited.stderr
        assert "succeeded" in waited.stderr
        cancelled = unpaired("jobs", "cancel", job_id, "--json", *url)
        assert json.loads(cancelled.stdout)["state"] == "succeeded"  # too late: no change
        deleted = unpaired("jobs", "delete", job_id, *url)
        assert deleted.returncode == 0 and f"deleted job {job_id}" in deleted.stderr
        assert_user_error(unpaired("jobs", "status", job_id, *url), "no job")

        assert_user_error(unpaired("jobs", "status", "0" * 32, *url), "no job")
        assert_user_error(
            unpaired("jobs", "submit", "nope", tmp_path / "in", *url), "model_not_found"
        )
        assert_user_error(unpaired("jobs", "submit", "tiny", *url), "nothing to convert")
    assert_user_error(unpaired("jobs", "list", *url), "cannot reach")
