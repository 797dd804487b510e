"""What the soak asks of the service: interactive requests at a steady rate (open loop: sent on
time whatever the answers do), and bulk jobs one after another, each checked against the CLI's
bytes. Every request and every image ends in exactly one outcome."""

from __future__ import annotations

import asyncio
import io
import random
import threading
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.harness import MODEL

__all__ = ["Interactive", "JobRecord", "Jobs", "RequestRecord"]

#: Documented answers that are not a translation: the service refused or gave up, and said so.
DOCUMENTED = {
    (503, "broker_unavailable"),
    (503, "queue_full"),
    (503, "overloaded"),
    (503, "shutting_down"),
    (503, "over_budget"),
    (504, "deadline_exceeded"),
}
PATH = f"/v1/models/{MODEL}/translate?direction=AtoB&format=png"


@dataclass(frozen=True)
class RequestRecord:
    sent: float  # seconds into the soak
    seconds: float
    outcome: str  # correct, wrong_bytes, documented_error, refused, lost
    detail: str = ""


@dataclass
class Interactive:
    """`rate` requests a second from `clients` connections, until stopped."""

    url: str
    inputs: list[tuple[bytes, bytes]]  # (request body, the CLI's output)
    rate: float
    clients: int
    deadline_s: float  # a request with no answer by then is lost
    started: float
    records: list[RequestRecord] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        asyncio.run(self._send_all())

    def stop(self) -> None:
        self._stop.set()

    async def _send_all(self) -> None:
        rng = random.Random(0)
        limits = httpx.Limits(max_connections=self.clients)
        timeout = httpx.Timeout(self.deadline_s, connect=10)
        async with httpx.AsyncClient(base_url=self.url, limits=limits, timeout=timeout) as http:
            pending: set[asyncio.Task[None]] = set()
            due = time.monotonic()
            while not self._stop.is_set():
                body, expected = rng.choice(self.inputs)
                task = asyncio.create_task(self._one(http, body, expected))
                pending.add(task)
                task.add_done_callback(pending.discard)
                due += 1 / self.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))  # the pace of the load
            await asyncio.gather(*pending)

    async def _one(self, http: httpx.AsyncClient, body: bytes, expected: bytes) -> None:
        sent = time.monotonic()
        outcome, detail = "correct", ""
        try:
            response = await http.post(PATH, content=body, headers={"content-type": "image/png"})
            if response.status_code == 200:
                outcome = "correct" if response.content == expected else "wrong_bytes"
            else:
                outcome, detail = _error_outcome(response)
        except httpx.ConnectError as exc:  # never accepted: the API was restarting
            outcome, detail = "refused", type(exc).__name__
        except httpx.HTTPError as exc:  # accepted, then no answer: lost
            outcome, detail = "lost", f"{type(exc).__name__}: {exc}"
        self.records.append(
            RequestRecord(sent - self.started, time.monotonic() - sent, outcome, detail)
        )


def _error_outcome(response: httpx.Response) -> tuple[str, str]:
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return "undocumented_error", f"{response.status_code} {response.text[:200]}"
    key = (response.status_code, code)
    return ("documented_error" if key in DOCUMENTED else "undocumented_error"), f"{key}"


@dataclass(frozen=True)
class JobRecord:
    submitted: float
    seconds: float
    state: str
    total: int
    done: int
    failed: int
    lost: int  # neither done nor failed when the job ended (or never ended)
    duplicated: int  # outputs beyond one per image (extra files, double counts)
    wrong_bytes: int


@dataclass
class Jobs:
    """Bulk jobs of the `inputs` archive, one after another, until stopped."""

    url: str
    archive: bytes
    expected: dict[str, bytes]  # output name -> the CLI's bytes
    jobs_dir: Path
    started: float
    job_timeout_s: float
    records: list[JobRecord] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            self.records.append(self._one())

    def stop(self) -> None:
        self._stop.set()

    def _one(self) -> JobRecord:
        submitted = time.monotonic()
        job_id = self._submit()
        status = self._wait(job_id, submitted + self.job_timeout_s)
        counts = status.get("counts", {"total": len(self.expected), "done": 0, "failed": 0})
        ended = status.get("state") in ("succeeded", "partially_failed")
        got = self._outputs(job_id) if ended else {}
        got.pop("errors.json", None)
        written = _files(self.jobs_dir / job_id / "outputs")
        return JobRecord(
            submitted=submitted - self.started,
            seconds=time.monotonic() - submitted,
            state=str(status.get("state", "never ended")),
            total=counts["total"],
            done=counts["done"],
            failed=counts["failed"],
            lost=counts["total"] - counts["done"] - counts["failed"],
            duplicated=max(0, len(written) - counts["done"]) + max(0, counts["done"] - len(got)),
            wrong_bytes=sum(1 for name, data in got.items() if self.expected.get(name) != data),
        )

    def _submit(self) -> str:
        """Submitted once accepted (the API may be restarting, Redis away: retried)."""
        while True:
            try:
                response = httpx.post(
                    f"{self.url}/v1/jobs",
                    data={"model": MODEL, "direction": "AtoB"},
                    files={"archive": ("soak.zip", self.archive, "application/zip")},
                    timeout=120,
                )
                if response.status_code == 202:
                    return str(response.json()["id"])
            except httpx.HTTPError:
                pass
            self._stop.wait(1.0)  # the service is restarting: ask again shortly

    def _wait(self, job_id: str, deadline: float) -> dict[str, Any]:
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                status = httpx.get(f"{self.url}/v1/jobs/{job_id}", timeout=30).json()
                if status["state"] not in ("queued", "running") and not status["chunks_writing"]:
                    return status
            except (httpx.HTTPError, ValueError, KeyError):
                pass  # the API restarting, Redis away: look again
            time.sleep(1.0)  # a poll, in a benchmark: the job ends when it ends
        return {**status, "state": "never ended"}

    def _outputs(self, job_id: str) -> dict[str, bytes]:
        for _ in range(60):
            try:
                response = httpx.get(f"{self.url}/v1/jobs/{job_id}/result", timeout=120)
                if response.status_code == 200:
                    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
                        names = archive.namelist()
                        counted = Counter(names)
                        return {n: archive.read(n) for n in names if counted[n] == 1}
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        return {}


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []
