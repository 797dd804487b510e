"""The OpenAPI schema says what the API does: schemathesis, every check, every phase, finds nothing.

The schemathesis CLI runs the way a user runs it (``schemathesis run URL/openapi.json -c all``)
against a live ``unpaired serve``, with the examples, coverage, fuzzing and stateful phases
(the stateful phase follows the schema's links from ``POST /v1/jobs`` to the job's
resources), and with this API's hooks (``schemathesis_hooks.py``: real images and archives
where the schema says binary). Its JSON report must show no failure, no error and no warning
(an unresolvable reference is a warning). The schema's structure is checked directly too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.settings import Settings

HERE = Path(__file__).resolve().parent
HOOKS = HERE / "schemathesis_hooks.py"
#: Test cases per operation and phase: ~500 requests in all, about a minute on 2 cores.
MAX_EXAMPLES = 30
SEED = 20260101


def schemathesis_report(url: str, out: Path) -> dict[str, Any]:
    """Run the schemathesis CLI against `url`; its JSON report."""
    report = out / "report.json"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{url}/openapi.json",
        "--checks=all",
        "--phases=examples,coverage,fuzzing,stateful",
        f"--max-examples={MAX_EXAMPLES}",
        f"--seed={SEED}",
        "--workers=1",
        "--request-timeout=30",
        "--generation-database=none",
        "--no-color",
        "--report=json",
        f"--report-json-path={report}",
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)}
    done = subprocess.run(
        command, cwd=out, env=env, capture_output=True, text=True, timeout=540, check=False
    )
    assert report.exists(), done.stdout[-5000:] + done.stderr[-5000:]
    result: dict[str, Any] = json.loads(report.read_text())
    result["output"] = done.stdout
    return result


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_schemathesis_finds_nothing(live_url: str, tmp_path: Path) -> None:
    # the server serves the schema the app builds (building the app loads nothing)
    served = httpx.get(f"{live_url}/openapi.json").json()
    assert served == create_app(Settings(store="unused")).openapi()

    report = schemathesis_report(live_url, tmp_path)
    output = report["output"][-20000:]
    assert report["failures"] == [], output
    assert report["errors"] == [], output
    assert {k: v for k, v in report["warnings"].items() if v} == {}, output
    operations = report["operations"]
    assert operations["tested"] == operations["selected"] == operations["total"] == 12, output
    assert operations["errored"] == operations["skipped"] == 0, output
    phases = {name: phase["status"] for name, phase in report["phases"].items()}
    assert phases == dict.fromkeys(("examples", "coverage", "fuzzing", "stateful"), "success")
    assert report["exit_code"] == 0, output
    # the stateful phase created jobs and followed the links to them
    assert "GetJob" in served["paths"]["/v1/jobs"]["post"]["responses"]["202"]["links"]
    print(f"schemathesis: {report['test_cases']['generated']} test cases, 0 failures")


def refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def schema_of(**settings: Any) -> dict[str, Any]:
    schema: dict[str, Any] = create_app(Settings(store="unused", **settings)).openapi()
    return schema


@pytest.mark.parametrize(
    "settings", [{}, {"jobs_roots": ("/data",)}, {"api_keys": ("k1",)}], ids=str
)
def test_every_reference_resolves(settings: dict[str, Any]) -> None:
    schema = schema_of(**settings)
    components = schema["components"]["schemas"]
    for ref in set(refs(schema)):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in components, f"{ref} is not defined"
    assert "HTTPValidationError" not in components  # FastAPI's 422, which the API never sends


def test_every_operation_documents_its_errors_as_error_response() -> None:
    schema = schema_of()
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, operations in schema["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            statuses = {int(s) for s in operation["responses"] if int(s) >= 400}
            assert {401, 429, 503} <= statuses, (method, path)
            for status in statuses:
                content = operation["responses"][str(status)]["content"]
                assert content == {"application/json": {"schema": error}}, (method, path, status)
    translate = schema["paths"]["/v1/models/{name}/translate"]["post"]["responses"]
    assert "`direction_required`" in translate["422"]["description"]
    direction = next(
        p
        for p in schema["paths"]["/v1/models/{name}/translate"]["post"]["parameters"]
        if p["name"] == "direction"
    )
    assert direction["required"] is True


def test_bodies_take_exactly_one_input() -> None:
    components = schema_of()["components"]["schemas"]
    upload = components["JobUpload"]
    assert upload["additionalProperties"] is False
    assert upload["allOf"] == [{"oneOf": [{"required": ["archive"]}, {"required": ["files"]}]}]
    assert "source" not in upload["properties"]  # no UNPAIRED_JOBS_ROOTS: uploads only
    translate = components["TranslateUpload"]
    assert translate["allOf"] == [{"oneOf": [{"required": ["file"]}, {"required": ["files"]}]}]
    rooted = schema_of(jobs_roots=("/data",))
    body = rooted["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/JobCreate"}
    assert {"required": ["source"]} in rooted["components"]["schemas"]["JobUpload"]["allOf"][0][
        "oneOf"
    ]
    assert "direction" in rooted["components"]["schemas"]["JobCreate"]["required"]
    encoding = schema_of()["paths"]["/v1/jobs"]["post"]["requestBody"]["content"][
        "multipart/form-data"
    ]["encoding"]
    assert "application/zip" in encoding["archive"]["contentType"]


def test_job_submission_links_to_the_job() -> None:
    schema = schema_of()
    links = schema["paths"]["/v1/jobs"]["post"]["responses"]["202"]["links"]
    ids = {op["operationId"] for ops in schema["paths"].values() for op in ops.values()}
    assert (
        {link["operationId"] for link in links.values()}
        == {
            "get_job",
            "cancel_job",
            "delete_job",
            "get_job_result",
        }
        <= ids
    )
    assert all(link["parameters"] == {"job_id": "$response.body#/id"} for link in links.values())


def test_api_keys_declare_a_bearer_scheme() -> None:
    schema = schema_of(api_keys=("k1",))
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    assert schema["paths"]["/v1/jobs"]["get"]["security"] == [{"ApiKey": []}]
    assert "security" not in schema["paths"]["/healthz"]["get"]
    assert "securitySchemes" not in schema_of()["components"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/v1/jobs", "POST, GET"),
        ("PUT", "/v1/jobs", "POST, GET"),
        ("PATCH", "/v1/jobs/abc", "GET, DELETE"),
        ("POST", "/v1/jobs/abc/result", "GET"),
        ("GET", "/v1/jobs/abc/cancel", "POST"),
        ("GET", "/v1/models/tiny/translate", "POST"),
        ("DELETE", "/healthz", "GET"),
    ],
)
def test_405_allows_every_method_of_the_path(method: str, path: str, allow: str) -> None:
    client = TestClient(create_app(Settings(store="unused")))  # no lifespan: routing only
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    error = response.json()["error"]
    assert error["code"] == "method_not_allowed" and method in error["message"]
