"""The OpenAPI schema says what the API does: schemathesis, every check, every phase, finds nothing.

The schemathesis CLI runs the way a user runs it (``schemathesis run URL/openapi.json -c all``)
against a live ``unpaired serve``, with the examples, coverage, fuzzing and stateful phases
(the stateful phase follows the schema's links from ``POST /v1/jobs`` to the job's
resources), and with this API's hooks (``schemathesis_hooks.py``: real images and archives
where the schema says binary). Its JSON report must show no failure, no error and no warning
(an unresolvable reference is a warning). Run from outside, without the hooks, it may only
report what a schema cannot say (`BLACK_BOX_LIMITS`). The schema's structure is checked
directly too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.settings import Settings

HERE = Path(__file__).resolve().parent
HOOKS = HERE / "schemathesis_hooks.py"
IMAGE_TYPES = ("png", "jpeg", "webp", "gif", "bmp", "tiff")
#: Test cases per operation and phase: ~500 requests in all, about a minute on 2 cores.
MAX_EXAMPLES = 30
SEED = 20260101


def schemathesis_report(
    url: str,
    out: Path,
    *,
    hooks: Path | None = HOOKS,
    max_examples: int = MAX_EXAMPLES,
    seed: int = SEED,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run the schemathesis CLI against `url` (with `hooks`, or none: as anyone would run it
    from outside); its JSON report, with the CLI's output as ``output``."""
    report = out / "report.json"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{url}/openapi.json",
        "--checks=all",
        "--phases=examples,coverage,fuzzing,stateful",
        f"--max-examples={max_examples}",
        f"--seed={seed}",
        "--workers=1",
        "--request-timeout=30",
        "--generation-database=none",
        "--no-color",
        "--report=json",
        f"--report-json-path={report}",
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if k != "SCHEMATHESIS_HOOKS"}
    if hooks is not None:
        env["SCHEMATHESIS_HOOKS"] = str(hooks)
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


#: What schemathesis reports from outside (no hooks) that is not the API's fault, as
#: (method, operation, the answer's error code) -> what was sent. A multipart part that must
#: hold an image or an archive can only be `format: binary` in the schema (a part's `encoding`
#: contentType gets real files from schemathesis 4 only for media types a hook registers a
#: strategy for), so it fills such parts with any bytes (its PDF and zip samples, random bytes)
#: and counts the API's refusal as "Schema-valid request rejected" (ST202). Raw bodies are not
#: affected: the schema lists image types only, for which schemathesis sends real images.
BLACK_BOX_LIMITS = {
    ("POST", "translate", "corrupt"): "`file` or every `files` part not an image: 400",
    ("POST", "jobs", "unsupported_archive"): "`archive` not a zip or tar: 415",
}
_CURL = re.compile(
    r"^ *curl -X (\w+) .*?https?://[^/\s]+/v1/(?:models/[^/\s]+/)?(\w+)(?:[?'\s]|$)", re.MULTILINE
)
_ERROR_CODE = re.compile(r'"code":"(\w+)"')


def unexplained_failures(output: str) -> list[str]:
    """The failures the CLI printed that `BLACK_BOX_LIMITS` does not explain: any check but
    ST202, a request that is not multipart, or another operation or error code."""
    section = output.partition(" FAILURES ")[2].partition(" SUMMARY ")[0]
    failures = re.split(r"\n(?=\d+\. Test Case ID: )", section)[1:]
    unexplained = []
    for failure in failures:
        checks = set(re.findall(r"^- (ST\d+|\S+)", failure, re.MULTILINE))
        # the failing request is the last one shown (a stateful case shows the steps before)
        requests, code = list(_CURL.finditer(failure)), _ERROR_CODE.search(failure)
        last = requests[-1] if requests else None
        key = (*last.groups(), code.group(1)) if last and code else None
        multipart = last is not None and "multipart/form-data" in last.group(0)
        if checks != {"ST202"} or not multipart or key not in BLACK_BOX_LIMITS:
            unexplained.append(failure)
    return unexplained


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_schemathesis_from_outside_finds_only_arbitrary_bytes_in_file_parts(
    live_url: str, tmp_path: Path
) -> None:
    """Schemathesis as a user runs it (`schemathesis run URL/openapi.json --checks=all
    --max-examples=30 --seed=1`, no hooks; here also `--continue-on-failure`, to see every
    failure): every failure is one of `BLACK_BOX_LIMITS`."""
    report = schemathesis_report(
        live_url, tmp_path, hooks=None, seed=1, extra=("--continue-on-failure",)
    )
    output = report["output"]
    assert unexplained_failures(output) == [], output[-20000:]
    assert [f["code"] for f in report["failures"]] in ([], ["ST202"]), output[-20000:]
    assert report["errors"] == [], output[-20000:]
    assert report["operations"]["tested"] == 12, output[-20000:]


