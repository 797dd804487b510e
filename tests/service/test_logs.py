"""The serving processes' logs, as a log pipeline reads them: one clean JSON object per line."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.service.servers import running_server, service_env


def test_a_real_start_up_log_is_json_without_colour_escapes(
    model_store: Path, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    with running_server(service_env(model_store), log) as server:
        assert httpx.get(f"{server.url}/v1/models", timeout=10).status_code == 200
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    loggers = {record["logger"] for record in records}
    assert {"uvicorn.error", "unpaired.serve", "unpaired.access"} <= loggers, loggers
    for line, record in zip(lines, records, strict=True):
        assert "color_message" not in record, line
        assert "\x1b" not in line and "\\u001b" not in line, line
