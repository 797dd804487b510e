"""Embedded mode's bulk worker: chunk threads inside ``unpaired serve``, on SQLite job state.

:class:`EmbeddedRunner` claims chunks from the :class:`SqliteJobStore` and runs them with the
server's own translator, behind its interactive requests; chunks a stopped server left running
are queued again at start. What an attempt records, and when a chunk is retried, is
:func:`service.jobs.attempts.attempt_chunk`, as in distributed mode.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from service.inference.local_translator import LocalTranslator
from service.inference.priorities import lower_thread_priority
from service.jobs.attempts import ChunkPolicy, RetryLater, attempt_chunk
from service.jobs.manager import JobManager
from service.jobs.sqlite_job_store import SqliteJobStore
from service.jobs.storage import JobFiles
from service.settings import Settings, SettingsError

__all__ = ["EmbeddedRunner", "start_embedded_jobs"]

log = logging.getLogger("unpaired.jobs")


class EmbeddedRunner:
    """Chunk threads inside ``unpaired serve`` (two, so one chunk reads and decodes while
    another's images are in the engine)."""

    def __init__(
        self,
        store: SqliteJobStore,
        translator: LocalTranslator,
        *,
        policy: ChunkPolicy,
        threads: int = 2,
    ) -> None:
        self.store = store
        self.translator = translator
        self.policy = policy
        self._wake = threading.Condition()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"job-runner-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        resumed = self.store.requeue_running()
        if resumed:
            log.info("resuming %d chunk(s) left running by the previous server", resumed)
        for thread in self._threads:
            thread.start()

    def dispatch(self, job_id: str, chunks: Sequence[int]) -> None:
        with self._wake:
            self._wake.notify_all()

    def close(self, timeout: float | None = None) -> None:
        """Start no new chunk; wait for the running ones (their outcome is recorded)."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self) -> None:
        lower_thread_priority()  # these threads only ever run bulk work
        while True:
            with self._wake:
                if self._stopping:
                    return
            claim = self.store.claim_chunk()
            if claim is None:
                due = self.store.next_due()
                with self._wake:
                    if not self._stopping:
                        wait = 5.0 if due is None else max(0.05, min(5.0, due - time.time()))
                        self._wake.wait(wait)
                continue
            job_id, index, attempts = claim
            result = attempt_chunk(
                self.store,
                job_id,
                index,
                self.translator,
                attempt=attempts,
                policy=self.policy,
            )
            if isinstance(result, RetryLater):
                self.store.retry_chunk(job_id, index, time.time() + result.delay)


def start_embedded_jobs(
    settings: Settings, translator: LocalTranslator
) -> tuple[JobManager, Callable[[], None]]:
    """Embedded mode's jobs: SQLite state and chunk threads in this process (blocking: opens
    the database and starts the threads). Returns the manager and what stops it."""
    if "://" in settings.jobs_dir and settings.jobs_db is None:
        raise SettingsError(
            "UNPAIRED_JOBS_DB: embedded mode keeps job state in a local SQLite file; set it "
            f"when UNPAIRED_JOBS_DIR is a URL ({settings.jobs_dir})"
        )
    store = SqliteJobStore(settings.jobs_database)
    policy = ChunkPolicy.from_settings(settings, backoff_cap=30.0)
    runner = EmbeddedRunner(store, translator, policy=policy, threads=settings.bulk_concurrency)
    runner.start()

    def close() -> None:
        runner.close()
        store.close()

    manager = JobManager.from_settings(settings, store, JobFiles.from_settings(settings), runner)
    return manager, close
