"""Distributed mode, API side: hand each request to the Celery workers and await the answer.

The request is published to the interactive queue (in a small thread pool: kombu's producer is
blocking, but publishing takes microseconds); the answer arrives on the shared pub/sub
connection of :class:`service.distributed.result_waiter.ReplyWaiter`, so a waiting request holds
no thread. A full queue answers :class:`~service.errors.QueueFull` before anything is
sent, and an unreachable Redis answers
:class:`~service.errors.BrokerUnavailable` at once; both are 503s with
``Retry-After``. The task expires at the request's deadline, so workers skip work nobody waits
for any more.

No live worker is not an error: workers may be scaled to zero (KEDA starts one when a queue is
not empty), so a request waits in the queue for a worker until its deadline, then answers
:class:`~service.errors.DeadlineExceeded` (504). Readiness therefore needs Redis only; the live
workers are reported, not required.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Final

import redis.asyncio as aioredis
from celery import states
from kombu.exceptions import OperationalError
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from service.distributed.celery_app import CONNECT_TIMEOUT_S, make_celery
from service.distributed.delivery import DeliveryLedger
from service.distributed.heartbeat import live_workers
from service.distributed.messages import (
    TRANSLATE_TASK,
    ImageCarrier,
    cancel_key,
    raise_error_reply,
    request_payload,
)
from service.distributed.result_waiter import ReplyWaiter
from service.errors import BrokerUnavailable, DeadlineExceeded, QueueFull, WorkerError
from service.inference.requests import Readiness, Translated, TranslationRequest
from service.settings import Settings

__all__ = ["ACTIVITY_WINDOW_S", "RemoteTranslator", "activity_key", "async_redis"]

log = logging.getLogger(__name__)

ACTIVITY_WINDOW_S: Final = 300  # KEDA keeps a worker this long after the last request


def activity_key(queue: str) -> str:
    """A sorted set of the seconds in the last ACTIVITY_WINDOW_S in which `queue` got a request
    (see :meth:`RemoteTranslator._mark_activity`); KEDA's redis trigger counts it (ZCARD)."""
    return f"unpaired:activity:{queue}"


_QUEUE_DEPTH_TTL_S = 0.05  # one LLEN per 50 ms is plenty to enforce the bound
_BLOB_GRACE_S = 60  # input blobs outlive the deadline by this much (a redelivery may read them)
_POOL_SIZE = 64  # Redis connections of one API process (pub/sub has its own)
_POOL_WAIT_S = 5.0


def async_redis(url: str) -> aioredis.Redis:
    """A client for request paths: a bounded pool that thousands of requests share (waiting for
    a free connection rather than opening one each), failing fast when Redis is down (a refused
    connection fails at once; one quick retry)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=_POOL_SIZE,
        timeout=_POOL_WAIT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_keepalive=True,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=0.1, base=0.02), retries=1),
    )
    return aioredis.Redis(connection_pool=pool)


async def _by_deadline(reply: asyncio.Future[dict[str, Any]], deadline: float) -> dict[str, Any]:
    """The reply, or DeadlineExceeded at `deadline` (time.time()). No worker may be running
    (scaled to zero): the request waits in the queue for one, never past its deadline, when
    its task expires too."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(loop.time() + deadline - time.time()):
            return await reply
    except TimeoutError:
        raise DeadlineExceeded("no worker answered the request before its deadline") from None


