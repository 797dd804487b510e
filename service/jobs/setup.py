"""Building the job service for a mode: SQLite + in-process runner, or Redis + Celery."""

from __future__ import annotations

from collections.abc import Callable

from ..settings import Settings, SettingsError
from ..translation import LocalTranslator, Translator
from .files import JobFiles
from .service import JobService

__all__ = ["start_jobs"]


def start_jobs(settings: Settings, translator: Translator) -> tuple[JobService, Callable[[], None]]:
    """The job service and what stops it (blocking: opens files, Redis, threads)."""
    files = JobFiles(settings.jobs_dir, settings.jobs_roots)
    options = {
        "chunk_size": settings.chunk_size,
        "max_items": settings.max_job_items,
        "retention_s": settings.job_retention_s,
    }
    if settings.distributed:
        import redis

        from ..celery_app import CONNECT_TIMEOUT_S, make_celery
        from .redis_store import RedisJobStore
        from .runner import CeleryDispatcher

        assert settings.broker_url is not None
        client = redis.Redis.from_url(
            settings.broker_url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=10
        )
        app = make_celery(settings, role="api")
        service = JobService(
            RedisJobStore(client), files, CeleryDispatcher(app, settings.bulk_queue), **options
        )

        def close_distributed() -> None:
            client.close()

        return service, close_distributed

    from .runner import EmbeddedRunner
    from .sqlite_store import SqliteJobStore

    if "://" in settings.jobs_dir and settings.jobs_db is None:
        raise SettingsError(
            "UNPAIRED_JOBS_DB: embedded mode keeps job state in a local SQLite file; set it "
            f"when UNPAIRED_JOBS_DIR is a URL ({settings.jobs_dir})"
        )
    assert isinstance(translator, LocalTranslator)
    store = SqliteJobStore(settings.jobs_database)
    runner = EmbeddedRunner(
        store, translator, retries=settings.chunk_retries, threads=settings.bulk_concurrency
    )
    runner.start()

    def close_embedded() -> None:
        runner.close()
        store.close()

    return JobService(store, files, runner, **options), close_embedded
