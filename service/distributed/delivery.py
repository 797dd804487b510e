"""Closing the one gap in late acknowledgement on Redis: a message popped but never recorded.

kombu's Redis transport takes a message off the queue (BRPOP) and only then records it as
unacknowledged; a worker that dies in between (SIGKILL, OOM, or a warm shutdown with the reply
still in its socket buffer) loses the message for good, and late acks cannot bring it back
(celery/kombu#305, celery/celery#7950). Requests accepted by the API must never be lost, so the
API and the workers keep a receipt:

- the API numbers what it publishes, per API process and queue, in publish order (``seq``);
- a worker, as soon as a message is delivered to it (by then kombu has recorded it as
  unacknowledged, so a later crash is covered by redelivery), marks the task received and
  raises the highest ``seq`` seen for that API process;
- the API's watchdog finds requests that nobody received although a later one was (the queue
  is first-in first-out), or although the queue is empty: those were lost between BRPOP and
  the unacked record, and it publishes them again under the same task id.

A request re-sent by mistake (a receipt slower than the grace period) runs twice; results are
idempotent, so that costs time, never correctness.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

import redis
import redis.asyncio as aioredis

__all__ = ["DeliveryLedger", "mark_received"]

_RECEIVED: Final = "unpaired:received:"  # + task id: a worker has the message
_SEEN: Final = "unpaired:seen:"  # + queue:sender: highest seq a worker received
_TTL_S: Final = 3600

# SET the receipt; raise the sender's high-water mark (never lower it): one round trip
_MARK = """
redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
local seen = tonumber(redis.call('GET', KEYS[2]) or '-1')
if tonumber(ARGV[1]) > seen then redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2]) end
return 1
"""


def _seen_key(queue: str, sender: str) -> str:
    return f"{_SEEN}{queue}:{sender}"


def mark_received(client: redis.Redis, task_id: str, payload: dict[str, Any], queue: str) -> None:
    """Worker side: this message was delivered here (and is recorded as unacknowledged)."""
    receipt = payload.get("receipt")
    if not receipt:
        return
    client.eval(
        _MARK,
        2,
        _RECEIVED + task_id,
        _seen_key(queue, receipt["sender"]),
        receipt["seq"],
        _TTL_S,
    )


@dataclass(eq=False)
class _Sent:
    seq: int
    sent: float  # time.monotonic()
    payload: dict[str, Any]


@dataclass(eq=False)
class DeliveryLedger:
    """API side: what this process published and no worker has received yet."""

    queue: str
    grace_s: float = 2.0  # a live worker records its receipt well within this
    sender: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    _counter: itertools.count[int] = field(default_factory=itertools.count)
    _outstanding: dict[str, _Sent] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def stamp(self, task_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Number a payload just before it is published (call in publish order)."""
        seq = next(self._counter)
        stamped = {**payload, "receipt": {"sender": self.sender, "seq": seq}}
        with self._lock:
            self._outstanding[task_id] = _Sent(seq, time.monotonic(), stamped)
        return stamped

    def forget(self, task_id: str) -> None:
        """The request is over (answered, failed or abandoned)."""
        with self._lock:
            self._outstanding.pop(task_id, None)

    async def lost(self, client: aioredis.Redis) -> list[tuple[str, dict[str, Any]]]:
        """(task id, payload) of requests that were taken off the queue but never received."""
        cutoff = time.monotonic() - self.grace_s
        with self._lock:
            old = {t: s for t, s in self._outstanding.items() if s.sent < cutoff}
        if not old:
            return []
        ids = list(old)
        async with client.pipeline(transaction=False) as pipe:
            pipe.get(_seen_key(self.queue, self.sender))
            pipe.llen(self.queue)
            pipe.mget([_RECEIVED + t for t in ids])
            seen_raw, queued, receipts = await pipe.execute()
        seen = int(seen_raw) if seen_raw is not None else -1
        return [
            (task_id, old[task_id].payload)
            for task_id, receipt in zip(ids, receipts, strict=True)
            if receipt is None and (old[task_id].seq < seen or queued == 0)
        ]
