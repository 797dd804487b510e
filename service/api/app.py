"""The FastAPI application: :func:`create_app` builds it from settings.

Models (embedded mode) or the Redis connection (distributed mode) are set up when the server
starts, in the lifespan, and torn down when it stops; building the app itself is cheap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from service import failpoints
from service.api.error_handlers import AllowedMethods, install_error_handlers
from service.api.metrics import Metrics
from service.api.middleware import ServiceMiddleware
from service.api.openapi import install_openapi
from service.api.routers import bulk_jobs, examples, health, model_catalog, translate, web
from service.api.security import ApiKeys, RateLimiter
from service.api.state import ServiceState
from service.inference.priorities import favour_interactive
from service.inference.requests import Translator
from service.jobs.manager import JobManager
from service.settings import Settings, get_settings
from service.store.catalog import ModelCatalog
from service.store.model_store import ModelStore

__all__ = ["create_app"]

log = logging.getLogger("unpaired.api")

DESCRIPTION = """
Unpaired image-to-image translation (CycleGAN, DiscoGAN) as a service.

- `GET /v1/models` lists the models of the store; `POST /v1/models/{name}/translate` translates.
- Errors are always JSON: `{"error": {"code": "...", "message": "..."}}` (`ErrorResponse`).
- `POST /v1/jobs` converts a whole archive, several files or a folder in the background;
  `GET /v1/jobs/{id}` reports progress, `GET /v1/jobs/{id}/result` downloads the outputs.
- With API keys configured, send `Authorization: Bearer <key>`.
"""


async def start_translator(settings: Settings) -> Translator:
    """Embedded: load and warm the models here. Distributed: connect to Redis. (Imported here:
    a distributed API process never loads an engine.)"""
    if settings.distributed:
        from service.distributed.remote_translator import RemoteTranslator

        return await RemoteTranslator.connect(settings)
    from service.inference.local_translator import LocalTranslator

    return await run_in_threadpool(LocalTranslator.from_settings, settings)


def start_jobs(settings: Settings, translator: Translator) -> tuple[JobManager, Callable[[], None]]:
    """The mode's job manager and what stops it (blocking: opens files, Redis, threads)."""
    if settings.distributed:
        from service.distributed.job_dispatch import start_distributed_jobs

        return start_distributed_jobs(settings)
    from service.inference.local_translator import LocalTranslator
    from service.jobs.embedded_runner import start_embedded_jobs

    assert isinstance(translator, LocalTranslator)
    return start_embedded_jobs(settings, translator)


async def _sweep_forever(jobs: JobManager, retention_s: float) -> None:
    """Remove expired jobs now and then (every API process may; removal is idempotent)."""
    while True:
        try:
            await run_in_threadpool(jobs.sweep)
        except Exception as exc:  # Redis away, a file busy: try again next time
            log.warning("could not remove expired jobs: %s", exc)
        await asyncio.sleep(min(600.0, retention_s / 10))


def _operation_id(route: APIRoute) -> str:
    """The handler's name (`get_job`): what a generated client names its functions."""
    return route.name


def _rate_limiter(settings: Settings) -> RateLimiter | None:
    if settings.rate_limit is None:
        return None
    return RateLimiter(settings.rate_limit, settings.rate_limit_burst)


def create_app(
    settings: Settings | None = None, *, on_ready: Callable[[str], None] | None = None
) -> FastAPI:
    """The app; `on_ready(mode)` runs once models are loaded (or Redis is set up)."""
    settings = settings or get_settings()
    keys, limiter = ApiKeys(settings.api_keys), _rate_limiter(settings)
    state = ServiceState(settings=settings, metrics=Metrics(), keys=keys, limiter=limiter)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.catalog = ModelCatalog(ModelStore(settings.store, cache_dir=settings.cache_dir))
        favour_interactive()  # bulk chunks may run in this process (embedded mode)
        disarm = failpoints.arm(settings.failpoints)
        state.translator = await start_translator(settings)
        jobs, stop_jobs = await run_in_threadpool(start_jobs, settings, state.translator)
        state.jobs = jobs
        sweeper = asyncio.create_task(_sweep_forever(jobs, settings.job_retention_s))
        log.info(
            "serving in %s mode from store %s",
            state.translator.mode,
            settings.store,
            extra={"mode": state.translator.mode},
        )
        if on_ready is not None:
            on_ready(state.translator.mode)
        try:
            yield
        finally:
            sweeper.cancel()
            state.jobs = None
            await run_in_threadpool(stop_jobs)  # running chunks finish with the translator
            translator, state.translator = state.translator, None
            await translator.close()
            disarm()

    app = FastAPI(
        title="unpaired",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    app.state.service = state
    routers = [health.router, model_catalog.router, translate.router, bulk_jobs.router]
    routers += [examples.router, web.router]
    for router in routers:
        app.include_router(router)
    routes = [*app.routes, *(route for router in routers for route in router.routes)]
    install_error_handlers(app, AllowedMethods(routes))
    install_openapi(app, settings)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", "Accept"],
            expose_headers=[
                "X-Request-ID",
                "X-Model",
                "X-Direction",
                "X-Batch-Size",
                "X-Queue-Seconds",
                "X-Engine-Seconds",
                "X-Worker",
                "Retry-After",
            ],
        )
    app.add_middleware(
        ServiceMiddleware,
        metrics=state.metrics,
        max_inflight=settings.max_inflight,
        max_request_bytes=settings.max_request_bytes,
        max_inflight_bytes=settings.max_inflight_bytes,
        body_limits={"/v1/jobs": settings.max_job_bytes},
    )
    return app
