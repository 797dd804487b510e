"""The same failure gets the same answer in embedded and distributed mode.

Every error case the API documents runs against a real `unpaired serve` in each mode (the
distributed one with a private Redis and a real `unpaired worker`), and must come back with
the same status and `error.code` in both, equal to the one expected. Failures that happen
inside a worker (an image it cannot decode, a model whose files were tampered with, a
deadline) travel back through Celery, which is where the two modes used to part ways.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.local_redis import LocalRedis
from service.api.app import create_app
from service.settings import Settings
from service.store.model_store import ModelStore
from tests.conftest import edited_copy
from tests.service.api import conftest as api_fixtures
from tests.service.api.conftest import png
from tests.service.api.test_translate_api import BAD_REQUESTS
from tests.service.gates import Gate, failpoints
from tests.service.servers import running_server, running_workers, service_env, wait_for_workers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

one_way_model = api_fixtures.one_way_model  # the API tests' fixture, used here too

GOOD = {"authorization": "Bearer good"}
SPAM = {"authorization": "Bearer spam"}
BURST = 400  # requests one key may send at once: more than every case below together
TRANSLATE = "/v1/models/tiny/translate?direction=AtoB"
LATE_REQUEST = "held-past-the-deadline"  # the request id the decode gate holds


@dataclass(frozen=True)
class Case:
    method: str
    url: str
    status: int
    code: str | None  # None: any code (the status is what is compared)
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)  # httpx's content= / files= / json=


def _zip(count: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(count):
            archive.writestr(f"{i}.png", png(offset=i))
    return buffer.getvalue()


def translate_cases() -> dict[str, Case]:
    """The translate endpoint's own error table, and what only a worker can find out."""
    cases = {
        name: Case(
            "POST", url, status, code, {"content-type": "image/png", **headers}, {"content": body}
        )
        for name, (url, headers, body, status, code) in BAD_REQUESTS.items()
    }
    cases["tampered model"] = Case(
        "POST",
        "/v1/models/tampered/translate?direction=AtoB",
        503,
        "model_unavailable",
        {"content-type": "image/png"},
        {"content": png()},
    )
    cases["two-way model without direction"] = Case(
        "POST", "/v1/models/tiny/translate", 422, "direction_required",
        {"content-type": "image/png"}, {"content": png()},
    )  # fmt: skip
    cases["unknown direction"] = Case(
        "POST", "/v1/models/oneway/translate?direction=BtoA", 404, "direction_not_found",
        {"content-type": "image/png"}, {"content": png()},
    )  # fmt: skip
    cases["wrong method"] = Case("GET", TRANSLATE, 405, "method_not_allowed")
    return cases


def _archive(data: bytes) -> dict[str, Any]:
    """A multipart job submission of `data` as the archive."""
    return {"data": {"model": "tiny", "direction": "AtoB"}, "files": {"archive": ("a.zip", data)}}


def job_cases() -> dict[str, Case]:
    return {
        "job: not a zip": Case(
            "POST", "/v1/jobs", 415, "unsupported_archive",
            body=_archive(b"plain text"),
        ),
        "job: broken zip": Case(
            "POST", "/v1/jobs", 400, "bad_archive",
            body=_archive(b"PK\x03\x04broken"),
        ),
        "job: too many images": Case(
            "POST", "/v1/jobs", 413, "too_large",
            body=_archive(_zip(6)),
        ),
        "job: text body": Case(
            "POST", "/v1/jobs", 415, "unsupported_media_type",
            {"content-type": "text/plain"}, {"content": b"hello"},
        ),
        "job: source outside the roots": Case(
            "POST", "/v1/jobs", 422, "invalid_location",
            body={"json": {"model": "tiny", "direction": "AtoB", "source": "/etc"}},
        ),
        "job: unknown model": Case(
            "POST", "/v1/jobs", 404, "model_not_found",
            body={"json": {"model": "zebra", "direction": "AtoB", "source": "/etc"}},
        ),
        "job: unknown job": Case("GET", f"/v1/jobs/{'0' * 32}", 404, "job_not_found"),
        "job: unknown job cancelled": Case("DELETE", f"/v1/jobs/{'0' * 32}", 404, "job_not_found"),
        "job: wrong method": Case("PUT", "/v1/jobs", 405, "method_not_allowed"),
    }  # fmt: skip


CASES = {
    **translate_cases(),
    **job_cases(),
    "no API key": Case("GET", "/v1/models", 401, "unauthorized", {"authorization": ""}),
    "wrong API key": Case("GET", "/v1/models", 401, "unauthorized", {"authorization": "Bearer x"}),
}
#: Answered after the table above, in order: they depend on time or on the key's budget.
LAST = ("job: result before it ends", "over the rate limit", "past the deadline")


def _send(client: httpx.Client, case: Case) -> tuple[int, str | None]:
    response = client.request(case.method, case.url, headers={**GOOD, **case.headers}, **case.body)
    return _answer(response)


def _answer(response: httpx.Response) -> tuple[int, str | None]:
    """Status and error code; an answer that is not a JSON error fails here, readably."""
    kind = response.headers["content-type"]
    assert kind.startswith("application/json"), f"{response.status_code} {kind}"
    return response.status_code, response.json()["error"]["code"]


def _unfinished_result(client: httpx.Client, gates: Gates) -> tuple[int, str | None]:
    """A job whose chunk is held at its gate, asked for its result: 409 while it runs."""
    files = {"archive": ("one.zip", _zip_of(png()))}
    submitted = client.post(
        "/v1/jobs", headers=GOOD, data={"model": "tiny", "direction": "AtoB"}, files=files
    )
    assert submitted.status_code == 202, submitted.text
    gates.chunk.wait_reached()
    answer = _answer(client.get(f"{submitted.json()['result_url']}", headers=GOOD))
    gates.chunk.open()
    return answer