class RemoteTranslator:
    mode = "distributed"

    def __init__(self, settings: Settings) -> None:
        assert settings.broker_url is not None
        self.settings = settings
        self.app = make_celery(settings, role="api")
        self.client = async_redis(settings.broker_url)
        self.carrier = ImageCarrier(settings.blob_threshold_bytes)
        self.replies = ReplyWaiter(
            self.client,
            key_prefix=self.app.backend.task_keyprefix.decode(),
            decode=self.app.backend.decode_result,
        )
        # one publishing thread: publish order is the order DeliveryLedger numbers requests in
        self._publisher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="publish")
        self._depth = (0, -1.0)  # (length, when measured)
        # a request whose worker died is handed out again after the visibility timeout and
        # the restore interval (<= 5 s); one neither running nor answered well after that is
        # published again (a duplicate costs a little time, a lost request its deadline)
        self.ledger = DeliveryLedger(
            queue=settings.queue, orphan_after_s=settings.visibility_timeout_s + 10
        )
        self.resent = 0
        self._marked = -1  # the last second _mark_activity wrote
        self._watchdog: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[None]] = set()  # cancellation marks in flight

    @classmethod
    async def connect(cls, settings: Settings) -> RemoteTranslator:
        """Start listening for results; an unreachable Redis is retried in the background."""
        translator = cls(settings)
        translator.replies.start()
        translator._watchdog = asyncio.create_task(translator._resend_lost(), name="resend-lost")
        return translator

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        await self.replies.close()
        self._publisher.shutdown(wait=False)
        await self.client.aclose()

    # --- requests -----------------------------------------------------------------------

    async def translate(self, request: TranslationRequest) -> Translated:
        task_id = uuid.uuid4().hex
        try:
            return await self._translate(task_id, request)
        except DeadlineExceeded:
            raise  # a TimeoutError, hence an OSError, but no fault of the broker
        except (RedisError, OSError, OperationalError) as exc:
            raise BrokerUnavailable(str(exc) or type(exc).__name__) from None

    async def _translate(self, task_id: str, request: TranslationRequest) -> Translated:
        if await self.queue_depth(fresh=False) >= self.settings.max_queue:
            raise QueueFull(f"{self.settings.max_queue} requests are queued for the workers")
        await self._mark_activity()
        ttl = int(request.deadline - time.time()) + _BLOB_GRACE_S
        image = await self.carrier.put_async(self.client, task_id, "in", request.data, ttl)
        try:
            async with self.replies.expect(task_id) as reply:
                await asyncio.get_running_loop().run_in_executor(
                    self._publisher, self._publish, task_id, request_payload(request, image)
                )
                try:
                    meta = await _by_deadline(reply, request.deadline)
                except asyncio.CancelledError:  # the client hung up: stop the worker's work
                    self._tell_cancelled(task_id, ttl)
                    raise
        finally:
            self.ledger.forget(task_id)
            with contextlib.suppress(RedisError, OSError):
                await self.carrier.discard_async(self.client, image)
        return await self._result(task_id, meta)

    def _tell_cancelled(self, task_id: str, ttl: int) -> None:
        """Mark the request abandoned, in the background (this task is being cancelled)."""

        async def mark() -> None:
            with contextlib.suppress(RedisError, OSError):
                await self.client.set(cancel_key(task_id), b"1", ex=max(ttl, 1))

        task = asyncio.ensure_future(mark())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _mark_activity(self) -> None:
        """Note that a request arrived this second (at most one write a second per process).

        A warm worker takes a request off the queue within milliseconds, so KEDA, which polls
        the queue's length every few seconds, would see it empty under light but steady traffic
        and scale the last worker away: every later request would wait for a cold start. The
        set of recent seconds with requests (trimmed here, and gone ACTIVITY_WINDOW_S after the
        last one) keeps one worker while requests keep coming."""
        now = int(time.time())
        if now == self._marked:
            return
        self._marked = now
        key = activity_key(self.settings.queue)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {str(now): now})
            pipe.zremrangebyscore(key, "-inf", now - ACTIVITY_WINDOW_S)
            pipe.expire(key, ACTIVITY_WINDOW_S)
            await pipe.execute()

    def _publish(self, task_id: str, payload: dict[str, Any]) -> None:
        self.app.send_task(
            TRANSLATE_TASK,
            args=(self.ledger.stamp(task_id, payload),),
            task_id=task_id,
            queue=self.settings.queue,
            expires=datetime.fromtimestamp(payload["deadline"], UTC),
        )

    async def _resend_lost(self, every_s: float = 0.5) -> None:
        """Publish again what a dying worker took off the queue unrecorded (see
        :mod:`service.distributed.delivery`)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every_s)
            try:
                for task_id, payload in await self.ledger.lost(self.client):
                    log.warning(
                        "request %s was lost with a worker that died (taken off the queue "
                        "unrecorded, or never handed out again); publishing it again",
                        payload.get("request_id") or task_id,
                        extra={"task_id": task_id, "request_id": payload.get("request_id")},
                    )
                    await loop.run_in_executor(self._publisher, self._publish, task_id, payload)
                    self.resent += 1
            except (RedisError, OSError, OperationalError) as exc:
                log.debug("cannot look for lost requests now: %s", exc)

    async def _result(self, task_id: str, meta: dict[str, Any]) -> Translated:
        status = meta.get("status")
        if status == states.REVOKED:  # expired before a worker reached it
            raise DeadlineExceeded("no worker reached the request before its deadline")
        if status != states.SUCCESS:
            raise WorkerError(f"a worker failed on the request: {meta.get('result')!r}")
        reply: dict[str, Any] = meta["result"]
        if not reply.get("ok"):
            raise_error_reply(reply)
        data = await self.carrier.take_async(self.client, reply["image"])
        if data is None:
            raise WorkerError("the worker's output expired before it was read")
        with contextlib.suppress(RedisError, OSError):
            await self.client.delete(self.app.backend.get_key_for_task(task_id))
        return Translated.from_payload(data, reply)

    # --- state --------------------------------------------------------------------------

    async def queue_depth(self, *, fresh: bool = True) -> int:
        """Requests in the interactive queue that no worker has taken yet."""
        length, measured = self._depth
        now = time.monotonic()
        if fresh or now - measured > _QUEUE_DEPTH_TTL_S:
            length = int(await self.client.llen(self.settings.queue))
            self._depth = (length, now)
        return length

    async def readiness(self) -> Readiness:
        """Ready when Redis answers. Workers are counted, not required: with none running a
        request waits in the queue for one (until its deadline), which is what lets the
        workers scale to zero while the API stays in its Service."""
        try:
            await self.client.ping()
            workers = await live_workers(
                self.client, interval=self.settings.heartbeat_s, queue=self.settings.queue
            )
            depth = await self.queue_depth()
        except (RedisError, OSError) as exc:
            checks = {"broker": f"unreachable: {exc}", "workers": 0, "worker_names": []}
            return Readiness(False, checks)
        return Readiness(
            True,
            {
                "broker": "ok",
                "workers": len(workers),
                "worker_names": sorted(w["worker"] for w in workers),
                "queue": depth,
                "waiting": self.replies.waiting,
                "resent": self.resent,
                "memory": _total_memory(workers),
            },
        )


def _total_memory(workers: list[dict[str, Any]]) -> dict[str, int]:
    """The live workers' memory budgets and their use, summed (each worker's own in /readyz's
    worker list would be per worker; the sum is what the service can take on)."""
    total: dict[str, int] = {}
    for worker in workers:
        for name, value in (worker.get("memory") or {}).items():
            if name == "peak_bytes":
                total[name] = max(total.get(name, 0), int(value))
            else:
                total[name] = total.get(name, 0) + int(value)
    return total
