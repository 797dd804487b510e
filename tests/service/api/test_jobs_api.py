"""`/v1/jobs` in embedded mode (SQLite state, in-process runner), through the real app."""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.cli.test_cli import unpaired
from tests.service.distributed.test_distributed import photos
from tests.service.gates import Gate
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


def wait_done(client: TestClient, job_id: str, timeout: float = 60) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def ended() -> dict[str, Any] | None:
        last.update(client.get(f"/v1/jobs/{job_id}").json())
        return dict(last) if last["state"] not in ("queued", "running") else None

    return wait_until(ended, lambda: f"job {job_id} did not finish: {last}", timeout=timeout)


def wait_settled(
    client: TestClient, job_id: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """The job once it has ended and no chunk still writes: its counts and outputs are final."""
    last: dict[str, Any] = {}

    def final() -> dict[str, Any] | None:
        last.update(client.get(f"/v1/jobs/{job_id}", headers=headers).json())
        ended = last["state"] not in ("queued", "running") and not last["chunks_writing"]
        return dict(last) if ended else None

    return wait_until(final, lambda: f"job {job_id} never settled: {last}")


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def cli_outputs(model_store: Path, folder: Path, out: Path) -> dict[str, bytes]:
    unpaired(
        "translate", "tiny", folder, "--direction", "AtoB", "--out", out, "--store", model_store
    )
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.png")}


def submit_zip(client: TestClient, archive: bytes, **fields: str) -> dict[str, Any]:
    response = client.post(
        "/v1/jobs",
        data={"model": "tiny", "direction": "AtoB", **fields},
        files={"archive": ("in.zip", archive, "application/zip")},
    )
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
    body: dict[str, Any] = response.json()
    return body


def test_an_archive_job_converts_every_image_like_the_cli(
    api: Any, model_store: Path, tmp_path: Path
) -> None:
    paths = photos(tmp_path / "in" / "sub", 20)
    expected = cli_outputs(model_store, tmp_path / "in", tmp_path / "cli")
    archive = zip_of({f"sub/{p.name}": p.read_bytes() for p in paths})
    with api(chunk_size=6) as client:
        job = submit_zip(client, archive)
        assert job["state"] in ("queued", "running") and job["counts"]["total"] == 20
        done = wait_done(client, job["id"])
        assert done["state"] == "succeeded", done
        assert done["counts"] == {"total": 20, "done": 20, "failed": 0}
        assert done["progress"] == 1.0 and done["throughput"] > 0 and done["eta_seconds"] == 0
        result = client.get(f"/v1/jobs/{job['id']}/result")
        assert result.status_code == 200
        assert result.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(result.content)) as outputs:
            got = {name: outputs.read(name) for name in outputs.namelist()}
        assert got == expected  # byte-identical, same relative names


def test_uploaded_files_become_a_job(api: Any, tmp_path: Path) -> None:
    paths = photos(tmp_path / "in", 3)
    with api() as client:
        response = client.post(
            "/v1/jobs",
            data={"model": "tiny", "direction": "AtoB", "format": "jpeg", "quality": "80"},
            files=[("files", (p.name, p.read_bytes(), "image/png")) for p in paths]
            + [("files", ("notes.txt", b"not an image", "text/plain"))],
        )
        assert response.status_code == 202, response.text
        done = wait_done(client, response.json()["id"])
        assert done["state"] == "partially_failed"
        assert done["counts"] == {"total": 4, "done": 3, "failed": 1}
        assert [e["item"] for e in done["errors"]] == ["notes.txt"]
        assert done["format"] == "jpeg"
        with zipfile.ZipFile(io.BytesIO(client.get(done["result_url"]).content)) as outputs:
            names = sorted(outputs.namelist())
            assert json.loads(outputs.read("errors.json"))[0]["item"] == "notes.txt"
        assert names == sorted([*(f"{p.stem}.jpg" for p in paths), "errors.json"])