def _zip_of(image: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("one.png", image)
    return buffer.getvalue()


def _over_the_rate_limit(client: httpx.Client) -> tuple[int, str | None]:
    for _ in range(BURST):
        assert client.get("/v1/models", headers=SPAM).status_code == 200
    response = client.get("/v1/models", headers=SPAM)
    assert "retry-after" in response.headers
    return _answer(response)


def _past_the_deadline(client: httpx.Client, gates: Gates) -> tuple[int, str | None]:
    """An image held at its decoding (a failpoint gate) past the server's 4 s deadline: late
    on every machine, however fast (a large image once finished in time on a faster one)."""
    headers = {**GOOD, "content-type": "image/png", "x-request-id": LATE_REQUEST}
    response = client.post(TRANSLATE, headers=headers, content=png())
    gates.decode.open()
    return _answer(response)


EXPECTED_LAST = {
    "job: result before it ends": (409, "job_not_finished"),
    "over the rate limit": (429, "rate_limited"),
    "past the deadline": (504, "deadline_exceeded"),
}


@dataclass(frozen=True)
class Gates:
    """Where one server's timed cases wait: the job's chunk, and the late request's decoding."""

    chunk: Gate
    decode: Gate

    @classmethod
    def in_folder(cls, folder: Path) -> Gates:
        return cls(Gate(folder / "chunk"), Gate(folder / "decode"))

    def failpoints(self) -> str:
        return failpoints(
            self.chunk.failpoint("chunk"),
            self.decode.failpoint("decode", match=LATE_REQUEST),
        )


def answers_of(url: str, gates: Gates) -> dict[str, tuple[int, str | None]]:
    with httpx.Client(base_url=url, timeout=120) as client:
        found = {name: _send(client, case) for name, case in CASES.items()}
        found[LAST[0]] = _unfinished_result(client, gates)
        found[LAST[1]] = _over_the_rate_limit(client)
        found[LAST[2]] = _past_the_deadline(client, gates)
    return found


@pytest.fixture(scope="module")
def store(
    tmp_path_factory: pytest.TempPathFactory, exported_model: Path, one_way_model: Path
) -> Path:
    """`tiny`, `oneway` (AtoB only), and `tampered`: a copy of tiny with a modified graph."""
    root = tmp_path_factory.mktemp("parity-store") / "store"
    models = ModelStore(root)
    models.publish(exported_model)
    models.publish(one_way_model)
    copy = edited_copy(exported_model, tmp_path_factory.mktemp("tampered") / "tampered")
    manifest = json.loads((copy / "manifest.json").read_text())
    models.publish(copy)
    graph = root / "tampered" / manifest["directions"]["AtoB"]["onnx"]
    data = bytearray(graph.read_bytes())
    data[-1] ^= 0xFF  # same size, another sha256
    graph.write_bytes(bytes(data))
    return root


def _env(store: Path, gates: Gates, **extra: object) -> dict[str, str]:
    return service_env(
        store,
        failpoints=gates.failpoints(),
        models="tiny,oneway",  # `tampered` is only opened by the request that asks for it
        api_keys="good,spam",
        rate_limit=0.001,
        rate_limit_burst=BURST,
        max_job_items=5,
        request_timeout_s=4,
        visibility_timeout_s=2,
        **extra,
    )


@pytest.fixture(scope="module")
def answers(
    store: Path, tmp_path_factory: pytest.TempPathFactory, make_redis: Callable[..., LocalRedis]
) -> Iterator[dict[str, dict[str, tuple[int, str | None]]]]:
    logs = tmp_path_factory.mktemp("parity-logs")
    found: dict[str, dict[str, tuple[int, str | None]]] = {}
    gates = Gates.in_folder(tmp_path_factory.mktemp("embedded-gates"))
    with running_server(_env(store, gates), logs / "embedded.log") as server:
        found["embedded"] = answers_of(server.url, gates)
    gates = Gates.in_folder(tmp_path_factory.mktemp("distributed-gates"))
    with make_redis(tmp_path_factory.mktemp("parity-redis")) as redis:
        env = _env(store, gates, broker_url=redis.url)
        with running_workers(env, logs), running_server(env, logs / "api.log") as server:
            wait_for_workers(server.url, 1)
            found["distributed"] = answers_of(server.url, gates)
    yield found


@pytest.mark.parametrize("case", [*CASES, *LAST])
def test_both_modes_answer_the_same_status_and_code(
    answers: dict[str, dict[str, tuple[int, str | None]]], case: str
) -> None:
    expected = EXPECTED_LAST.get(case) or (CASES[case].status, CASES[case].code)
    embedded, distributed = answers["embedded"][case], answers["distributed"][case]
    assert embedded == distributed, f"{case}: embedded {embedded}, distributed {distributed}"
    assert embedded[0] == expected[0] and expected[1] in (None, embedded[1]), embedded


def test_the_cases_cover_every_error_status_the_api_documents(tmp_path: Path) -> None:
    schema = create_app(Settings(store=str(tmp_path), jobs_dir=str(tmp_path / "j"))).openapi()
    documented = {
        int(status)
        for path, operations in schema["paths"].items()
        if path.startswith("/v1/")
        for operation in operations.values()
        for status in operation.get("responses", {})
        if status.isdigit() and int(status) >= 400
    }
    covered = {case.status for case in CASES.values()} | {s for s, _ in EXPECTED_LAST.values()}
    assert documented <= covered, f"no parity case for {sorted(documented - covered)}"
