"""``/v1/models``: what the store holds, as the manifests describe it."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from service.api.openapi import error_responses
from service.api.schemas import ModelInfo, ModelList, ModelName
from service.api.state import AuthDep, StateDep, resolve_model

router = APIRouter(prefix="/v1/models", tags=["models"])

_UNAVAILABLE: Final = (
    "`starting`, `overloaded`: see Retry-After; `model_unavailable`: the store or a manifest "
    "cannot be read"
)


@router.get("", summary="List the models", responses=error_responses({503: _UNAVAILABLE}))
async def list_models(state: StateDep, _: AuthDep) -> ModelList:
    catalog, _translator = state.ready()
    manifests = await run_in_threadpool(catalog.manifests)
    problems = await run_in_threadpool(catalog.problems)
    default = state.settings.default_model
    named = {n: m.name for m in manifests for n in (m.name, *m.aliases)}
    return ModelList(
        models=[ModelInfo.from_manifest(m) for m in manifests],
        problems=list(problems),
        default=named.get(default) if default else None,
    )


@router.get(
    "/{name}",
    summary="One model, by name or alias",
    responses=error_responses(
        {404: "`model_not_found`: no such model (the message lists the store's)", 503: _UNAVAILABLE}
    ),
)
async def get_model(name: ModelName, state: StateDep, _: AuthDep) -> ModelInfo:
    catalog, _translator = state.ready()
    return ModelInfo.from_manifest(await resolve_model(catalog, name))
