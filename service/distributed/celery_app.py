"""The Celery application shared by the API (which only publishes) and the workers.

Rules this configuration holds, and why:

- late acks and ``reject_on_worker_lost``: a request is acknowledged only after its result is
  stored, so a worker that dies (even SIGKILL) loses nothing: Redis hands the unacknowledged
  message to another worker once ``visibility_timeout_s`` has passed;
- results are idempotent (the same input gives the same bytes, and a task whose result is
  already stored returns it without running again), so a redelivered request is harmless; a
  request redelivered while it still runs (longer than the visibility timeout: a large photo)
  waits for the running copy's answer (:mod:`service.distributed.run_claims`);
- prefetch is ``2 x max_batch`` per worker (one batch running, the next one forming), and the
  threads pool runs that many requests at once into one in-process micro-batcher; no process
  ever forks, so a CUDA context is never inherited;
- results expire (``result_expires_s``); msgpack carries image bytes without base64 in JSON;
- the API publishes without retrying, so an unreachable Redis is a quick 503, not a hang.
"""

from __future__ import annotations

from typing import Any, Literal

from celery import Celery
from celery.backends.redis import RedisBackend

from service.settings import Settings

__all__ = ["ApiResultBackend", "make_celery"]

#: Seconds to wait for a new Redis connection before calling the broker unreachable (a stopped
#: Redis refuses at once; this bounds an unreachable host, and must survive a loaded machine).
CONNECT_TIMEOUT_S = 2.0


class ApiResultBackend(RedisBackend):
    """The API's view of the result backend: it decodes results, never subscribes itself.

    Celery's own backend subscribes a blocking pub/sub connection to every task it sends; the
    API waits for results on its asyncio connection instead
    (:mod:`service.distributed.result_waiter`).
    """

    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None


def make_celery(settings: Settings, *, role: Literal["api", "worker"]) -> Celery:
    url = settings.broker_url
    if url is None:
        raise ValueError("distributed mode needs UNPAIRED_BROKER_URL (redis://host:port/db)")
    backend = f"{__name__}:ApiResultBackend+{url}" if role == "api" else url
    app = Celery("unpaired", broker=url, backend=backend, set_as_current=False)
    restore_every = max(1.0, min(5.0, settings.visibility_timeout_s / 4))
    app.conf.update(
        task_serializer="msgpack",
        result_serializer="msgpack",
        accept_content=["msgpack"],
        result_accept_content=["msgpack"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_default_queue=settings.queue,
        task_create_missing_queues=True,
        task_publish_retry=False,
        task_track_started=False,
        result_expires=settings.result_expires_s,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=CONNECT_TIMEOUT_S * 2,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            # look for messages of dead workers every few seconds, not every 100 s
            "unacked_restore_interval": restore_every,
            "unacked_restore_throttle": 1,
            # a worker asks Redis for its queues in the order given (interactive, then bulk)
            # rather than round-robin, so bulk work never holds back an interactive request
            "queue_order_strategy": "priority",
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
            "health_check_interval": 10,
        },
        redis_socket_connect_timeout=CONNECT_TIMEOUT_S,
        redis_backend_health_check_interval=10,
    )
    return app
