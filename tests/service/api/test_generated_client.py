"""A client generated from the live schema by openapi-python-client works against the server.

The client is generated from ``/openapi.json`` of a running ``unpaired serve`` into tmp_path
(offline: the generator reads the URL and writes files), imported, and used as a user would:
translate an image (raw body and several ``files``), run a bulk job, read its outputs and its
``errors.json`` with the generated ``ZipItemError`` model.
"""

from __future__ import annotations

import importlib
import io
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.service.api.conftest import png
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PACKAGE = "unpaired_client"
#: openapi-python-client encodes raw bodies and answers as `File` only for these media types.
CONFIG = """\
post_hooks: []
content_type_overrides:
""" + "".join(
    f"  {media}: application/octet-stream\n"
    for media in (
        "image/png",
        "image/jpeg",
        "image/webp",
        "image/gif",
        "image/bmp",
        "image/tiff",
        "application/zip",
    )
)


@pytest.fixture(scope="module")
def client_package(live_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The package openapi-python-client generates from the live schema, imported."""
    root = tmp_path_factory.mktemp("generated")
    (root / "config.yaml").write_text(CONFIG)
    generator = Path(sys.executable).with_name("openapi-python-client")
    done = subprocess.run(
        [
            str(generator),
            "generate",
            "--url",
            f"{live_url}/openapi.json",
            "--meta",
            "none",
            "--config",
            str(root / "config.yaml"),
            "--output-path",
            str(root / PACKAGE),
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def generated(package: ModuleType, module: str) -> Any:
    return importlib.import_module(f"{package.__name__}.{module}")


def test_the_generated_client_translates_an_image(
    client_package: ModuleType, live_url: str
) -> None:
    translate = generated(client_package, "api.translate.translate")
    models = generated(client_package, "models")
    types = generated(client_package, "types")
    client = client_package.Client(base_url=live_url, timeout=httpx.Timeout(60))
    image = png(40, 56)

    raw = translate.sync_detailed(
        "day2night",
        client=client,
        body=types.File(payload=io.BytesIO(image), file_name="dusk.png", mime_type="image/png"),
        direction=models.TranslateDirection.ATOB,
    )
    assert raw.status_code == 200, raw.content
    direct = httpx.post(
        f"{live_url}/v1/models/tiny/translate?direction=AtoB",
        content=image,
        headers={"content-type": "image/png"},
    )
    assert raw.content == direct.content  # the same bytes as any other client gets
    assert Image.open(io.BytesIO(raw.content)).size == (56, 40)
    assert raw.headers["x-model"] == "tiny"

    several = models.TranslateUpload(
        files=[
            types.File(payload=io.BytesIO(image), file_name="a.png", mime_type="image/png"),
            types.File(payload=io.BytesIO(b"not an image"), file_name="b.png"),
        ]
    )
    zipped = translate.sync_detailed(
        "tiny", client=client, body=several, direction=models.TranslateDirection.BTOA
    )
    assert zipped.status_code == 200, zipped.content
    archive = zipfile.ZipFile(io.BytesIO(zipped.content))
    assert archive.namelist() == ["a.png", "errors.json"]
    (failure,) = [models.ZipItemError.from_dict(e) for e in json.loads(archive.read("errors.json"))]
    assert failure.item == "b.png" and failure.code == "corrupt" and failure.status == 400

    missing = translate.sync(
        "no-such-model",
        client=client,
        body=types.File(payload=io.BytesIO(image), file_name="a.png"),
        direction=models.TranslateDirection.ATOB,
    )
    assert isinstance(missing, models.ErrorResponse)
    assert missing.error.code == "model_not_found"


def test_the_generated_client_runs_a_bulk_job(client_package: ModuleType, live_url: str) -> None:
    jobs = {
        name: generated(client_package, f"api.jobs.{name}")
        for name in ("submit_job", "get_job", "list_jobs", "cancel_job", "get_job_result")
    }
    models = generated(client_package, "models")
    types = generated(client_package, "types")
    client = client_package.Client(base_url=live_url, timeout=httpx.Timeout(60))
    files = [
        types.File(payload=io.BytesIO(png(32, 40, offset=i)), file_name=f"p{i}.png")
        for i in range(3)
    ]
    files.append(types.File(payload=io.BytesIO(b"broken"), file_name="notes.png"))
    body = models.JobUpload(
        model="day2night", direction=models.JobUploadDirection.ATOB, files=files
    )

    job = jobs["submit_job"].sync(client=client, body=body)
    assert isinstance(job, models.JobView), job
    assert job.model == "tiny" and job.counts.total == 4

    def ended() -> object:
        now = jobs["get_job"].sync(job.id, client=client)
        return now if now.state.value not in ("queued", "running") else None

    job = wait_until(ended, "the job ended", timeout=120)
    assert job.state == models.JobViewState.PARTIALLY_FAILED, job
    assert (job.counts.done, job.counts.failed) == (3, 1)
    assert [e.item for e in job.errors] == ["notes.png"]
    listed = jobs["list_jobs"].sync(client=client)
    assert job.id in [j.id for j in listed.jobs]

    result = jobs["get_job_result"].sync_detailed(job.id, client=client)
    assert result.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(result.content))
    assert sorted(archive.namelist()) == ["errors.json", "p0.png", "p1.png", "p2.png"]
    errors = [models.ZipItemError.from_dict(e) for e in json.loads(archive.read("errors.json"))]
    assert [e.item for e in errors] == ["notes.png"] and errors[0].error

    cancelled = jobs["cancel_job"].sync(job.id, client=client)  # a finished job: no change
    assert isinstance(cancelled, models.JobView) and cancelled.state == job.state
    unknown = jobs["get_job"].sync("no-such-job", client=client)
    assert isinstance(unknown, models.ErrorResponse) and unknown.error.code == "job_not_found"
