"""Embedded mode's job state: one SQLite file, so jobs survive a restart of ``unpaired serve``.

Chunks are also the queue here: the in-process runner claims queued chunks in order, and at
start-up every chunk left ``running`` by a previous process goes back to ``queued`` (the
process holding the database is the only one running chunks: a lock file ensures it).
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from service.jobs.job_store import ERRORS_LIMIT
from service.jobs.records import (
    TERMINAL,
    ChunkOutcome,
    Item,
    ItemError,
    JobSpec,
    JobState,
    JobStatus,
    final_state,
)

__all__ = ["DatabaseInUse", "SqliteJobStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, spec TEXT NOT NULL, owner TEXT NOT NULL, state TEXT NOT NULL,
    done INTEGER NOT NULL, failed INTEGER NOT NULL, created_at REAL NOT NULL,
    started_at REAL, finished_at REAL);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
CREATE TABLE IF NOT EXISTS chunks (
    job_id TEXT NOT NULL, idx INTEGER NOT NULL, items TEXT NOT NULL,
    state TEXT NOT NULL,  -- queued | running | done
    attempts INTEGER NOT NULL DEFAULT 0, not_before REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, idx));
CREATE INDEX IF NOT EXISTS chunks_queue ON chunks (state, not_before);
CREATE TABLE IF NOT EXISTS errors (job_id TEXT NOT NULL, item TEXT NOT NULL, error TEXT NOT NULL,
    PRIMARY KEY (job_id, item));
CREATE TABLE IF NOT EXISTS written (job_id TEXT NOT NULL, item TEXT NOT NULL,
    output TEXT NOT NULL, PRIMARY KEY (job_id, item));
CREATE TABLE IF NOT EXISTS chunk_attempts (job_id TEXT NOT NULL, idx INTEGER NOT NULL,
    attempting INTEGER NOT NULL, died INTEGER NOT NULL, translating TEXT,
    PRIMARY KEY (job_id, idx));
CREATE TABLE IF NOT EXISTS deaths (job_id TEXT NOT NULL, idx INTEGER NOT NULL,
    item TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (job_id, idx, item));
CREATE TABLE IF NOT EXISTS frames (job_id TEXT NOT NULL, item TEXT NOT NULL,
    frames INTEGER NOT NULL, PRIMARY KEY (job_id, item));
"""


class DatabaseInUse(RuntimeError):
    """Another process runs jobs from this database."""


class SqliteJobStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(path.with_name(path.name + ".lock"), "w")  # noqa: SIM115
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise DatabaseInUse(
                f"{path} is used by another `unpaired serve`; give each server its own "
                "UNPAIRED_JOBS_DIR (or UNPAIRED_JOBS_DB), or use distributed mode"
            ) from None
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._mutex = threading.Lock()
        self.path = path

    def close(self) -> None:
        with self._mutex:
            self._db.close()
            self._lock_file.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._mutex:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- the contract -------------------------------------------------------------------

    def create(
        self, spec: JobSpec, chunks: Sequence[Sequence[Item]], refused: Sequence[ItemError]
    ) -> JobStatus:
        state = final_state(spec.total, len(refused)) if not chunks else JobState.QUEUED
        finished = spec.created_at if not chunks else None
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?, 0, ?, ?, NULL, ?)",
                (
                    spec.id,
                    json.dumps(spec.to_dict()),
                    spec.owner,
                    state,
                    len(refused),
                    spec.created_at,
                    finished,
                ),
            )
            db.executemany(
                "INSERT INTO chunks (job_id, idx, items, state) VALUES (?, ?, ?, 'queued')",
                [
                    (spec.id, i, json.dumps([item.to_list() for item in chunk]))
                    for i, chunk in enumerate(chunks)
                ],
            )
            db.executemany(
                "INSERT OR REPLACE INTO errors VALUES (?, ?, ?)",
                [(spec.id, e.item, e.error) for e in refused],
            )
        status = self.get(spec.id)
        assert status is not None
        return status

    def get(self, job_id: str, errors_limit: int = ERRORS_LIMIT) -> JobStatus | None:
        with self._mutex:
            row = self._db.execute(
                "SELECT spec, state, done, failed, started_at, finished_at FROM jobs WHERE id = ?",
                (job_id,),
            ).fetchone()
            if row is None:
                return None
            errors = self._db.execute(
                "SELECT item, error FROM errors WHERE job_id = ? ORDER BY item LIMIT ?",
                (job_id, errors_limit),
            ).fetchall()
            (frames,) = self._db.execute(
                "SELECT COALESCE(SUM(frames), 0) FROM frames WHERE job_id = ?", (job_id,)
            ).fetchone()
        status = _status(row, [ItemError(item, error) for item, error in errors])
        return replace(status, frames=int(frames))

    def page(self, owner: str | None, limit: int, before: float | None) -> list[JobStatus]:
        query = "SELECT spec, state, done, failed, started_at, finished_at FROM jobs WHERE 1=1"
        args: list[object] = []
        if owner is not None:
            query += " AND owner = ?"
            args.append(owner)
        if before is not None:
            query += " AND created_at < ?"
            args.append(before)
        query += " ORDER BY created_at DESC LIMIT ?"
        args.append(limit)
        with self._mutex:
            rows = self._db.execute(query, args).fetchall()
        return [_status(row, []) for row in rows]

    def chunk_items(self, job_id: str, index: int) -> list[Item]:
        with self._mutex:
            row = self._db.execute(
                "SELECT items FROM chunks WHERE job_id = ? AND idx = ?", (job_id, index)
            ).fetchone()
        return [] if row is None else [Item.from_list(v) for v in json.loads(row[0])]

    def start_chunk(self, job_id: str, index: int) -> JobSpec | None:
        with self._tx() as db:
            row = db.execute(
                "SELECT j.spec, j.state, c.state FROM jobs j JOIN chunks c ON c.job_id = j.id "
                "WHERE j.id = ? AND c.idx = ?",
                (job_id, index),
            ).fetchone()
            if row is None or row[1] in TERMINAL or row[2] == "done":
                # not to run: a chunk claimed for a job cancelled since is not running either
                db.execute(
                    "UPDATE chunks SET state = 'queued' "
                    "WHERE job_id = ? AND idx = ? AND state = 'running'",
                    (job_id, index),
                )
                return None
            db.execute(
                "UPDATE chunks SET state = 'running' WHERE job_id = ? AND idx = ?",
                (job_id, index),
            )
            db.execute(
                "UPDATE jobs SET state = ?, started_at = COALESCE(started_at, ?) WHERE id = ?",
                (JobState.RUNNING, time.time(), job_id),
            )
        return JobSpec.from_dict(json.loads(row[0]))

    def finish_chunk(self, job_id: str, index: int, outcome: ChunkOutcome) -> None:
        with self._tx() as db:
            updated = db.execute(
                "UPDATE chunks SET state = 'done' WHERE job_id = ? AND idx = ? AND state != 'done'",
                (job_id, index),
            ).rowcount
            if not updated:
                return  # recorded already (a chunk run twice counts once)
            db.executemany(
                "INSERT OR REPLACE INTO written VALUES (?, ?, ?)",
                [(job_id, item.name, item.output) for item in outcome.written],
            )
            db.executemany(
                "INSERT OR REPLACE INTO errors VALUES (?, ?, ?)",
                [(job_id, e.item, e.error) for e in outcome.failed],
            )
            db.execute(
                "UPDATE jobs SET done = done + ?, failed = failed + ? WHERE id = ?",
                (len(outcome.written), len(outcome.failed), job_id),
            )
            spec, state, failed = db.execute(
                "SELECT spec, state, failed FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            (left,) = db.execute(
                "SELECT COUNT(*) FROM chunks WHERE job_id = ? AND state != 'done'", (job_id,)
            ).fetchone()
            if left == 0 and state not in TERMINAL:
                total = json.loads(spec)["total"]
                db.execute(
                    "UPDATE jobs SET state = ?, finished_at = ? WHERE id = ?",
                    (final_state(total, failed), time.time(), job_id),
                )

    def cancel(self, job_id: str) -> JobStatus | None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state = ?, finished_at = ? WHERE id = ? AND state IN (?, ?)",
                (JobState.CANCELLED, time.time(), job_id, JobState.QUEUED, JobState.RUNNING),
            )
        return self.get(job_id)

    def written(self, job_id: str) -> list[Item]:
        with self._mutex:
            rows = self._db.execute(
                "SELECT item, output FROM written WHERE job_id = ? ORDER BY output", (job_id,)
            ).fetchall()
        return [Item(name, output) for name, output in rows]

    def running_chunks(self, job_id: str) -> int:
        with self._mutex:
            (count,) = self._db.execute(
                "SELECT COUNT(*) FROM chunks WHERE job_id = ? AND state = 'running'", (job_id,)
            ).fetchone()
        return int(count)

    def unfinished_chunks(self, job_id: str) -> list[int]:
        with self._mutex:
            rows = self._db.execute(
                "SELECT idx FROM chunks WHERE job_id = ? AND state != 'done' ORDER BY idx",
                (job_id,),
            ).fetchall()
        return [idx for (idx,) in rows]

    def expired(self, finished_before: float) -> list[str]:
        with self._mutex:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?",
                (finished_before,),
            ).fetchall()
        return [job_id for (job_id,) in rows]

    def delete(self, job_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            for table in ("chunks", "errors", "written", "chunk_attempts", "deaths", "frames"):
                db.execute(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))

    def mark_dispatched(self, job_id: str) -> None:
        return None  # the chunks table is the queue: recorded with the job, in one transaction

    def undispatched(self, created_before: float) -> list[str]:
        return []

    # --- processes that died (service.jobs.poison) ---------------------------------------

    def begin_attempt(self, job_id: str, index: int) -> int:
        with self._tx() as db:
            db.execute(
                "INSERT INTO chunk_attempts (job_id, idx, attempting, died) VALUES (?, ?, 1, 0) "
                "ON CONFLICT (job_id, idx) DO UPDATE SET died = died + attempting, attempting = 1",
                (job_id, index),
            )
            (died,) = db.execute(
                "SELECT died FROM chunk_attempts WHERE job_id = ? AND idx = ?", (job_id, index)
            ).fetchone()
        return int(died)

    def end_attempt(self, job_id: str, index: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE chunk_attempts SET attempting = 0 WHERE job_id = ? AND idx = ?",
                (job_id, index),
            )

    def begin_careful(self, job_id: str, index: int) -> dict[str, int]:
        with self._tx() as db:
            row = db.execute(
                "SELECT translating FROM chunk_attempts WHERE job_id = ? AND idx = ?",
                (job_id, index),
            ).fetchone()
            if row is not None and row[0] is not None:
                db.execute(
                    "INSERT INTO deaths VALUES (?, ?, ?, 1) "
                    "ON CONFLICT (job_id, idx, item) DO UPDATE SET count = count + 1",
                    (job_id, index, row[0]),
                )
                db.execute(
                    "UPDATE chunk_attempts SET translating = NULL WHERE job_id = ? AND idx = ?",
                    (job_id, index),
                )
            rows = db.execute(
                "SELECT item, count FROM deaths WHERE job_id = ? AND idx = ?", (job_id, index)
            ).fetchall()
        return {str(item): int(count) for item, count in rows}

    def frames_done(self, job_id: str, item: str, frames: int) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO frames (job_id, item, frames) SELECT ?, ?, ? "
                "WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ?) "
                "ON CONFLICT (job_id, item) DO UPDATE SET frames = excluded.frames",
                (job_id, item, frames, job_id),
            )

    def translating(self, job_id: str, index: int, item: str | None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE chunk_attempts SET translating = ? WHERE job_id = ? AND idx = ?",
                (item, job_id, index),
            )

    # --- the in-process queue (embedded mode) -------------------------------------------

    def requeue_running(self) -> int:
        """Chunks a previous process was running go back to the queue (called at start)."""
        with self._tx() as db:
            return db.execute("UPDATE chunks SET state = 'queued' WHERE state = 'running'").rowcount

    def claim_chunk(self) -> tuple[str, int, int] | None:
        """The oldest runnable chunk of a live job as (job id, index, retries so far: the
        attempts that asked to run again later, not those whose process died)."""
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT c.job_id, c.idx, c.attempts FROM chunks c JOIN jobs j ON j.id = c.job_id "
                "WHERE c.state = 'queued' AND c.not_before <= ? AND j.state IN (?, ?) "
                "ORDER BY j.created_at, c.idx LIMIT 1",
                (now, JobState.QUEUED, JobState.RUNNING),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE chunks SET state = 'running' WHERE job_id = ? AND idx = ?",
                (row[0], row[1]),
            )
        return str(row[0]), int(row[1]), int(row[2])

    def retry_chunk(self, job_id: str, index: int, not_before: float) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE chunks SET state = 'queued', not_before = ?, attempts = attempts + 1 "
                "WHERE job_id = ? AND idx = ? AND state = 'running'",
                (not_before, job_id, index),
            )

    def next_due(self) -> float | None:
        """When the earliest queued chunk may run (None: nothing queued)."""
        with self._mutex:
            (due,) = self._db.execute(
                "SELECT MIN(not_before) FROM chunks WHERE state = 'queued'"
            ).fetchone()
        return None if due is None else float(due)


def _status(row: tuple[object, ...], errors: list[ItemError]) -> JobStatus:
    spec, state, done, failed, started_at, finished_at = row
    return JobStatus(
        spec=JobSpec.from_dict(json.loads(str(spec))),
        state=JobState(str(state)),
        done=int(done),  # type: ignore[call-overload]
        failed=int(failed),  # type: ignore[call-overload]
        started_at=None if started_at is None else float(started_at),  # type: ignore[arg-type]
        finished_at=None if finished_at is None else float(finished_at),  # type: ignore[arg-type]
        errors=errors,
    )
