"""The rest of the API in embedded mode: models, probes, metrics, keys, limits, CORS, logs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from service.logs import JsonFormatter
from service.store.model_store import ModelStore
from tests.conftest import edited_copy
from tests.service.api.conftest import ClientFactory, png
from tests.waiting import wait_until

URL = "/v1/models/tiny/translate?direction=AtoB"
PNG = {"content-type": "image/png"}


def test_models_list_and_one_model_by_alias(api: ClientFactory, model_store: Path) -> None:
    broken = model_store / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    with api() as client:
        listing = client.get("/v1/models")
        by_alias = client.get("/v1/models/day2night")
        missing = client.get("/v1/models/zebra2horse")
    assert listing.status_code == 200
    (model,) = listing.json()["models"]
    assert model["name"] == "tiny" and model["aliases"] == ["day2night"]
    assert model["domains"] == {"A": "day", "B": "night"}
    directions = {d["name"]: d for d in model["directions"]}
    assert directions["AtoB"]["source"] == "day" and directions["AtoB"]["target"] == "night"
    assert directions["BtoA"]["precisions"] == ["fp32", "fp16"] and directions["BtoA"]["tiled"]
    assert model["input"] == {"multiple": 4, "min_side": 8, "max_side": None}
    assert set(model["parity"]) == {"AtoB", "BtoA"}
    assert any("broken" in problem for problem in listing.json()["problems"])
    assert by_alias.json() == model
    assert missing.status_code == 404 and "models: tiny" in missing.json()["error"]["message"]


def test_the_default_model_is_named_when_the_store_has_it(
    api: ClientFactory, model_store: Path
) -> None:
    defaults = {}
    for setting in (None, "day2night", "tiny", "zebra2horse"):
        with api(default_model=setting) as client:
            defaults[setting] = client.get("/v1/models").json()["default"]
    # unset: clients pick; an alias: the model's name; a model the store lacks: none
    assert defaults == {None: None, "day2night": "tiny", "tiny": "tiny", "zebra2horse": None}


def test_example_photos_are_listed_and_served_as_png(api: ClientFactory) -> None:
    with api() as client:
        listed = client.get("/examples").json()["examples"]
        chelsea = next(e for e in listed if e["name"] == "chelsea")
        photo = client.get(chelsea["url"])
        missing = client.get("/examples/zebra")
    assert (chelsea["width"], chelsea["height"]) == (451, 300)
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/png"
    assert photo.content.startswith(b"\x89PNG")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "example_not_found"
    assert "chelsea" in missing.json()["error"]["message"]


def test_a_model_published_while_serving_is_listed_and_served(
    api: ClientFactory, model_store: Path, tmp_path: Path, exported_model: Path
) -> None:
    with api() as client:
        assert [m["name"] for m in client.get("/v1/models").json()["models"]] == ["tiny"]
        ModelStore(model_store).publish(edited_copy(exported_model, tmp_path / "late"))
        # the catalog rereads the store for an unknown name, at most once a second
        wait_until(
            lambda: client.get("/v1/models/late").status_code == 200, "the new model is listed"
        )
        served = client.post("/v1/models/late/translate?direction=AtoB", content=png(), headers=PNG)
        assert served.status_code == 200 and served.headers["x-model"] == "late"
        listed = client.get("/v1/models/late")
    assert listed.status_code == 200


def test_a_model_whose_files_were_damaged_is_503_not_500(
    api: ClientFactory, model_store: Path, tmp_path: Path, exported_model: Path
) -> None:
    damaged = edited_copy(exported_model, tmp_path / "damaged")
    with api(models=["tiny"]) as client:
        ModelStore(model_store).publish(damaged)
        with open(model_store / "damaged" / "AtoB.onnx", "r+b") as graph:
            graph.write(b"tampered")
        wait_until(
            lambda: client.get("/v1/models/damaged").status_code == 200, "the model is listed"
        )
        response = client.post(
            "/v1/models/damaged/translate?direction=AtoB", content=png(), headers=PNG
        )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_unavailable"
    assert "sha256" in response.json()["error"]["message"]


def test_probes(api: ClientFactory) -> None:
    with api() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] and body["mode"] == "embedded"
    assert {(e["model"], e["direction"]) for e in body["checks"]["engines"]} == {
        ("tiny", "AtoB"),
        ("tiny", "BtoA"),
    }


def test_metrics_count_requests_by_route_and_status(api: ClientFactory) -> None:
    with api() as client:
        client.post(URL, content=png(), headers=PNG)
        client.post(URL, content=b"junk", headers=PNG)
        client.get("/v1/models/nope")
        text = client.get("/metrics").text
    route = 'route="/v1/models/{name}/translate"'
    assert f'unpaired_http_requests_total{{method="POST",{route},status="200"}} 1.0' in text
    assert f'unpaired_http_requests_total{{method="POST",{route},status="400"}} 1.0' in text
    assert 'route="/v1/models/{name}",status="404"} 1.0' in text
    assert 'unpaired_translations_total{direction="AtoB",model="tiny"} 1.0' in text
    assert f"unpaired_http_request_duration_seconds_count{{{route}}} 2.0" in text
    for name in ("unpaired_queue_depth", "unpaired_batch_size_bucket", "unpaired_engine_seconds"):
        assert name in text


def test_api_keys_guard_the_v1_routes_only(api: ClientFactory) -> None:
    with api(api_keys="first-key, second-key") as client:
        missing = client.get("/v1/models")
        wrong = client.get("/v1/models", headers={"authorization": "Bearer nope"})
        basic = client.get("/v1/models", headers={"authorization": "Basic Zm9vOmJhcg=="})
        right = client.get("/v1/models", headers={"authorization": "Bearer second-key"})
        translated = client.post(
            URL, content=png(), headers={**PNG, "authorization": "bearer first-key"}
        )
        open_routes = [client.get(path).status_code for path in ("/healthz", "/readyz", "/")]
    for refused in (missing, wrong, basic):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["error"]["code"] == "unauthorized"
    assert right.status_code == 200 and translated.status_code == 200
    assert open_routes == [200, 200, 200]


def test_rate_limit_per_key_answers_429_with_retry_after(api: ClientFactory) -> None:
    with api(api_keys="a,b", rate_limit=0.5, rate_limit_burst=2) as client:
        as_a = {"authorization": "Bearer a"}
        statuses = [client.get("/v1/models", headers=as_a).status_code for _ in range(3)]
        limited = client.get("/v1/models", headers=as_a)
        other_key = client.get("/v1/models", headers={"authorization": "Bearer b"})
    assert statuses == [200, 200, 429]
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["code"] == "rate_limited"
    assert other_key.status_code == 200  # buckets are per key


def test_cors_is_off_by_default_and_configurable(api: ClientFactory) -> None:
    preflight = {
        "origin": "https://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    with api() as client:
        closed = client.get("/v1/models", headers={"origin": "https://app.example"})
    with api(cors_origins="https://app.example") as client:
        allowed = client.options(URL, headers=preflight)
        simple = client.get("/v1/models", headers={"origin": "https://app.example"})
        other = client.get("/v1/models", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in closed.headers
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert simple.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-origin" not in other.headers


def test_one_access_log_line_per_request_with_the_translation_fields(
    api: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with api() as client, caplog.at_level(logging.INFO, logger="unpaired.access"):
        client.post(URL, content=png(30, 40), headers={**PNG, "x-request-id": "req-1"})
        client.post(URL, content=b"junk", headers={**PNG, "x-request-id": "req-2"})
    records = [r for r in caplog.records if r.name == "unpaired.access"]
    assert [r.request_id for r in records] == ["req-1", "req-2"]  # type: ignore[attr-defined]
    good, bad = (json.loads(JsonFormatter().format(r)) for r in records)
    assert good["status"] == 200 and good["model"] == "tiny" and good["direction"] == "AtoB"
    assert (good["width"], good["height"]) == (40, 30) and good["batch_size"] == 1
    assert good["input_bytes"] > 0 and good["engine_seconds"] > 0 and "queue_seconds" in good
    assert good["duration_ms"] > 0 and good["path"] == "/v1/models/tiny/translate"
    assert bad["status"] == 400 and bad["error_code"] == "corrupt"


def test_the_web_page_and_the_openapi_schema_are_served(api: ClientFactory) -> None:
    with api() as client:
        page = client.get("/")
        schema = client.get("/openapi.json").json()
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    operation = schema["paths"]["/v1/models/{name}/translate"]["post"]
    body = operation["requestBody"]["content"]
    assert {"multipart/form-data", "image/png", "image/jpeg"} <= set(body)
    # accepted, but not documented: to a client or a fuzzer it means any bytes
    assert "application/octet-stream" not in body
    assert {"200", "400", "404", "413", "415", "422", "429", "503", "504"} <= set(
        operation["responses"]
    )
    assert "X-Batch-Size" in operation["responses"]["200"]["headers"]
