"""The Celery task the workers run: one request through this worker's micro-batcher.

The threads pool runs up to ``prefetch`` of these at once; each decodes its image and waits on
the shared :class:`~service.inference.local_translator.LocalTranslator`, whose batcher turns the
concurrent requests into one engine call per model, direction and shape. Each request keeps its
own result, retry and (late) acknowledgement.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
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
from service.distributed.quarantine import Quarantine
from service.distributed.run_claims import RunClaims
from service.errors import WorkerCrashed
from service.inference.local_translator import LocalTranslator

__all__ = ["TranslateRequests", "register_translate_task"]

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class TranslateRequests:
    """The worker's side of an interactive request: answered once however often it comes."""

    translator: LocalTranslator
    client: redis.Redis
    carrier: ImageCarrier
    result_ttl: int
    claims: RunClaims
    quarantine: Quarantine
    poison_attempts: int

    def handle(self, task: Task, payload: dict[str, Any]) -> dict[str, Any]:
        """One request, tried again here while Redis is away (until its deadline): Celery's
        own retry publishes a new message, which fails while Redis is away and then drops
        this one."""
        retries = 0
        while True:
            try:
                return self._serve(task, payload, retries)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if time.time() > payload["deadline"]:
                    return deadline_reply()
                log.info("request %s waits for Redis: %s", task.request.id, exc)
                retries += 1
                time.sleep(min(2.0, 0.2 * 2**retries))  # the backoff itself

    def _serve(self, task: Task, payload: dict[str, Any], retries: int) -> dict[str, Any]:
        task_id = task.request.id
        done = task.backend.get_task_meta(task_id)
        if done.get("status") == states.SUCCESS:  # redelivered after it was answered
            return dict(done["result"])
        if time.time() > payload["deadline"]:
            return deadline_reply()
        # redelivered while a live worker still runs it (longer than the visibility timeout):
        # wait for that run's answer rather than run the image twice (see run_claims)
        if not self.claims.acquire(task_id, deadline=payload["deadline"]):
            return deadline_reply()
        try:
            done = task.backend.get_task_meta(task_id)
            if done.get("status") == states.SUCCESS:  # the other run answered meanwhile
                return dict(done["result"])
            return self._run(task_id, payload, retries)
        finally:
            self.claims.release(task_id)

    def _run(self, task_id: str, payload: dict[str, Any], retries: int) -> dict[str, Any]:
        # earlier runs that neither answered nor asked for a retry died with their worker
        if self.quarantine.began(task_id) - 1 - retries <= 0:
            return self._translated(task_id, payload)
        deaths = self.quarantine.deaths(task_id)
        if deaths >= self.poison_attempts:  # a poison input: answered, not tried again
            log.error("request %s took down its worker %d times; answered", task_id, deaths)
            return _crashed_reply(deaths)
        with self.quarantine.alone(task_id, payload["deadline"]) as alone:
            return self._translated(task_id, payload) if alone else deadline_reply()

    def _translated(self, task_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        data = self.carrier.get(self.client, payload["image"])
        if data is None:  # the input outlived its TTL: nobody waits any more
            return deadline_reply()
        request = request_from_payload(payload, data)

        def abandoned() -> bool:  # the API's client hung up (asked while the request waits)
            try:
                return bool(self.client.exists(cancel_key(task_id)))
            except RedisError:
                return False

        try:
            result = self.translator.translate_blocking(request, should_stop=abandoned)
        except Exception as exc:
            reply = error_reply(exc)
            if reply is None:
                raise  # a worker fault: FAILURE, logged with its traceback
            return reply
        image = self.carrier.put(self.client, task_id, "out", result.data, ttl=self.result_ttl)
        return success_reply(result, image)


def register_translate_task(app: Celery, requests: TranslateRequests) -> Task:
    @app.task(name=TRANSLATE_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def translate(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
        return requests.handle(self, payload)

    return translate


def _crashed_reply(deaths: int) -> dict[str, Any]:
    reply = error_reply(
        WorkerCrashed(
            f"the request took down the worker translating it {deaths} times (a crash or out "
            "of memory); it was not tried again"
        )
    )
    assert reply is not None
    return reply
