"""One run per request: a copy redelivered while the first run goes on waits for its answer,
and a copy whose first run died takes over (a real private Redis)."""

from __future__ import annotations

import threading
import time

import redis

from cli.local_redis import LocalRedis
from service.distributed.run_claims import RunClaims, lease_seconds
from tests.waiting import wait_until


def _claims(server: LocalRedis, worker: str, lease_s: float = 0.3) -> RunClaims:
    return RunClaims(redis.Redis.from_url(server.url), worker=worker, lease_s=lease_s)


def test_a_copy_waits_for_the_running_request_well_past_the_lease(
    redis_server: LocalRedis,
) -> None:
    first, second = _claims(redis_server, "w1"), _claims(redis_server, "w2")
    assert first.acquire("task", deadline=time.time() + 60)
    acquired = threading.Event()
    copy = threading.Thread(
        target=lambda: second.acquire("task", deadline=time.time() + 60) and acquired.set()
    )
    copy.start()
    renewals = _Renewals(redis.Redis.from_url(redis_server.url), "unpaired:running:task")
    wait_until(lambda: renewals.seen() >= 4, "the first run renewed its lease four times")
    assert not acquired.is_set(), "the copy ran while the first run was still going"
    first.release("task")
    assert acquired.wait(30)  # and it runs once the first run is done
    copy.join(30)


class _Renewals:
    """Counts renewals of a lease, seen as its remaining time going up again."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client, self.key = client, key
        self.count, self.last = 0, self._ttl()

    def _ttl(self) -> int:
        ttl = int(self.client.pttl(self.key))
        assert ttl > 0, "the lease expired: nobody renewed it"
        return ttl

    def seen(self) -> int:
        now = self._ttl()
        self.count += now > self.last
        self.last = now
        return self.count


def test_a_copy_takes_over_when_the_first_run_died(redis_server: LocalRedis) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.set("unpaired:running:task", "dead-worker", px=300)  # a lease nobody renews
    # taken once the lease expires, long before the deadline (which would answer False)
    assert _claims(redis_server, "w2").acquire("task", deadline=time.time() + 60)
    assert client.get("unpaired:running:task") == b"w2"


def test_a_copy_gives_up_at_the_deadline(redis_server: LocalRedis) -> None:
    first, second = _claims(redis_server, "w1"), _claims(redis_server, "w2")
    assert first.acquire("task", deadline=time.time() + 30)
    assert not second.acquire("task", deadline=time.time() + 0.5)


def test_a_lease_is_shorter_than_the_visibility_timeout() -> None:
    for visibility in (0.5, 3, 30, 300):
        assert lease_seconds(visibility) < visibility
