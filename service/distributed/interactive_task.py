"""The Celery task the workers run: one request through this worker's micro-batcher.

The threads pool runs up to ``prefetch`` of these at once; each decodes its image and waits on
the shared :class:`~service.inference.local_translator.LocalTranslator`, whose batcher turns the
concurrent requests into one engine call per model, direction and shape. Each request keeps its
own result, retry and (late) acknowledgement.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery import Celery, Task, states
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.distributed.messages import (
    TRANSLATE_TASK,
    ImageCarrier,
    cancel_key,
    deadline_reply,
    error_reply,
    request_from_payload,
    success_reply,
)
from service.distributed.run_claims import RunClaims
from service.errors import WorkerCrashed
from service.inference.local_translator import LocalTranslator

__all__ = ["register_translate_task"]

log = logging.getLogger(__name__)


def register_translate_task(
    app: Celery,
    translator: LocalTranslator,
    client: redis.Redis,
    *,
    carrier: ImageCarrier,
    result_ttl: int,
    claims: RunClaims,
    poison_attempts: int,
) -> Task:
    @app.task(
        name=TRANSLATE_TASK,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        autoretry_for=(RedisConnectionError, RedisTimeoutError),
        retry_backoff=0.2,
        retry_backoff_max=5,
        max_retries=5,
    )
    def translate(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
        task_id = self.request.id
        done = self.backend.get_task_meta(task_id)
        if done.get("status") == states.SUCCESS:  # redelivered after it was answered
            return dict(done["result"])
        if time.time() > payload["deadline"]:
            return deadline_reply()
        # redelivered while a live worker still runs it (longer than the visibility timeout):
        # wait for that run's answer rather than run the image twice (see run_claims)
        if not claims.acquire(task_id, deadline=payload["deadline"]):
            return deadline_reply()
        try:
            done = self.backend.get_task_meta(task_id)
            if done.get("status") == states.SUCCESS:  # the other run answered meanwhile
                return dict(done["result"])
            return run(task_id, payload, self.request.retries)
        finally:
            claims.release(task_id)

    def run(task_id: str, payload: dict[str, Any], retries: int) -> dict[str, Any]:
        # earlier runs that neither answered nor asked for a retry died with their worker
        died = _count_run(client, task_id, result_ttl) - 1 - retries
        if died >= poison_attempts:  # a poison input: answered, not tried again
            log.error("request %s took down its worker %d times; answered", task_id, died)
            reply = error_reply(
                WorkerCrashed(
                    f"the request took down the worker translating it {died} times (a "
                    "crash or out of memory); it was not tried again"
                )
            )
            assert reply is not None
            return reply
        data = carrier.get(client, payload["image"])
        if data is None:  # the input outlived its TTL: nobody waits any more
            return deadline_reply()
        request = request_from_payload(payload, data)

        def abandoned() -> bool:  # the API's client hung up (asked while the request waits)
            try:
                return bool(client.exists(cancel_key(task_id)))
            except RedisError:
                return False

        try:
            result = translator.translate_blocking(request, should_stop=abandoned)
        except Exception as exc:
            reply = error_reply(exc)
            if reply is None:
                raise  # a worker fault: FAILURE, logged with its traceback
            return reply
        image = carrier.put(client, task_id, "out", result.data, ttl=result_ttl)
        return success_reply(result, image)

    return translate


def _count_run(client: redis.Redis, task_id: str, ttl: int) -> int:
    """Runs of this request so far, this one included (its earlier ones died with their
    worker, or they would have answered)."""
    key = f"unpaired:runs:{task_id}"
    with client.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, ttl)
        runs, _ = pipe.execute()
    return int(runs)
