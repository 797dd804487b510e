"""Distributed mode's jobs, API side: Redis job state, one bulk-queue task per chunk."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import redis
from celery import Celery

from service.distributed.celery_app import CONNECT_TIMEOUT_S, make_celery
from service.distributed.messages import BULK_TASK
from service.jobs.manager import JobManager
from service.jobs.redis_job_store import RedisJobStore
from service.jobs.storage import JobFiles
from service.settings import Settings

__all__ = ["CeleryDispatcher", "start_distributed_jobs"]


class CeleryDispatcher:
    """Publishes each chunk of a job as one task on the bulk queue."""

    def __init__(self, app: Celery, queue: str) -> None:
        self.app = app
        self.queue = queue

    def dispatch(self, job_id: str, chunks: Sequence[int]) -> None:
        with self.app.producer_or_acquire() as producer:
            for index in chunks:
                self.app.send_task(
                    BULK_TASK, args=[job_id, index], queue=self.queue, producer=producer
                )


def start_distributed_jobs(settings: Settings) -> tuple[JobManager, Callable[[], None]]:
    """The job manager of an API process in distributed mode, and what closes it."""
    assert settings.broker_url is not None
    client = redis.Redis.from_url(
        settings.broker_url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=10
    )
    dispatcher = CeleryDispatcher(make_celery(settings, role="api"), settings.bulk_queue)
    manager = JobManager.from_settings(
        settings, RedisJobStore(client), JobFiles.from_settings(settings), dispatcher
    )
    return manager, client.close
