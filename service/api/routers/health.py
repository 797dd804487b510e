"""Probes and metrics: ``/healthz`` (alive), ``/readyz`` (can serve), ``/metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.schemas import ErrorResponse, Health, ReadinessReport
from service.api.state import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    summary="The service can translate now",
    description=(
        "Embedded mode: the models are loaded and warmed. Distributed mode: Redis answers; "
        "workers may be scaled to zero (a request then waits in the queue for one until its "
        "deadline), so `checks.workers` and `checks.worker_names` report the workers "
        "consuming the interactive queue whose heartbeat is recent, without deciding "
        "readiness. 503 with the same body while not ready."
    ),
    responses={503: {"model": ReadinessReport, "description": "not ready (yet)"}},
)
async def readyz(state: StateDep) -> JSONResponse:
    if state.translator is None:
        report = ReadinessReport(ready=False, mode=_mode(state), checks={"starting": True})
    else:
        readiness = await state.translator.readiness()
        report = ReadinessReport(ready=readiness.ready, mode=_mode(state), checks=readiness.checks)
    return JSONResponse(report.model_dump(mode="json"), status_code=200 if report.ready else 503)


def _mode(state: StateDep) -> str:
    return "distributed" if state.settings.distributed else "embedded"


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        503: {"model": ErrorResponse},
    },
)
async def metrics(state: StateDep) -> Response:
    if state.translator is not None:
        state.metrics.queue_depth.set(await state.translator.queue_depth())
        readiness = await state.translator.readiness()
        workers = readiness.checks.get("workers")
        if isinstance(workers, int):
            state.metrics.workers.set(workers)
        memory = readiness.checks.get("memory")
        if isinstance(memory, dict):
            state.metrics.observe_memory(memory)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
