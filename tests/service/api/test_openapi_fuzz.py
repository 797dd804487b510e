"""schemathesis against the app's own OpenAPI schema, on a live `unpaired serve`.

Every operation gets generated requests, valid and invalid: no answer may be a 5xx, and every
answer must match what the schema declares (status, content type, headers, body).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.api.app import create_app
from service.settings import Settings
from service.store.model_store import ModelStore
from tests.service.servers import running_server, service_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


# the schema the app serves at /openapi.json (building the app loads nothing)
schema = schemathesis.openapi.from_dict(create_app(Settings(store="unused")).openapi())


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory, exported_model: Path) -> Iterator[str]:
    root = tmp_path_factory.mktemp("fuzz")
    ModelStore(root / "store").publish(exported_model)
    with running_server(service_env(root / "store"), root / "api.log") as server:
        assert httpx.get(f"{server.url}/openapi.json").json() == schema.raw_schema
        yield server.url


OPERATIONS = [result.ok() for result in schema.get_all_operations()]
#: a real model, so translate requests reach the body handling instead of a 404
FIXED_PATH = {"/v1/models/{name}/translate": {"name": "tiny"}}


CASES = [
    pytest.param(operation, mode, id=f"{operation.label} {mode.value}")
    for operation in OPERATIONS
    for mode in GenerationMode
    # only translate takes input a schema can forbid; the others have no invalid request
    if mode is GenerationMode.POSITIVE or operation.method == "post"
]


@pytest.mark.parametrize(("operation", "mode"), CASES)
def test_no_5xx_and_every_answer_matches_the_schema(
    operation: APIOperation, mode: GenerationMode, live_url: str
) -> None:
    strategy = operation.as_strategy(
        generation_mode=mode, path_parameters=FIXED_PATH.get(operation.path)
    )

    @given(case=strategy)
    @settings(
        max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def conforms(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=live_url, checks=CHECKS)

    conforms()
