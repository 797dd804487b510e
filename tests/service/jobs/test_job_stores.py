"""Both job stores keep one contract: idempotent chunk outcomes, cancellation, final states."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis

from cli.local_redis import LocalRedis
from service.errors import IntakeError, JobNotFound
from service.inference.requests import OutputSpec
from service.jobs.intake import Intake
from service.jobs.job_store import JobStore
from service.jobs.manager import JobManager, JobRequest
from service.jobs.records import ChunkOutcome, Item, ItemError, JobSpec, JobState
from service.jobs.redis_job_store import RedisJobStore
from service.jobs.sqlite_job_store import DatabaseInUse, SqliteJobStore
from service.jobs.storage import JobFiles


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        sqlite = SqliteJobStore(tmp_path / "jobs.db")
        yield sqlite
        sqlite.close()
    else:
        server: LocalRedis = request.getfixturevalue("redis_server")
        client = redis.Redis.from_url(server.url)
        yield RedisJobStore(client)
        client.close()


def spec(job_id: str = "a" * 32, *, total: int = 5, chunks: int = 2, owner: str = "me") -> JobSpec:
    return JobSpec(
        id=job_id,
        model="demo",
        direction="AtoB",
        format="png",
        quality=95,
        owner=owner,
        inputs="/in",
        outputs="/out",
        total=total,
        chunks=chunks,
    )


CHUNKS = [[Item("a.png", "a.png"), Item("b.jpg", "b.png")], [Item("c.png", "c.png")]]
REFUSED = [ItemError("../evil.png", "path escapes the archive (..)"), ItemError("e.png", "empty")]


def written(*items: Item) -> ChunkOutcome:
    return ChunkOutcome(written=list(items), failed=[])


def test_a_new_job_is_queued_with_its_refused_entries_counted_as_failed(store: JobStore) -> None:
    status = store.create(spec(), CHUNKS, REFUSED)
    assert status.state is JobState.QUEUED
    assert (status.spec.total, status.done, status.failed) == (5, 0, 2)
    assert {e.item for e in status.errors} == {"../evil.png", "e.png"}
    assert store.chunk_items(status.spec.id, 0) == CHUNKS[0]
    assert store.unfinished_chunks(status.spec.id) == [0, 1]


def test_chunks_finish_the_job_once_and_a_rerun_counts_once(store: JobStore) -> None:
    job = spec(total=3, chunks=2).id
    store.create(spec(total=3, chunks=2), CHUNKS, [])
    assert store.start_chunk(job, 0) is not None
    running = store.get(job)
    assert running is not None and running.state is JobState.RUNNING and running.started_at
    store.finish_chunk(job, 0, written(*CHUNKS[0]))
    store.finish_chunk(job, 0, written(*CHUNKS[0]))  # redelivered: already recorded
    assert store.start_chunk(job, 0) is None  # and it will not run again
    half = store.get(job)
    assert half is not None and (half.done, half.state) == (2, JobState.RUNNING)
    store.finish_chunk(job, 1, ChunkOutcome([], [ItemError("c.png", "not an image")]))
    done = store.get(job)
    assert done is not None
    assert (done.done, done.failed, done.state) == (2, 1, JobState.PARTIALLY_FAILED)
    assert done.finished_at is not None and done.eta_seconds() == 0.0
    assert [i.output for i in store.written(job)] == ["a.png", "b.png"]
    assert store.unfinished_chunks(job) == []


@pytest.mark.parametrize(
    ("failed", "state"),
    [(0, JobState.SUCCEEDED), (1, JobState.PARTIALLY_FAILED), (3, JobState.FAILED)],
)
def test_the_final_state_follows_the_failures(
    store: JobStore, failed: int, state: JobState
) -> None:
    items = [Item(f"{i}.png", f"{i}.png") for i in range(3)]
    job = spec(total=3, chunks=1)
    store.create(job, [items], [])
    store.start_chunk(job.id, 0)
    store.finish_chunk(
        job.id,
        0,
        ChunkOutcome(items[failed:], [ItemError(i.name, "bad") for i in items[:failed]]),
    )
    status = store.get(job.id)
    assert status is not None and status.state is state


def test_a_job_with_nothing_to_run_is_finished_at_once(store: JobStore) -> None:
    status = store.create(spec(total=2, chunks=0), [], REFUSED)
    assert status.state is JobState.FAILED and status.finished_at is not None


def test_a_cancelled_job_starts_no_chunk_and_keeps_what_finished(store: JobStore) -> None:
    job = spec(total=3, chunks=2).id
    store.create(spec(total=3, chunks=2), CHUNKS, [])
    store.start_chunk(job, 0)
    store.finish_chunk(job, 0, written(*CHUNKS[0]))
    cancelled = store.cancel(job)
    assert cancelled is not None and cancelled.state is JobState.CANCELLED
    assert store.start_chunk(job, 1) is None
    store.finish_chunk(job, 1, written(*CHUNKS[1]))  # a chunk that was already running
    after = store.get(job)
    assert after is not None and after.state is JobState.CANCELLED
    assert store.cancel(job) is not None  # cancelling again changes nothing
    assert len(store.written(job)) >= 2


def test_chunks_started_and_not_recorded_are_running(store: JobStore) -> None:
    """What deleting a cancelled job waits for: its last chunks to end."""
    job = spec(total=3, chunks=2).id
    store.create(spec(total=3, chunks=2), CHUNKS, [])
    assert store.running_chunks(job) == 0
    store.start_chunk(job, 0)
    store.start_chunk(job, 1)
    assert store.running_chunks(job) == 2
    store.finish_chunk(job, 0, written(*CHUNKS[0]))
    assert store.running_chunks(job) == 1
    store.cancel(job)
    assert store.start_chunk(job, 1) is None  # redelivered after the cancel: it does not run
    assert store.running_chunks(job) == 0


def test_listing_is_newest_first_paged_and_per_owner(store: JobStore) -> None:
    ids = [f"{i:032x}" for i in range(5)]
    for i, job_id in enumerate(ids):
        job = spec(job_id, owner="me" if i % 2 == 0 else "you")
        store.create(JobSpec(**{**job.to_dict(), "created_at": 1000.0 + i}), CHUNKS, [])
    page = store.page(None, 2, None)
    assert [s.spec.id for s in page] == [ids[4], ids[3]]
    rest = store.page(None, 10, page[-1].spec.created_at)
    assert [s.spec.id for s in rest] == [ids[2], ids[1], ids[0]]
    assert [s.spec.id for s in store.page("me", 10, None)] == [ids[4], ids[2], ids[0]]


def test_expired_jobs_are_found_and_deleted(store: JobStore) -> None:
    old = spec("b" * 32, total=2, chunks=0)
    store.create(old, [], REFUSED)
    store.create(spec("c" * 32), CHUNKS, [])  # still queued: never expires
    assert store.expired(time.time() + 1) == ["b" * 32]
    assert store.expired(time.time() - 3600) == []
    store.delete("b" * 32)
    assert store.get("b" * 32) is None
    assert store.expired(time.time() + 1) == []


def test_frames_of_clips_add_up_and_an_attempt_again_counts_from_its_start(
    store: JobStore,
) -> None:
    job = store.create(spec(), CHUNKS, []).spec.id
    assert _frames(store, job) == 0
    store.frames_done(job, "walk.mp4", 8)
    store.frames_done(job, "walk.mp4", 16)
    store.frames_done(job, "run.mov", 8)
    assert _frames(store, job) == 24
    store.frames_done(job, "walk.mp4", 8)  # the clip's chunk runs again, from frame 0
    assert _frames(store, job) == 16
    store.delete(job)
    store.frames_done(job, "walk.mp4", 24)  # a chunk still running when its job was deleted
    assert store.get(job) is None


def _frames(store: JobStore, job_id: str) -> int:
    status = store.get(job_id)
    assert status is not None
    return status.frames


def test_unknown_jobs_are_none(store: JobStore) -> None:
    assert store.get("f" * 32) is None
    assert store.start_chunk("f" * 32, 0) is None
    assert store.cancel("f" * 32) is None


def test_the_embedded_queue_resumes_chunks_a_dead_server_left_running(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    first = SqliteJobStore(path)
    first.create(spec(total=3, chunks=2), CHUNKS, [])
    assert first.claim_chunk() == ("a" * 32, 0, 0)
    with pytest.raises(DatabaseInUse):
        SqliteJobStore(path)  # one server per database
    first.close()  # the server stops with chunk 0 running
    second = SqliteJobStore(path)
    assert second.requeue_running() == 1
    # claimed again, not retried: a death is no retry (service.jobs.poison counts it)
    assert second.claim_chunk() == ("a" * 32, 0, 0)
    assert second.claim_chunk() == ("a" * 32, 1, 0)
    assert second.claim_chunk() is None
    second.retry_chunk("a" * 32, 1, time.time() + 60)
    assert second.claim_chunk() is None and second.next_due() is not None
    second.close()
    third = SqliteJobStore(path)
    third.retry_chunk("a" * 32, 0, 0)  # a chunk that asked to run again counts its retries
    assert third.claim_chunk() == ("a" * 32, 0, 1)
    third.close()


def test_deaths_are_charged_to_the_image_a_careful_attempt_was_translating(
    store: JobStore,
) -> None:
    job_id = "a" * 32
    store.create(spec(total=3, chunks=2), CHUNKS, [])
    assert store.begin_attempt(job_id, 0) == 0
    store.end_attempt(job_id, 0)  # recorded, or asked to run again: it did not die
    assert store.begin_attempt(job_id, 0) == 0
    assert store.begin_attempt(job_id, 0) == 1  # the one before never ended: its process died
    assert store.begin_attempt(job_id, 0) == 2
    store.end_attempt(job_id, 0)
    assert store.begin_attempt(job_id, 0) == 2  # deaths are not forgotten
    assert store.begin_attempt(job_id, 1) == 0  # per chunk
    assert store.begin_careful(job_id, 0) == {}  # nothing was being translated alone
    store.translating(job_id, 0, "a.png")
    store.translating(job_id, 0, "b.jpg")  # a.png ended; its process died on b.jpg
    assert store.begin_careful(job_id, 0) == {"b.jpg": 1}
    assert store.begin_careful(job_id, 0) == {"b.jpg": 1}  # charged once per death
    store.translating(job_id, 0, "b.jpg")
    assert store.begin_careful(job_id, 0) == {"b.jpg": 2}
    store.translating(job_id, 0, "a.png")
    store.translating(job_id, 0, None)  # the attempt ended: nobody died
    assert store.begin_careful(job_id, 0) == {"b.jpg": 2}
    assert store.begin_careful(job_id, 1) == {}
    store.delete(job_id)
    store.create(spec(total=3, chunks=2), CHUNKS, [])  # the same id again: a clean slate
    assert store.begin_attempt(job_id, 0) == 0 and store.begin_careful(job_id, 0) == {}


class Recorded:
    """A dispatcher that only remembers what it was asked to run."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[int]]] = []

    def dispatch(self, job_id: str, chunks: Sequence[int]) -> None:
        self.sent.append((job_id, list(chunks)))


