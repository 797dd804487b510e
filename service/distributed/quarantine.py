"""Requests whose worker died while they were in its hands (a poison input: an image that
crashes a codec, exhausts memory): found, and answered after UNPAIRED_POISON_ATTEMPTS.

A worker that dies takes every request it holds with it, so a death cannot be blamed on any
one of them. A request that comes back after its worker died is a suspect: it runs in
quarantine, one suspect at a time per worker, marked in Redis while it runs. When the worker
dies again, the suspect marked as running alone is charged with that death; the others it
held are not. A request charged `poison_attempts` times is answered with
:class:`~service.errors.WorkerCrashed` instead of run again (bulk images: service.jobs.poison).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Final

import redis
from redis.exceptions import RedisError

__all__ = ["Quarantine"]

_RUNS: Final = "unpaired:runs:"  # + task id: runs begun
_ALONE: Final = "unpaired:alone:"  # + task id: it runs in quarantine now
_DEATHS: Final = "unpaired:deaths:"  # + task id: deaths charged to it

# KEYS: alone, deaths; ARGV: ttl. A marker left by a run that never ended is one more death.
_CHARGE: Final = """
if redis.call('DEL', KEYS[1]) == 1 then
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[1])
end
return tonumber(redis.call('GET', KEYS[2]) or '0')
"""


class Quarantine:
    """One worker process's view: its lock for suspects, the counts in Redis."""

    def __init__(self, client: redis.Redis, *, ttl: int) -> None:
        self.client = client
        self.ttl = ttl
        self._alone = threading.Lock()
        self._charge = client.register_script(_CHARGE)

    def began(self, task_id: str) -> int:
        """Count a run of the request beginning; the runs so far, this one included."""
        key = _RUNS + task_id
        with self.client.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, self.ttl)
            runs, _ = pipe.execute()
        return int(runs)

    def deaths(self, task_id: str) -> int:
        """The deaths charged to a suspect, its last quarantined run's included if that run
        never ended."""
        return int(self._charge(keys=[_ALONE + task_id, _DEATHS + task_id], args=[self.ttl]))

    @contextlib.contextmanager
    def alone(self, task_id: str, deadline: float) -> Iterator[bool]:
        """Run a suspect with no other suspect in this worker; False if the request's
        deadline passes first."""
        if not self._alone.acquire(timeout=max(0.0, deadline - time.time())):
            yield False
            return
        try:
            self.client.set(_ALONE + task_id, 1, ex=self.ttl)
            try:
                yield True
            finally:  # it ended (an error too): the worker did not die in it
                with contextlib.suppress(RedisError):
                    self.client.delete(_ALONE + task_id)
        finally:
            self._alone.release()
