"""The Celery task the workers run: one request through this worker's micro-batcher.

The threads pool runs up to ``prefetch`` of these at once; each decodes its image and waits on
the shared :class:`~service.translation.LocalTranslator`, whose batcher turns the concurrent
requests into one engine call per model, direction and shape. Each request keeps its own
result, retry and (late) acknowledgement.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery import Celery, Task, states
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .batching import DeadlineExceeded
from .translation import LocalTranslator
from .wire import TRANSLATE_TASK, blob_key, error_reply, request_from_payload

__all__ = ["register_tasks"]

log = logging.getLogger(__name__)


def register_tasks(
    app: Celery,
    translator: LocalTranslator,
    client: redis.Redis,
    *,
    blob_threshold: int,
    result_ttl: int,
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
            return _deadline_reply()
        image = payload["image"]
        data = image.get("data")
        if data is None:
            data = client.get(image["blob"])
            if data is None:  # the input outlived its TTL: nobody waits any more
                return _deadline_reply()
        request = request_from_payload(payload, data)
        try:
            result = translator.translate_blocking(request)
        except Exception as exc:
            reply = error_reply(exc)
            if reply is None:
                raise  # a worker fault: FAILURE, logged with its traceback
            return reply
        out: dict[str, Any] = {"data": result.data}
        if len(result.data) > blob_threshold:
            key = blob_key(task_id, "out")
            client.set(key, result.data, ex=result_ttl)
            out = {"blob": key}
        return {"ok": True, "image": out, **result.to_payload()}

    return translate


def _deadline_reply() -> dict[str, Any]:
    reply = error_reply(DeadlineExceeded("the deadline passed before a worker took it"))
    assert reply is not None
    return reply
