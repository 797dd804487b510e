"""Bulk jobs over HTTP, as a client drives a live server: submit, poll, wait, download."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import httpx

from tests.waiting import wait_until

ACTIVE = ("queued", "running")


def zipped(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*.png")):
            archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def submit(url: str, archive: bytes, **fields: str) -> str:
    """A job of `archive` on the tiny model (AtoB), or on what `fields` say."""
    response = httpx.post(
        f"{url}/v1/jobs",
        data={"model": "tiny", "direction": "AtoB", **fields},
        files={"archive": ("in.zip", archive, "application/zip")},
        timeout=120,
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def job(url: str, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()
    return body


def wait_for_job(
    url: str, job_id: str, done_at_least: int = 0, timeout: float = 300
) -> dict[str, Any]:
    """The job's status once it has `done_at_least` images done (or, with 0, has ended)."""
    last: dict[str, Any] = {}

    def reached() -> dict[str, Any] | None:
        last.update(job(url, job_id))
        if done_at_least:
            return dict(last) if last["counts"]["done"] >= done_at_least else None
        return dict(last) if last["state"] not in ACTIVE else None

    return wait_until(reached, lambda: f"job {job_id}: {last}", timeout=timeout, interval=0.1)


def settled(url: str, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """An ended job's status once no chunk is still writing (a chunk in hand when the job was
    cancelled records what it finished): its counts and outputs are final."""
    last: dict[str, Any] = {}

    def final() -> dict[str, Any] | None:
        last.update(job(url, job_id))
        return dict(last) if last["state"] not in ACTIVE and not last["chunks_writing"] else None

    return wait_until(final, lambda: f"job {job_id} never settled: {last}", timeout=timeout)


def outputs(url: str, job_id: str) -> dict[str, bytes]:
    response = httpx.get(f"{url}/v1/jobs/{job_id}/result", timeout=120)
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = archive.namelist()
        assert len(names) == len(set(names))  # nothing twice
        return {name: archive.read(name) for name in names}
