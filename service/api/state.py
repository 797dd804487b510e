"""What the request handlers share: settings, the catalog, the translator, metrics, security.

Built by :func:`service.api.app.create_app`; the translator and the catalog are created when the
server starts (lifespan), since loading and warming models or reaching Redis takes time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from models.manifest import ModelManifest
from service.api.error_handlers import ApiError
from service.api.metrics import Metrics
from service.api.security import ApiKeys, RateLimiter
from service.inference.requests import Translator
from service.jobs.manager import JobManager
from service.settings import Settings
from service.store.catalog import ModelCatalog

__all__ = ["AuthDep", "ServiceState", "StateDep", "resolve_model"]


@dataclass(eq=False)
class ServiceState:
    settings: Settings
    metrics: Metrics
    keys: ApiKeys
    limiter: RateLimiter | None
    catalog: ModelCatalog | None = None  # set at start-up
    translator: Translator | None = None
    jobs: JobManager | None = None

    def ready(self) -> tuple[ModelCatalog, Translator]:
        if self.catalog is None or self.translator is None:
            raise ApiError(503, "starting", "the server is still starting; retry shortly")
        return self.catalog, self.translator


async def resolve_model(catalog: ModelCatalog, name: str) -> ModelManifest:
    """A model by name or alias: from a fresh snapshot on the event loop, in a thread only when
    the store may have to be read (a stale snapshot, an unknown name)."""
    manifest = catalog.resolve_fresh(name)
    return manifest if manifest is not None else await run_in_threadpool(catalog.resolve, name)


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in its thread
# pool: two thread hops on every request for work that never blocks. Removing them and the
# catalog's hop cut the API's CPU per request by 32% with a model that costs nothing
# (docs/benchmarks.md, "Serving's own cost").
async def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


async def authorize(request: Request, state: StateDep) -> str:
    """Who is calling: the API key's id when keys are configured, else the client address.

    Raises 401 for a missing or wrong key and 429 over the rate limit.
    """
    if state.keys.required:
        client = "key:" + state.keys.identify(request.headers.get("authorization"))
    else:
        client = "addr:" + (request.client.host if request.client else "unknown")
    if state.limiter is not None:
        state.limiter.take(client)
    request.scope.setdefault("state", {}).setdefault("log", {})["client_id"] = client
    return client


AuthDep = Annotated[str, Depends(authorize)]
