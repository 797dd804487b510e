"""One run per request: a copy redelivered while the first run goes on waits for its answer,
and a copy whose first run died takes over (a real private Redis)."""

from __future__ import annotations

import threading
import time

import redis

from cli.local_redis import LocalRedis
from service.distributed.run_claims import RunClaims, lease_seconds


def _claims(server: LocalRedis, worker: str, lease_s: float = 0.3) -> RunClaims:
    return RunClaims(redis.Redis.from_url(server.url), worker=worker, lease_s=lease_s)


def test_a_copy_waits_for_the_running_request_well_past_the_lease(
    redis_server: LocalRedis,
) -> None:
    first, second = _claims(redis_server, "w1"), _claims(redis_server, "w2")
    assert first.acquire("task", deadline=time.time() + 30)
    acquired_at: list[float] = []
    copy = threading.Thread(
        target=lambda: (
            second.acquire("task", deadline=time.time() + 30)
            and acquired_at.append(time.monotonic())
        )
    )
    copy.start()
    time.sleep(1.5)  # five leases: renewed by the first run all along
    assert not acquired_at, "the copy ran while the first run was still going"
    released = time.monotonic()
    first.release("task")
    copy.join(5)
    assert acquired_at and acquired_at[0] >= released


def test_a_copy_takes_over_when_the_first_run_died(redis_server: LocalRedis) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.set("unpaired:running:task", "dead-worker", px=300)  # a lease nobody renews
    started = time.monotonic()
    assert _claims(redis_server, "w2").acquire("task", deadline=time.time() + 30)
    assert time.monotonic() - started < 2.0


def test_a_copy_gives_up_at_the_deadline(redis_server: LocalRedis) -> None:
    first, second = _claims(redis_server, "w1"), _claims(redis_server, "w2")
    assert first.acquire("task", deadline=time.time() + 30)
    assert not second.acquire("task", deadline=time.time() + 0.5)


def test_a_lease_is_shorter_than_the_visibility_timeout() -> None:
    for visibility in (0.5, 3, 30, 300):
        assert lease_seconds(visibility) < visibility