def test_an_archive_and_files_together_are_one_job(api: Any, tmp_path: Path) -> None:
    """The archive's members, then the files; a name given twice is one failed item (the
    first one is converted), as within an archive."""
    a, b, c, other = (p.read_bytes() for p in photos(tmp_path / "in", 4))
    with api() as client:
        response = client.post(
            "/v1/jobs",
            data={"model": "tiny", "direction": "AtoB"},
            files=[
                ("files", ("c.png", c, "image/png")),
                ("archive", ("in.zip", zip_of({"sub/a.png": a, "b.png": b}), "application/zip")),
                ("files", ("B.png", other, "image/png")),
            ],
        )
        assert response.status_code == 202, response.text
        assert response.json()["counts"]["total"] == 4
        done = wait_done(client, response.json()["id"])
        assert done["counts"] == {"total": 4, "done": 3, "failed": 1}, done
        assert [(e["item"], e["error"]) for e in done["errors"]] == [
            ("B.png", "duplicate name (same as b.png)")
        ]
        with zipfile.ZipFile(io.BytesIO(client.get(done["result_url"]).content)) as outputs:
            got = {name: outputs.read(name) for name in outputs.namelist()}
        alone = client.post(
            "/v1/models/tiny/translate?direction=AtoB",
            content=b,
            headers={"content-type": "image/png"},
        )
    assert sorted(got) == ["b.png", "c.png", "errors.json", "sub/a.png"]
    assert got["b.png"] == alone.content  # the archive's b.png, not the upload's B.png


def test_uploads_count_together_against_the_job_limit(api: Any, tmp_path: Path) -> None:
    a, b, c = (p.read_bytes() for p in photos(tmp_path / "in", 3))

    def submit(*files: tuple[str, bytes]) -> Any:
        return client.post(
            "/v1/jobs",
            data={"model": "tiny", "direction": "AtoB"},
            files=[("archive", ("in.zip", zip_of({"a.png": a}), "application/zip"))]
            + [("files", file) for file in files],
        )

    with api(max_job_items=2) as client:
        within = submit(("b.png", b))
        over = submit(("b.png", b), ("c.png", c))
        wait_done(client, within.json()["id"])
    assert within.status_code == 202 and within.json()["counts"]["total"] == 2
    assert over.status_code == 413 and over.json()["error"]["code"] == "too_large"


def test_uploads_and_a_source_together_are_refused(api: Any, tmp_path: Path) -> None:
    image = photos(tmp_path / "roots" / "src", 1)[0].read_bytes()
    archive = ("archive", ("in.zip", zip_of({"a.png": image}), "application/zip"))
    fields = {"model": "tiny", "direction": "AtoB"}
    with api(jobs_roots=str(tmp_path / "roots")) as client:
        both = client.post(
            "/v1/jobs",
            data={**fields, "source": str(tmp_path / "roots" / "src")},
            files=[archive, ("files", ("b.png", image, "image/png"))],
        )
        two_archives = client.post("/v1/jobs", data=fields, files=[archive, archive])
        nothing = client.post("/v1/jobs", files={k: (None, v) for k, v in fields.items()})
        upload = client.get("/openapi.json").json()["components"]["schemas"]["JobUpload"]
    assert both.status_code == 422
    assert "not both (got archive, files and source)" in both.json()["error"]["message"]
    assert two_archives.status_code == 422 and "'archive' takes one" in two_archives.text
    assert nothing.status_code == 422 and "no images" in nothing.json()["error"]["message"]
    uploads, source = upload["allOf"][0]["oneOf"]
    assert uploads["anyOf"][0] == {"required": ["archive"]} and source == {"required": ["source"]}