def test_the_service_names_outputs_refuses_collisions_and_sweeps_expired_jobs(
    tmp_path: Path,
) -> None:
    store = SqliteJobStore(tmp_path / "jobs" / "jobs.db")
    dispatcher = Recorded()
    service = JobManager(
        store, JobFiles(str(tmp_path / "jobs")), dispatcher, chunk_size=2, max_items=10,
        retention_s=60,
    )  # fmt: skip
    request = JobRequest(
        model="demo", direction="AtoB", output=OutputSpec(format="jpeg"), owner="me"
    )

    def add(intake: Intake) -> None:
        for name in ("a.png", "b/c.png", "a.jpg", "d.png"):
            intake.add_upload(name, b"bytes of " + name.encode())

    status = service.submit(request, add)
    job_id = status.spec.id
    assert dispatcher.sent == [(job_id, [0, 1])]
    assert store.chunk_items(job_id, 0) == [Item("a.png", "a.jpg"), Item("b/c.png", "b/c.jpg")]
    assert [(e.item, e.error) for e in status.errors] == [
        ("a.jpg", "output a.jpg would also be written from a.png")
    ]
    assert (
        tmp_path / "jobs" / job_id / "inputs" / "b" / "c.png"
    ).read_bytes() == b"bytes of b/c.png"
    with pytest.raises(IntakeError):
        service.submit(
            request, lambda intake: [intake.add_upload(f"{i}.png", b"x") for i in range(11)]
        )
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir() if p.is_dir()) == [job_id]

    store.cancel(job_id)  # finished now
    assert service.sweep(now=time.time() + 30) == 0  # not expired yet
    assert service.sweep(now=time.time() + 120) == 1
    assert store.get(job_id) is None and not (tmp_path / "jobs" / job_id).exists()
    with pytest.raises(JobNotFound):
        service.get(job_id, None)
    store.close()


def test_a_submission_that_stopped_half_way_is_queued_again_by_the_sweep(
    redis_server: LocalRedis, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    store = RedisJobStore(client)
    dispatcher = Recorded()
    service = JobManager(
        store, JobFiles(str(tmp_path / "jobs")), dispatcher, chunk_size=2, max_items=10,
        retention_s=3600,
    )  # fmt: skip
    store.create(spec(total=3, chunks=2), CHUNKS, [])  # the API died before queueing chunks
    store.start_chunk("a" * 32, 0)
    store.finish_chunk("a" * 32, 0, written(*CHUNKS[0]))  # e.g. one got out before it died
    assert store.undispatched(time.time() - 60) == []  # within the grace period
    service.sweep(now=time.time())
    assert dispatcher.sent == []
    service.sweep(now=time.time() + 120)
    assert dispatcher.sent == [("a" * 32, [1])]  # only what is not done
    service.sweep(now=time.time() + 120)
    assert dispatcher.sent == [("a" * 32, [1])]  # once
    client.close()
