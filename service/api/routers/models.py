"""``/v1/models``: what the store holds, as the manifests describe it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from service.api.schemas import ErrorResponse, ModelInfo, ModelList, ModelName
from service.api.state import AuthDep, StateDep

router = APIRouter(prefix="/v1/models", tags=["models"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "API key missing or wrong"},
    429: {"model": ErrorResponse, "description": "rate limit; see Retry-After"},
    503: {"model": ErrorResponse, "description": "still starting, or the store is unreadable"},
}


@router.get("", summary="List the models", responses=_ERRORS)
async def list_models(state: StateDep, _: AuthDep) -> ModelList:
    catalog, _translator = state.ready()
    manifests = await run_in_threadpool(catalog.manifests)
    problems = await run_in_threadpool(catalog.problems)
    return ModelList(
        models=[ModelInfo.from_manifest(m) for m in manifests], problems=list(problems)
    )


@router.get(
    "/{name}",
    summary="One model, by name or alias",
    responses={404: {"model": ErrorResponse, "description": "no such model"}, **_ERRORS},
)
async def get_model(name: ModelName, state: StateDep, _: AuthDep) -> ModelInfo:
    catalog, _translator = state.ready()
    return ModelInfo.from_manifest(await run_in_threadpool(catalog.resolve, name))