def test_unexplained_failures_reads_the_cli_output() -> None:
    def failure(n: int, check: str, curl: str, code: str) -> str:
        return (
            f"{n}. Test Case ID: x{n}\n\n- {check} Schema-valid request rejected\n\n"
            f'[400] Bad Request:\n\n    `{{"error":{{"code":"{code}","message":"m"}}}}`\n\n'
            f"Reproduce with:\n\n    {curl}\n"
        )

    form = "-H 'Content-Type: multipart/form-data; boundary=b' -d $'--b'"
    translate = f"curl -X POST {form} 'http://127.0.0.1:1/v1/models/tiny/translate?format=png'"
    jobs = f"curl -X POST {form} http://127.0.0.1:1/v1/jobs"
    raw = "curl -X POST -H 'Content-Type: application/octet-stream' -d $'%PDF' "
    known = [
        failure(1, "ST202", translate, "corrupt"),
        failure(2, "ST202", jobs, "unsupported_archive"),
        failure(
            3, "ST202", f"curl -X GET http://127.0.0.1:1/v1/models\n    {translate}", "corrupt"
        ),
    ]
    new = [
        failure(4, "ST202", translate, "invalid_parameters"),
        failure(5, "ST201", jobs, "unsupported_archive"),
        failure(6, "ST202", jobs, "corrupt"),
        failure(7, "ST202", raw + "'http://127.0.0.1:1/v1/models/tiny/translate'", "corrupt"),
        failure(
            8, "ST202", f"{translate}\n    curl -X GET http://127.0.0.1:1/v1/models", "corrupt"
        ),
    ]
    output = " FAILURES \n_ POST _\n" + "\n".join(known + new) + "\n SUMMARY \n"
    assert [f.split(".")[0] for f in unexplained_failures(output)] == ["4", "5", "6", "7", "8"]


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


def body_is_valid(schema: dict[str, Any], model: str, body: dict[str, Any]) -> bool:
    """Whether `body` (a file as "x") is valid for the component `model` of `schema`."""
    component = {**schema["components"]["schemas"][model], "components": schema["components"]}
    return bool(jsonschema_rs.validator_for(component).is_valid(body))


FILES = [(n, ["x"] * n) for n in (0, 1, 31, 32, 33)]


@pytest.mark.parametrize(("file", "files"), [(f, n) for f in (False, True) for n in FILES])
def test_translate_takes_file_and_files_up_to_max_files_in_all(
    file: bool, files: tuple[int, list[str]]
) -> None:
    count, parts = files
    body: dict[str, Any] = {"files": parts} | ({"file": "x"} if file else {})
    valid = body_is_valid(schema_of(max_files=32), "TranslateUpload", body)
    assert valid == (0 < file + count <= 32), body  # `files: []` sends nothing


JOB = {"model": "tiny", "direction": "AtoB"}


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"archive": "x"}, True),
        ({"files": ["x"]}, True),
        ({"archive": "x", "files": ["x", "y"]}, True),
        ({"archive": "x", "files": []}, True),
        ({"files": []}, False),
        ({}, False),
        ({"source": "/data/in"}, True),
        ({"source": "/data/in", "files": []}, True),
        ({"source": "/data/in", "archive": "x"}, False),
        ({"source": "/data/in", "files": ["x"]}, False),
    ],
)
def test_a_job_takes_an_archive_and_or_files_or_a_source(body: dict[str, Any], valid: bool) -> None:
    rooted = schema_of(jobs_roots=("/data",))
    assert body_is_valid(rooted, "JobUpload", {**JOB, **body}) == valid
    if "source" not in body:  # without UNPAIRED_JOBS_ROOTS there is no `source` at all
        assert body_is_valid(schema_of(), "JobUpload", {**JOB, **body}) == valid


def test_the_bodies_document_their_inputs() -> None:
    schema = schema_of()
    components = schema["components"]["schemas"]
    upload = components["JobUpload"]
    assert upload["additionalProperties"] is False
    assert "source" not in upload["properties"]  # no UNPAIRED_JOBS_ROOTS: uploads only
    assert not body_is_valid(schema, "JobUpload", {**JOB, "source": "/data/in"})
    assert components["TranslateUpload"]["additionalProperties"] is False
    rooted = schema_of(jobs_roots=("/data",))
    body = rooted["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/JobCreate"}
    assert "direction" in rooted["components"]["schemas"]["JobCreate"]["required"]
    jobs = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert "application/zip" in jobs["multipart/form-data"]["encoding"]["archive"]["contentType"]
    # raw bodies: the image types only (schemathesis sends real images for them)
    raw = schema["paths"]["/v1/models/{name}/translate"]["post"]["requestBody"]["content"]
    assert set(raw) == {"multipart/form-data", *(f"image/{t}" for t in IMAGE_TYPES)}


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
