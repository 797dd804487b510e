"""Which workers are alive, for ``/readyz``'s report and the ``unpaired_workers`` metric (a
count, not a condition of readiness: the workers may be scaled to zero).

Each worker, once it consumes, writes its id into a sorted set scored by the time of its last
beat (every ``heartbeat_s``) and a short-lived description (queues, models, host, pid). The API
counts the workers seen within three beats that consume its queue: a worker that is killed
stops counting after three beats without anyone cleaning up after it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

__all__ = ["WORKERS_KEY", "WorkerHeartbeat", "live_workers"]

log = logging.getLogger(__name__)

WORKERS_KEY: Final = "unpaired:workers"
_INFO_PREFIX: Final = "unpaired:worker:"
_MISSED_BEATS: Final = 3


class WorkerHeartbeat:
    """A daemon thread beating for one worker until :meth:`stop`."""

    def __init__(
        self,
        client: redis.Redis,
        worker: str,
        info: dict[str, Any],
        *,
        interval: float,
        live: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.client = client
        self.worker = worker
        self.info = {**info, "worker": worker}
        self.live = live  # what changes between beats (the memory budget's use)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def beat(self) -> None:
        now = time.time()
        with self.client.pipeline() as pipe:
            pipe.zadd(WORKERS_KEY, {self.worker: now})
            info = {**self.info, **(self.live() if self.live else {})}
            pipe.set(_INFO_PREFIX + self.worker, json.dumps(info), ex=int(self.interval * 10) + 1)
            pipe.execute()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except RedisError as exc:
                log.warning("heartbeat failed: %s", exc)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        """Stop beating and leave the set at once (a clean shutdown)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval + 1)
        try:
            with self.client.pipeline() as pipe:
                pipe.zrem(WORKERS_KEY, self.worker)
                pipe.delete(_INFO_PREFIX + self.worker)
                pipe.execute()
        except RedisError as exc:
            log.warning("could not deregister the worker: %s", exc)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def live_workers(
    client: aioredis.Redis, *, interval: float, queue: str
) -> list[dict[str, Any]]:
    """Workers whose last beat is recent and that consume `queue`."""
    now = time.time()
    names = await client.zrangebyscore(WORKERS_KEY, now - _MISSED_BEATS * interval, "+inf")
    await client.zremrangebyscore(WORKERS_KEY, "-inf", now - 100 * interval)  # long gone
    if not names:
        return []
    infos = await client.mget([_INFO_PREFIX + _text(n) for n in names])
    workers = [json.loads(info) for info in infos if info is not None]
    return [w for w in workers if queue in w.get("queues", ())]