def hostile_tar(good: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:

        def add(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, **extra: Any) -> None:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            for key, value in extra.items():
                setattr(info, key, value)
            archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        for name, data in good.items():
            add(name, data)
        add("../escape.png", next(iter(good.values())))
        add("/etc/absolute.png", next(iter(good.values())))
        add("C:/drive.png", next(iter(good.values())))
        add("link.png", kind=tarfile.SYMTYPE, linkname="/etc/passwd")
        add("hard.png", kind=tarfile.LNKTYPE, linkname=next(iter(good)))
        add("device.png", kind=tarfile.CHRTYPE, devmajor=1, devminor=3)
        add("nested.zip", zip_of({"inner.png": next(iter(good.values()))}))
        add(next(iter(good)).upper(), next(iter(good.values())))  # a duplicate by case
        add("empty.png", b"")
        add("readme.txt", b"not an image at all")
    return buffer.getvalue()


HOSTILE = {
    "../escape.png",
    "/etc/absolute.png",
    "C:/drive.png",
    "link.png",
    "hard.png",
    "device.png",
    "nested.zip",
    "A.PNG",
    "empty.png",
    "readme.txt",
}


def test_a_hostile_archive_fails_exactly_its_bad_entries_and_writes_nothing_outside(
    api: Any, tmp_path: Path
) -> None:
    paths = photos(tmp_path / "in", 3)
    good = {"a.png": paths[0].read_bytes(), "b/c.png": paths[1].read_bytes()}
    before = set(os.listdir("/etc")), set(os.listdir(tmp_path))
    with api() as client:
        response = client.post(
            "/v1/jobs",
            data={"model": "tiny", "direction": "AtoB"},
            files={"archive": ("bad.tar.gz", hostile_tar(good), "application/gzip")},
        )
        assert response.status_code == 202, response.text
        done = wait_done(client, response.json()["id"])
        assert done["state"] == "partially_failed", done
        assert {e["item"] for e in done["errors"]} == HOSTILE
        assert done["counts"] == {"total": 12, "done": 2, "failed": 10}
        with zipfile.ZipFile(io.BytesIO(client.get(done["result_url"]).content)) as outputs:
            assert sorted(outputs.namelist()) == ["a.png", "b/c.png", "errors.json"]
    assert (set(os.listdir("/etc")), set(os.listdir(tmp_path)) - {"jobs"}) == before
    assert {p.name for p in (tmp_path / "jobs").iterdir()} <= {
        done["id"],
        "jobs.db",
        "jobs.db-wal",
        "jobs.db-shm",
        "jobs.db.lock",
    }
    job_folder = tmp_path / "jobs" / done["id"]
    inside = {p.relative_to(job_folder).as_posix() for p in job_folder.rglob("*") if p.is_file()}
    # the non-image was a plain file, kept as an input and failed by the decoder
    assert inside == {
        "inputs/a.png",
        "inputs/b/c.png",
        "inputs/readme.txt",
        "outputs/a.png",
        "outputs/b/c.png",
    }


def test_a_source_folder_is_read_in_place_and_written_to_a_destination(
    api: Any, model_store: Path, tmp_path: Path
) -> None:
    photos(tmp_path / "roots" / "src" / "deep", 4)
    expected = cli_outputs(model_store, tmp_path / "roots" / "src", tmp_path / "cli")
    roots = str(tmp_path / "roots")
    with api(jobs_roots=roots) as client:
        response = client.post(
            "/v1/jobs",
            json={
                "model": "tiny",
                "direction": "AtoB",
                "source": f"{roots}/src",
                "destination": f"{roots}/dst",
            },
        )
        assert response.status_code == 202, response.text
        done = wait_done(client, response.json()["id"])
        assert done["state"] == "succeeded"
        listing = client.get(done["result_url"]).json()
        assert len(listing["outputs"]) == 4
        outside = client.post(
            "/v1/jobs",
            json={"model": "tiny", "direction": "AtoB", "source": str(tmp_path / "cli")},
        )
        assert outside.status_code == 422 and outside.json()["error"]["code"] == "invalid_location"
        escape = client.post(
            "/v1/jobs",
            json={"model": "tiny", "direction": "AtoB", "source": f"{roots}/../cli"},
        )
        assert escape.status_code == 422
    written = {
        p.relative_to(tmp_path / "roots" / "dst").as_posix(): p.read_bytes()
        for p in (tmp_path / "roots" / "dst").rglob("*.png")
    }
    assert written == expected


def test_bad_submissions_are_clear_errors(api: Any, tmp_path: Path) -> None:
    image = photos(tmp_path / "in", 1)[0].read_bytes()
    with api() as client:
        cases = [
            (client.post("/v1/jobs", content=b"x", headers={"content-type": "text/plain"}), 415),
            (client.post("/v1/jobs", data={"model": "tiny", "direction": "AtoB"}), 415),
            (client.post("/v1/jobs", json={"model": "tiny", "direction": "AtoB"}), 422),
            (
                client.post(
                    "/v1/jobs",
                    data={"model": "nope"},
                    files={"archive": ("a.zip", zip_of({"a.png": image}))},
                ),
                404,
            ),
            (
                client.post(
                    "/v1/jobs",
                    data={"model": "tiny", "direction": "AtoB"},
                    files={"archive": ("a.zip", b"not an archive at all")},
                ),
                415,
            ),
            (
                client.post(
                    "/v1/jobs",
                    data={"model": "tiny", "direction": "AtoB"},
                    files={"archive": ("a.zip", zip_of({"a.png": image})[:40])},
                ),
                400,
            ),
            (
                client.post(
                    "/v1/jobs",
                    data={"model": "tiny", "direction": "AtoB"},
                    files={"archive": ("empty.zip", zip_of({}))},
                ),
                400,  # nothing to convert
            ),
            (client.post("/v1/jobs", json={"model": "tiny", "source": "/tmp"}), 422),  # no roots
            (client.post("/v1/jobs", json={"model": "tiny", "bogus": 1}), 422),
            (
                client.post(
                    "/v1/jobs",
                    data={"model": "tiny", "direction": "AtoB", "colour": "red"},
                    files={"archive": ("a.zip", zip_of({"a.png": image}))},
                ),
                422,  # an unknown form field
            ),
            (client.get("/v1/jobs/not-a-job"), 404),
            (client.get(f"/v1/jobs/{'0' * 32}"), 404),
            (client.delete(f"/v1/jobs/{'0' * 32}"), 404),
            (client.post(f"/v1/jobs/{'0' * 32}/cancel"), 404),
        ]
        for response, status in cases:
            assert response.status_code == status, response.text
            assert set(response.json()["error"]) >= {"code", "message"}


def _held(gate: Gate, at: str = "chunk", **options: Any) -> list[dict[str, Any]]:
    return [gate.failpoint(at, **options)]


def test_cancel_list_and_keys(api: Any, tmp_path: Path) -> None:
    paths = photos(tmp_path / "in", 24)
    archive = zip_of({p.name: p.read_bytes() for p in paths})
    mine = {"Authorization": "Bearer key-one"}
    theirs = {"Authorization": "Bearer key-two"}
    held = Gate(tmp_path / "held")  # every chunk waits here until the job is cancelled
    with api(api_keys="key-one,key-two", chunk_size=2, failpoints=_held(held)) as client:
        response = client.post(
            "/v1/jobs",
            data={"model": "tiny", "direction": "AtoB"},
            files={"archive": ("in.zip", archive)},
            headers=mine,
        )
        job = response.json()
        held.wait_reached()
        cancelled = client.post(f"/v1/jobs/{job['id']}/cancel", headers=mine).json()
        assert cancelled["state"] == "cancelled" and cancelled["counts"]["done"] == 0
        held.open()
        after = wait_settled(client, job["id"], headers=mine)  # running chunks end, none starts
        assert after["state"] == "cancelled" and after["counts"]["done"] < 24
        kept = client.get(after["result_url"], headers=mine)
        assert kept.status_code == 200  # the finished outputs stay downloadable
        with zipfile.ZipFile(io.BytesIO(kept.content)) as outputs:
            assert len(outputs.namelist()) == after["counts"]["done"]
        assert client.get(f"/v1/jobs/{job['id']}", headers=theirs).status_code == 404
        assert client.get("/v1/jobs", headers=theirs).json()["jobs"] == []
        listed = client.get("/v1/jobs", headers=mine).json()
        assert [j["id"] for j in listed["jobs"]] == [job["id"]] and listed["next_before"] is None
        assert client.get("/v1/jobs").status_code == 401
        assert client.delete(f"/v1/jobs/{job['id']}", headers=theirs).status_code == 404


def test_cancelling_a_finished_job_changes_nothing(api: Any, tmp_path: Path) -> None:
    paths = photos(tmp_path / "in", 4)
    archive = zip_of({p.name: p.read_bytes() for p in paths})
    with api(chunk_size=2) as client:
        job = submit_zip(client, archive)
        done = wait_done(client, job["id"])
        assert done["state"] == "succeeded"
        cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancelled.status_code == 200
        assert cancelled.json()["state"] == "succeeded"
        assert cancelled.json()["counts"] == done["counts"]


def test_a_finished_job_is_deleted_with_its_files_a_running_one_is_not(
    api: Any, tmp_path: Path
) -> None:
    paths = photos(tmp_path / "in", 30)
    archive = zip_of({p.name: p.read_bytes() for p in paths})
    jobs_dir = tmp_path / "jobs"
    held = Gate(tmp_path / "held")  # the first chunk waits here: the job is running
    with api(chunk_size=1, jobs_dir=str(jobs_dir), failpoints=_held(held, times=1)) as client:
        job = submit_zip(client, archive)
        held.wait_reached()
        early = client.delete(f"/v1/jobs/{job['id']}")
        assert early.status_code == 409, early.text
        assert early.json()["error"]["code"] == "job_not_finished"
        cancelled = client.post(f"/v1/jobs/{job['id']}/cancel").json()
        assert cancelled["state"] == "cancelled" and cancelled["chunks_writing"] >= 1
        writing = client.delete(f"/v1/jobs/{job['id']}")  # its held chunk is still running
        assert writing.status_code == 409, writing.text
        assert "still being written" in writing.json()["error"]["message"]
        held.open()
        wait_settled(client, job["id"])
        assert (jobs_dir / job["id"]).is_dir()
        deleted = client.delete(f"/v1/jobs/{job['id']}")
        gone = client.get(f"/v1/jobs/{job['id']}")
        again = client.delete(f"/v1/jobs/{job['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert gone.status_code == 404 and again.status_code == 404
    assert not (jobs_dir / job["id"]).exists()  # inputs and outputs removed with it
