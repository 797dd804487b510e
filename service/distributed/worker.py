"""``unpaired worker``: a Celery worker that batches requests from Redis into engine calls.

Start one per GPU (pinned with ``CUDA_VISIBLE_DEVICES``), on any machine that reaches Redis;
scaling out is starting more. A worker loads and warms its models before it consumes, says it
is alive through a heartbeat the API's ``/readyz`` reads, and on SIGTERM finishes the requests
it holds (Celery's warm shutdown) while the ones it had not started go back to the queue.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

import redis
from celery import Celery

from service import failpoints
from service.distributed.bulk_task import BulkSlots, register_bulk_task
from service.distributed.celery_app import CONNECT_TIMEOUT_S, make_celery
from service.distributed.delivery import mark_received
from service.distributed.frame_sharing import FrameHelper, SharedFrames, register_frame_task
from service.distributed.heartbeat import WorkerHeartbeat
from service.distributed.interactive_task import TranslateRequests, register_translate_task
from service.distributed.kombu_patches import released_connections_are_connection_errors
from service.distributed.messages import TRANSLATE_TASK, ImageCarrier
from service.distributed.quarantine import Quarantine
from service.distributed.run_claims import RunClaims, lease_seconds
from service.inference.local_translator import LocalTranslator
from service.inference.priorities import favour_interactive
from service.jobs.attempts import ChunkPolicy
from service.jobs.redis_job_store import RedisJobStore
from service.logs import configure_logging
from service.settings import Settings

__all__ = ["default_worker_name", "run_worker"]

log = logging.getLogger("unpaired.worker")


def default_worker_name() -> str:
    """Unique per process, so several workers on one machine count as several."""
    return f"unpaired-{os.getpid()}@{socket.gethostname()}"


def run_worker(settings: Settings, *, queues: Sequence[str] = (), name: str | None = None) -> None:
    """Load the models, then consume `queues` until stopped (default: the interactive queue,
    the frames of other workers' clips, then the bulk queue; Redis is asked in that order, so
    interactive requests go first)."""
    configure_logging(settings.log_format, settings.log_level)
    released_connections_are_connection_errors()
    favour_interactive()
    failpoints.arm(settings.failpoints)
    assert settings.broker_url is not None
    name = name or settings.worker_name or default_worker_name()
    queues = list(queues) or [settings.queue, settings.frames_queue, settings.bulk_queue]
    app = make_celery(settings, role="worker")
    translator = LocalTranslator.from_settings(settings, worker=name)
    client = redis.Redis.from_url(
        settings.broker_url, socket_connect_timeout=CONNECT_TIMEOUT_S, health_check_interval=10
    )
    _register_tasks(app, settings, translator, client, name)
    heartbeat = WorkerHeartbeat(
        client,
        name,
        {
            "queues": queues,
            "engines": translator.pool.describe(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "max_batch": settings.max_batch,
            "prefetch": settings.prefetch,
        },
        interval=settings.heartbeat_s,
        live=lambda: {"memory": translator.budget.describe()},
    )
    _connect_signals(name, queues, translator, client, heartbeat)
    app.worker_main(
        [
            "worker",
            f"--hostname={name}",
            "--pool=threads",  # never fork: a CUDA context must not be inherited
            f"--concurrency={settings.prefetch}",
            f"--queues={','.join(queues)}",
            f"--loglevel={settings.log_level.upper()}",
            "--without-mingle",
            "--without-gossip",
        ]
    )


def _register_tasks(
    app: Celery, settings: Settings, translator: LocalTranslator, client: redis.Redis, name: str
) -> None:
    """The interactive task, the bulk-job task and the clip-frame task, on this worker's
    translator."""
    claims = RunClaims(client, worker=name, lease_s=lease_seconds(settings.visibility_timeout_s))
    requests = TranslateRequests(
        translator=translator,
        client=client,
        carrier=ImageCarrier(settings.blob_threshold_bytes),
        result_ttl=settings.result_expires_s,
        claims=claims,
        quarantine=Quarantine(client, ttl=settings.result_expires_s),
        poison_attempts=settings.poison_attempts,
    )
    register_translate_task(app, requests)
    helper = FrameHelper(translator, client, name, ttl=settings.result_expires_s, claims=claims)
    register_frame_task(app, helper)
    register_bulk_task(
        app,
        RedisJobStore(client),
        translator,
        # a retry's ETA past the visibility timeout would be redelivered before it is due
        policy=ChunkPolicy.from_settings(settings, backoff_cap=settings.visibility_timeout_s / 2),
        claims=claims,
        slots=BulkSlots(app, settings.bulk_queue, settings.bulk_concurrency),
        frames_for=lambda spec, stop: SharedFrames(
            app, helper, settings.frames_queue, spec.model, spec.direction, should_stop=stop
        ),
    )


def _connect_signals(
    name: str,
    queues: list[str],
    translator: LocalTranslator,
    client: redis.Redis,
    heartbeat: WorkerHeartbeat,
) -> None:
    """Beat once consuming; stop beating and finish the held requests on shutdown; tell the
    API's delivery ledger as soon as an interactive message is in this worker's hands."""
    from celery.signals import task_received, worker_ready, worker_shutdown

    def on_ready(**_: Any) -> None:
        heartbeat.start()
        engines = translator.pool.describe()
        log.info(
            "worker %s consuming %s with %d engine(s)",
            name,
            ",".join(queues),
            len(engines),
            extra={"worker": name, "queues": queues, "engines": engines},
        )

    def on_shutdown(**_: Any) -> None:
        heartbeat.stop()
        translator.close_blocking()

    def on_received(request: Any, **_: Any) -> None:
        # kombu has recorded the message as unacknowledged: tell the API it is safe here
        if request.name != TRANSLATE_TASK:
            return  # bulk chunks are not in the API's delivery ledger
        try:
            queue = request.delivery_info.get("routing_key") or queues[0]
            mark_received(client, request.id, request.args[0], queue)
        except Exception as exc:  # the API may then send it again: a duplicate, not a loss
            log.warning("could not record receiving %s: %s", request.id, exc)

    task_received.connect(on_received, weak=False)
    worker_ready.connect(on_ready, weak=False)
    worker_shutdown.connect(on_shutdown, weak=False)
