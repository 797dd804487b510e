"""One run per interactive request, however long it takes.

kombu's Redis transport hands a message that is still unacknowledged after the visibility
timeout to a worker again, even while the first worker is still running it; a large photo can
take longer than that (a 64 Mpx image runs for about a minute on two cores). The copy would
run the whole image a second time, hold its memory a second time, and could answer first with
an error of its own (its image does not fit the memory budget beside the first one).

So a run holds a lease on its task id in Redis (``SET NX PX``), renewed by this process while
the run lasts and shorter than the visibility timeout. A copy that finds the lease held waits
(a thread, no CPU, no memory) until it is released, then answers with the stored result; if
the lease expires instead, its holder died, and the copy takes it and runs the request itself,
so a crash still loses nothing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Final

import redis
from redis.exceptions import RedisError

__all__ = ["RunClaims", "lease_seconds", "running_key"]

_PREFIX: Final = "unpaired:running:"


def running_key(task_id: str) -> str:
    """The key that exists while a live process runs `task_id` (its lease)."""
    return _PREFIX + task_id


def lease_seconds(visibility_timeout_s: float) -> float:
    """A third of the visibility timeout (0.3 to 10 s): a dead holder's lease is gone before
    its message comes back."""
    return min(10.0, max(0.3, visibility_timeout_s / 3))


class RunClaims:
    """The leases of one worker process's running requests."""

    def __init__(self, client: redis.Redis, *, worker: str, lease_s: float) -> None:
        self.client = client
        self.worker = worker
        self.lease_ms = int(lease_s * 1000)
        self._mine: set[str] = set()
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    def acquire(self, task_id: str, *, deadline: float) -> bool:
        """Wait until this process holds the task's lease; False when the deadline passes
        first (another run held it all along)."""
        key = _PREFIX + task_id
        while True:
            try:
                if self.client.set(key, self.worker, nx=True, px=self.lease_ms):
                    break
            except RedisError:
                break  # cannot tell: running twice costs time, never a lost request
            if time.time() > deadline:
                return False
            time.sleep(self.lease_ms / 3000)
        self._renewing(task_id)
        return True

    def try_acquire(self, task_id: str) -> bool:
        """Take the task's lease now if nobody holds it (no waiting; a RedisError is the
        caller's: it cannot tell)."""
        if not self.client.set(_PREFIX + task_id, self.worker, nx=True, px=self.lease_ms):
            return False
        self._renewing(task_id)
        return True

    def let_lapse(self, task_id: str) -> None:
        """Stop renewing the lease but leave it to expire: for a lease's time nobody takes the
        task again (a shared frame just done, whose result its owner has not read yet)."""
        with self._lock:
            self._mine.discard(task_id)

    def release(self, task_id: str) -> None:
        self.let_lapse(task_id)
        with contextlib.suppress(RedisError):  # else it expires within a lease
            self.client.delete(_PREFIX + task_id)

    def _renewing(self, task_id: str) -> None:
        with self._lock:
            self._mine.add(task_id)
            if self._renewer is None:
                self._renewer = threading.Thread(target=self._renew, name="leases", daemon=True)
                self._renewer.start()

    def _renew(self) -> None:
        while True:
            time.sleep(self.lease_ms / 3000)
            with self._lock:
                held = list(self._mine)
            if not held:
                continue
            with contextlib.suppress(RedisError), self.client.pipeline(transaction=False) as pipe:
                for task_id in held:
                    pipe.pexpire(_PREFIX + task_id, self.lease_ms)
                pipe.execute()
