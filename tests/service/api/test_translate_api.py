"""POST /v1/models/{name}/translate in embedded mode: bodies, formats, zips, errors, limits."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.api.app import create_app
from service.settings import Settings
from service.store.model_store import ModelStore
from tests.cli.test_cli import unpaired
from tests.service.api.conftest import ClientFactory, png
from tests.service.inference.test_image_io import CORRUPT_CASES, bilevel_png

URL = "/v1/models/tiny/translate"


def post_png(
    client: TestClient, data: bytes, url: str = URL + "?direction=AtoB", **headers: str
) -> httpx.Response:
    return client.post(url, content=data, headers={"content-type": "image/png", **headers})


@pytest.mark.parametrize(("fmt", "quality"), [("png", 95), ("webp", 90), ("jpeg", 80)])
def test_an_image_is_byte_equal_to_unpaired_translate(
    api: ClientFactory, model_store: Path, tmp_path: Path, fmt: str, quality: int
) -> None:
    source = tmp_path / "photo.png"
    source.write_bytes(png(61, 87))
    done = unpaired(
        "translate", "tiny", source, "--direction", "BtoA", "--out", tmp_path / "out",
        "--store", model_store, "--format", fmt, "--quality", str(quality),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    suffix = "jpg" if fmt == "jpeg" else fmt
    expected = (tmp_path / "out" / f"photo.{suffix}").read_bytes()
    with api() as client:
        response = post_png(
            client, source.read_bytes(), f"{URL}?direction=BtoA&format={fmt}&quality={quality}"
        )
    assert response.status_code == 200, response.text
    assert response.content == expected
    assert response.headers["content-type"] == f"image/{fmt}"
    assert response.headers["x-model"] == "tiny" and response.headers["x-direction"] == "BtoA"
    assert int(response.headers["x-batch-size"]) >= 1
    assert float(response.headers["x-engine-seconds"]) > 0
    assert f'filename="upload.{suffix}"' in response.headers["content-disposition"]


def test_multipart_file_alias_and_accept(api: ClientFactory) -> None:
    with api() as client:
        by_accept = client.post(
            "/v1/models/day2night/translate?direction=AtoB",
            files={"file": ("dusk.png", png(), "image/png")},
            headers={"accept": "text/html;q=0.9, image/webp;q=0.8, image/jpeg"},
        )
        by_param = client.post(
            "/v1/models/day2night/translate?direction=AtoB&format=png",
            files={"file": ("dusk.png", png(), "image/png")},
            headers={"accept": "image/jpeg"},
        )
    assert by_accept.status_code == 200 and by_accept.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(by_accept.content)).size == (64, 48)
    assert by_accept.headers["x-model"] == "tiny"  # the alias resolved to the model
    assert 'filename="dusk.jpg"' in by_accept.headers["content-disposition"]
    assert by_param.headers["content-type"] == "image/png"


def test_several_files_answer_a_zip_naming_the_failures(api: ClientFactory) -> None:
    files = [
        ("files", ("a.png", png(offset=0), "image/png")),
        ("files", ("../../etc/a.png", png(offset=5), "image/png")),
        ("files", ("broken.png", b"\x89PNG\r\n\x1a\nnot really", "image/png")),
        ("files", ("b weird.png", png(offset=9), "image/png")),
    ]
    with api() as client:
        response = client.post(f"{URL}?direction=AtoB&format=webp", files=files)
        single = post_png(client, png(offset=0), f"{URL}?direction=AtoB&format=webp")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["x-files"] == "3" and response.headers["x-failed"] == "1"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.namelist() == ["a.webp", "a-2.webp", "b_weird.webp", "errors.json"]
    assert archive.read("a.webp") == single.content  # same bytes as a one-image request
    (failure,) = json.loads(archive.read("errors.json"))
    assert failure["item"] == "broken.png" and failure["status"] == 400
    assert failure["error"].startswith("broken.png: not a readable image"), failure
    assert failure["code"] == "corrupt"


def test_unknown_form_fields_are_refused(api: ClientFactory) -> None:
    with api() as client:
        response = client.post(
            f"{URL}?direction=AtoB",
            files={"file": ("a.png", png(), "image/png"), "quality": (None, "80")},
        )
    assert response.status_code == 422
    assert "unknown form field(s) 'quality'" in response.json()["error"]["message"]


def test_when_every_file_fails_the_answer_is_the_error(api: ClientFactory) -> None:
    files = [("files", (f"{i}.png", b"nope", "image/png")) for i in range(2)]
    with api() as client:
        response = client.post(f"{URL}?direction=AtoB", files=files)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "corrupt" and "none of the 2 images" in error["message"]
    assert [d["item"] for d in error["details"]] == ["0.png", "1.png"]


def test_direction_may_be_left_out_for_a_one_way_model(
    api: ClientFactory, model_store: Path, one_way_model: Path
) -> None:
    ModelStore(model_store).publish(one_way_model)
    with api() as client:
        one_way = post_png(client, png(), "/v1/models/oneway/translate")
        missing = post_png(client, png(), "/v1/models/oneway/translate?direction=BtoA")
        two_way = post_png(client, png(), URL)
    assert one_way.status_code == 200 and one_way.headers["x-direction"] == "AtoB"
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "direction_not_found"
    assert two_way.status_code == 422
    assert two_way.json()["error"]["code"] == "direction_required"


def _ico() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buffer, "ICO")
    return buffer.getvalue()


def _bomb() -> bytes:
    """A 20000x20000 PNG of ~50 KB: refused from its header, never decoded."""
    import zlib

    packer = zlib.compressobj(9)
    row = b"\0" * (1 + 20_000 // 8)
    return bilevel_png(
        20_000, 20_000, b"".join(packer.compress(row) for _ in range(20_000)) + packer.flush()
    )


A2B = f"{URL}?direction=AtoB"
UNSUPPORTED = (415, "unsupported_media_type")
BAD_REQUESTS = {
    "unknown model": (
        "/v1/models/zebra/translate?direction=AtoB",
        {},
        png(),
        404,
        "model_not_found",
    ),
    "bad model name": ("/v1/models/..%2F..%2Fetc/translate", {}, png(), 404, None),
    "bad direction": (f"{URL}?direction=up", {}, png(), 422, "invalid_parameters"),
    "bad format": (f"{A2B}&format=gif", {}, png(), 422, "invalid_parameters"),
    "bad quality": (f"{A2B}&quality=0", {}, png(), 422, "invalid_parameters"),
    "text body": (A2B, {"content-type": "text/plain"}, b"hi", *UNSUPPORTED),
    "json body": (A2B, {"content-type": "application/json"}, b"{}", *UNSUPPORTED),
    "no content type": (A2B, {"content-type": ""}, png(), *UNSUPPORTED),
    "empty body": (A2B, {}, b"", 400, "empty"),
    **{
        f"{name} image": (A2B, {}, make(), 400, "corrupt")
        for name, make in CORRUPT_CASES.items()
        if name != "empty"
    },
    "format not allowed": (A2B, {}, _ico(), 415, "unsupported_format"),
    "decompression bomb": (A2B, {}, _bomb(), 413, "too_large"),
    "not acceptable": (A2B, {"accept": "text/html"}, png(), 406, "not_acceptable"),
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, exported_model: Path) -> Iterator[TestClient]:
    """One server for the many error cases (they do not change its state)."""
    store = tmp_path_factory.mktemp("errors-store")
    ModelStore(store).publish(exported_model)
    app = create_app(Settings(store=str(store), threads=1))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_requests_get_json_errors_with_the_right_status(client: TestClient, case: str) -> None:
    url, headers, body, status, code = BAD_REQUESTS[case]
    response = client.post(url, content=body, headers={"content-type": "image/png", **headers})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["message"] and error["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert error["code"] == code


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"file": ("a.png", png())}, None),
        ({"other": ("a.png", png())}, "no image in the form"),
        ({"file": (None, "just text")}, "must be file uploads"),
    ],
)
def test_form_fields(
    client, files: dict[str, tuple[str | None, object]], message: str | None
) -> None:  # type: ignore[no-untyped-def]
    response = client.post(f"{URL}?direction=AtoB", files=files)
    if message is None:
        assert response.status_code == 200
    else:
        assert response.status_code == 422 and message in response.json()["error"]["message"]


def test_file_and_files_together_answer_one_zip_with_file_first(client: TestClient) -> None:
    files = [
        ("files", ("b.png", png(offset=3), "image/png")),
        ("file", ("a.png", png(offset=0), "image/png")),
        ("files", ("c.png", b"not an image", "image/png")),
        ("files", ("d.png", png(offset=6), "image/png")),
    ]
    response = client.post(f"{URL}?direction=AtoB", files=files)
    single = post_png(client, png(offset=0))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["x-files"] == "3" and response.headers["x-failed"] == "1"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.namelist() == ["a.png", "b.png", "d.png", "errors.json"]
    assert archive.read("a.png") == single.content  # `file` translated like any image
    assert [e["item"] for e in json.loads(archive.read("errors.json"))] == ["c.png"]


def test_two_file_fields_are_refused(client: TestClient) -> None:
    files = [("file", ("a.png", png())), ("file", ("b.png", png()))]
    response = client.post(f"{URL}?direction=AtoB", files=files)
    assert response.status_code == 422 and "'file' takes one image" in response.text


def test_unknown_routes_and_methods_are_json(client: TestClient) -> None:
    assert client.get("/nope").json()["error"]["code"] == "not_found"
    wrong = client.get(URL)
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def _flat_png(height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def test_image_size_limits(api: ClientFactory) -> None:
    with api(max_image_bytes=2000, max_image_pixels=1000) as client:
        too_many_bytes = post_png(client, png(64, 64))
        too_many_pixels = post_png(client, _flat_png(40, 30))
        fine = post_png(client, _flat_png(20, 20))
    assert too_many_bytes.status_code == 413 and "2000 bytes" in too_many_bytes.text
    assert too_many_pixels.status_code == 413 and "1000 pixels" in too_many_pixels.text
    assert fine.status_code == 200


def test_request_body_limit_before_and_while_reading(api: ClientFactory) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: only counting can stop it
        for _ in range(64):
            yield b"\0" * 1024

    with api(max_request_bytes=10_000) as client:
        declared = post_png(client, b"\0" * 20_000)
        streamed = client.post(
            f"{URL}?direction=AtoB", content=chunks(), headers={"content-type": "image/png"}
        )
        multipart = client.post(
            f"{URL}?direction=AtoB", files={"file": ("big.png", b"\0" * 50_000)}
        )
    for response in (declared, streamed, multipart):
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "too_large"


def test_many_files_are_refused(api: ClientFactory) -> None:
    with api(max_files=2) as client:
        response = client.post(
            f"{URL}?direction=AtoB", files=[("files", (f"{i}.png", png())) for i in range(3)]
        )
    assert response.status_code == 400 and "Too many files" in response.json()["error"]["message"]


def test_the_file_limit_counts_file_and_files_together(api: ClientFactory) -> None:
    def post(file: int, files: int) -> httpx.Response:
        parts = [("file", ("f.png", png(), "image/png"))] * file + [
            ("files", (f"{i}.png", png(offset=i), "image/png")) for i in range(files)
        ]
        return client.post(f"{URL}?direction=AtoB", files=parts)

    with api(max_files=2) as client:
        within = post(1, 1)
        alone = post(0, 2)
        over = post(1, 2)
        upload = client.get("/openapi.json").json()["components"]["schemas"]["TranslateUpload"]
    assert within.status_code == 200 and within.headers["x-files"] == "2"
    assert alone.status_code == 200 and alone.headers["x-files"] == "2"
    assert over.status_code == 400 and "Too many files" in over.json()["error"]["message"]
    assert over.json()["error"]["code"] == "bad_request"
    # the schema says the same: 2 `files` alone, or 1 beside a `file`
    assert upload["properties"]["files"]["maxItems"] == 2
    with_file, alone_branch = upload["allOf"][0]["oneOf"]
    assert with_file == {"required": ["file"], "properties": {"files": {"maxItems": 1}}}
    assert alone_branch["maxProperties"] == 1  # `files` alone


def test_an_octet_stream_body_is_read_though_only_image_types_are_documented(
    client: TestClient,
) -> None:
    response = client.post(
        f"{URL}?direction=AtoB",
        content=png(),
        headers={"content-type": "application/octet-stream"},
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    body = client.get("/openapi.json").json()["paths"]["/v1/models/{name}/translate"]["post"]
    assert "application/octet-stream" not in body["requestBody"]["content"]
    assert "application/octet-stream" in body["requestBody"]["description"]


def test_request_ids_are_echoed_or_made(client: TestClient) -> None:
    echoed = client.get("/healthz", headers={"x-request-id": "abc-123"})
    made = client.get("/healthz")
    hostile = client.get("/healthz", headers={"x-request-id": 'a b"<script>'})
    assert echoed.headers["x-request-id"] == "abc-123"
    assert len(made.headers["x-request-id"]) == 32
    assert hostile.headers["x-request-id"] not in ('a b"<script>', "")


def test_deadline_passed_is_504(api: ClientFactory) -> None:
    with api(request_timeout_s=0.001, visibility_timeout_s=0.0005) as client:
        response = post_png(client, png(256, 256))
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "deadline_exceeded"


def test_concurrent_requests_share_engine_calls(api: ClientFactory) -> None:
    with api(max_batch=8, max_wait_ms=50) as client, ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda i: post_png(client, png(offset=i)), range(16)))
        metrics = client.get("/metrics").text
    assert all(r.status_code == 200 for r in responses)
    assert max(int(r.headers["x-batch-size"]) for r in responses) > 1
    count = _metric(metrics, "unpaired_batch_size_count")
    singles = _metric(metrics, 'unpaired_batch_size_bucket{le="1.0"}')
    assert count == 16 and singles < 16  # some images ran in batches larger than one


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")
