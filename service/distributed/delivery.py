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
  the unacked record, and it publishes them again under the same task id;
- and requests that were received, yet neither answered nor running anywhere (no run lease,
  :mod:`service.distributed.run_claims`) for ``orphan_after_s`` since their last receipt and
  their last publication: their worker died and Redis never handed them out again. Redelivery
  after the visibility timeout should have; in the suite it once did not (a request received
  beside a poison input, its worker SIGKILLed, never seen again: 504 at its deadline), so the
  API does not rely on it alone.

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

from service.distributed.run_claims import running_key

__all__ = ["DeliveryLedger", "mark_received"]

_RECEIVED: Final = "unpaired:received:"  # + task id: a worker has the message
_SEEN: Final = "unpaired:seen:"  # + queue:sender: highest seq a worker received
_TTL_S: Final = 3600

# SET the receipt; raise the sender's high-water mark (never lower it): one round trip
_MARK = """
redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[2])
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
        repr(time.time()),  # when: a receipt long past with no run and no answer is an orphan
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
    orphan_after_s: float = 40.0  # received, not running, not answered for this long: resend
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
        """(task id, payload) of requests that were taken off the queue but never received,
        or received and then orphaned (see the module's docstring)."""
        now = time.monotonic()
        with self._lock:
            old = {t: s for t, s in self._outstanding.items() if s.sent < now - self.grace_s}
        if not old:
            return []
        ids = list(old)
        async with client.pipeline(transaction=False) as pipe:
            pipe.get(_seen_key(self.queue, self.sender))
            pipe.llen(self.queue)
            pipe.mget([_RECEIVED + t for t in ids])
            pipe.mget([running_key(t) for t in ids])
            seen_raw, queued, receipts, running = await pipe.execute()
        seen = int(seen_raw) if seen_raw is not None else -1
        wall = time.time()
        lost = []
        for task_id, receipt, run in zip(ids, receipts, running, strict=True):
            sent = old[task_id]
            if receipt is None:
                if sent.seq < seen or queued == 0:
                    lost.append((task_id, sent.payload))
            elif (
                run is None
                and sent.sent < now - self.orphan_after_s
                and _received_at(receipt) < wall - self.orphan_after_s
            ):
                lost.append((task_id, sent.payload))
        return lost


def _received_at(receipt: bytes | str) -> float:
    """When the receipt was written (0 for one written before receipts carried a time)."""
    try:
        return float(receipt)
    except ValueError:
        return 0.0
