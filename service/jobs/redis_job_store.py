"""Distributed mode's job state, in the Redis the workers already use.

Per job: a hash (spec, state, counts, times), the chunks' item lists, the set of chunks whose
outcome is recorded, and hashes of written outputs and of errors. Every change that has to be
atomic (recording a chunk, finishing the job, cancelling) is one Lua script, so any number of
API processes and workers can share the job. Persistence is Redis's: ``unpaired serve
--workers`` starts its Redis with AOF; a production Redis should have it too (``docs``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Final

import redis

from service.jobs.job_store import ERRORS_LIMIT
from service.jobs.records import (
    ChunkOutcome,
    Item,
    ItemError,
    JobSpec,
    JobState,
    JobStatus,
    final_state,
)

__all__ = ["RedisJobStore"]

PREFIX: Final = "unpaired:job:"
INDEX: Final = "unpaired:jobs"  # sorted set: job id -> created_at
UNDISPATCHED: Final = "unpaired:jobs:undispatched"  # jobs whose chunks are not all queued

# KEYS: job, chunks done, written, errors, chunks running; ARGV: chunk index, now, written json,
# errors json
_FINISH_CHUNK: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SREM', KEYS[5], ARGV[1])
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
local written = cjson.decode(ARGV[3])
local errors = cjson.decode(ARGV[4])
for _, pair in ipairs(written) do redis.call('HSET', KEYS[3], pair[1], pair[2]) end
for _, pair in ipairs(errors) do redis.call('HSET', KEYS[4], pair[1], pair[2]) end
redis.call('HINCRBY', KEYS[1], 'done', #written)
local failed = redis.call('HINCRBY', KEYS[1], 'failed', #errors)
local state = redis.call('HGET', KEYS[1], 'state')
local chunks = tonumber(redis.call('HGET', KEYS[1], 'chunks'))
if redis.call('SCARD', KEYS[2]) >= chunks and (state == 'queued' or state == 'running') then
  local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
  local final = 'partially_failed'
  if failed == 0 then final = 'succeeded' elseif failed >= total then final = 'failed' end
  redis.call('HSET', KEYS[1], 'state', final, 'finished_at', ARGV[2])
end
return 1
"""

# KEYS: job, chunks done, chunks running; ARGV: chunk index, now
_START_CHUNK: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
local state = redis.call('HGET', KEYS[1], 'state')
local recorded = redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1
if (state ~= 'queued' and state ~= 'running') or recorded then
  redis.call('SREM', KEYS[3], ARGV[1])
  return nil
end
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'running')
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[2])
return redis.call('HGET', KEYS[1], 'spec')
"""

# KEYS: job; ARGV: now
_CANCEL: Final = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'queued' or state == 'running' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ARGV[1])
end
return state
"""


# KEYS: attempting, died; ARGV: chunk index
_BEGIN_ATTEMPT: Final = """
if redis.call('HGET', KEYS[1], ARGV[1]) then redis.call('HINCRBY', KEYS[2], ARGV[1], 1) end
redis.call('HSET', KEYS[1], ARGV[1], 1)
return tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
"""

# KEYS: translating, deaths; ARGV: chunk index
_CHARGE: Final = """
local item = redis.call('HGET', KEYS[1], ARGV[1])
if item then
  redis.call('HINCRBY', KEYS[2], ARGV[1] .. '/' .. item, 1)
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
"""


def _ledger_keys(job_id: str) -> tuple[str, str, str, str]:
    """The job's hashes of chunks with an attempt under way, of their attempts that died, of
    the image each careful attempt translates, and of deaths per `<chunk>/<image>`."""
    base = PREFIX + job_id
    return f"{base}:attempting", f"{base}:died", f"{base}:translating", f"{base}:deaths"


def _frames_key(job_id: str) -> str:
    """The job's hash of frames translated so far per clip."""
    return f"{PREFIX}{job_id}:frames"


# KEYS: job, frames; ARGV: item, frames. Only while the job exists (a deleted job stays gone).
_FRAMES: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
"""


def _keys(job_id: str) -> tuple[str, str, str, str, str, str]:
    """The job's hash, then its sets and hashes: done, written, errors, chunks, running."""
    base = PREFIX + job_id
    return (
        base,
        f"{base}:done",
        f"{base}:written",
        f"{base}:errors",
        f"{base}:chunks",
        f"{base}:running",
    )


class RedisJobStore:
    def __init__(self, client: redis.Redis) -> None:
        # Any: redis-py types every reply as a union (bytes or str by decode_responses)
        self.client: Any = client
        self._finish = client.register_script(_FINISH_CHUNK)
        self._start = client.register_script(_START_CHUNK)
        self._cancel = client.register_script(_CANCEL)
        self._frames = client.register_script(_FRAMES)
        self._charge = client.register_script(_CHARGE)
        self._begin_attempt = client.register_script(_BEGIN_ATTEMPT)

    def create(
        self, spec: JobSpec, chunks: Sequence[Sequence[Item]], refused: Sequence[ItemError]
    ) -> JobStatus:
        job, _, _, errors, chunk_key, _ = _keys(spec.id)
        fields: dict[str, Any] = {
            "spec": json.dumps(spec.to_dict()),
            "owner": spec.owner,
            "state": JobState.QUEUED,
            "done": 0,
            "failed": len(refused),
            "total": spec.total,
            "chunks": len(chunks),
        }
        if not chunks:  # nothing to run: every entry was refused at intake (or none given)
            fields |= {"state": final_state(spec.total, len(refused)), "finished_at": time.time()}
        with self.client.pipeline(transaction=True) as pipe:
            if chunks:
                pipe.hset(
                    chunk_key,
                    mapping={
                        str(i): json.dumps([item.to_list() for item in chunk])
                        for i, chunk in enumerate(chunks)
                    },
                )
            if refused:
                pipe.hset(errors, mapping={e.item: e.error for e in refused})
            pipe.hset(job, mapping=fields)
            pipe.zadd(INDEX, {spec.id: spec.created_at})
            if chunks:
                pipe.sadd(UNDISPATCHED, spec.id)
            pipe.execute()
        status = self.get(spec.id)
        assert status is not None
        return status

    def get(self, job_id: str, errors_limit: int = ERRORS_LIMIT) -> JobStatus | None:
        job, _, _, errors, *_ = _keys(job_id)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(job)
            pipe.hvals(_frames_key(job_id))
            data, frames = pipe.execute()
        if not data:
            return None
        found: list[ItemError] = []
        if int(data[b"failed"]):
            for item, error in self.client.hscan_iter(errors, count=500):
                found.append(ItemError(item.decode(), error.decode()))
                if len(found) >= errors_limit:
                    break
            found.sort(key=lambda e: e.item)
        return replace(_status(data, found), frames=sum(int(f) for f in frames))

    def page(self, owner: str | None, limit: int, before: float | None) -> list[JobStatus]:
        out: list[JobStatus] = []
        top: float | str = f"({before}" if before is not None else "+inf"
        offset = 0
        while len(out) < limit:
            ids = self.client.zrevrangebyscore(INDEX, top, "-inf", start=offset, num=limit * 2)
            if not ids:
                break
            offset += len(ids)
            with self.client.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hgetall(PREFIX + job_id.decode())
                rows = pipe.execute()
            for data in rows:
                if data and (owner is None or data[b"owner"].decode() == owner):
                    out.append(_status(data, []))
                    if len(out) == limit:
                        break
        return out

    def chunk_items(self, job_id: str, index: int) -> list[Item]:
        raw = self.client.hget(_keys(job_id)[4], str(index))
        return [] if raw is None else [Item.from_list(v) for v in json.loads(raw)]

    def start_chunk(self, job_id: str, index: int) -> JobSpec | None:
        job, done, *_, running = _keys(job_id)
        raw = self._start(keys=[job, done, running], args=[index, time.time()])
        return None if raw is None else JobSpec.from_dict(json.loads(raw))

    def finish_chunk(self, job_id: str, index: int, outcome: ChunkOutcome) -> None:
        job, done, written, errors, _, running = _keys(job_id)
        self._finish(
            keys=[job, done, written, errors, running],
            args=[
                index,
                time.time(),
                json.dumps([[i.name, i.output] for i in outcome.written]),
                json.dumps([[e.item, e.error] for e in outcome.failed]),
            ],
        )

    def cancel(self, job_id: str) -> JobStatus | None:
        self._cancel(keys=[_keys(job_id)[0]], args=[time.time()])
        return self.get(job_id)

    def written(self, job_id: str) -> list[Item]:
        items = [
            Item(name.decode(), output.decode())
            for name, output in self.client.hscan_iter(_keys(job_id)[2], count=1000)
        ]
        return sorted(items, key=lambda item: item.output)

    def running_chunks(self, job_id: str) -> int:
        return int(self.client.scard(_keys(job_id)[5]))

    def unfinished_chunks(self, job_id: str) -> list[int]:
        job, done, *_ = _keys(job_id)
        chunks = int(self.client.hget(job, "chunks") or 0)
        recorded = {int(i) for i in self.client.smembers(done)}
        return [i for i in range(chunks) if i not in recorded]

    def expired(self, finished_before: float) -> list[str]:
        out = []
        for raw_id in self.client.zrangebyscore(INDEX, "-inf", finished_before):
            job_id = raw_id.decode()
            finished = self.client.hget(PREFIX + job_id, "finished_at")
            if finished is None and not self.client.exists(PREFIX + job_id):
                out.append(job_id)  # its record is gone: only the index entry (and files) left
            elif finished is not None and float(finished) < finished_before:
                out.append(job_id)
        return out

    def delete(self, job_id: str) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(*_keys(job_id), *_ledger_keys(job_id), _frames_key(job_id))
            pipe.zrem(INDEX, job_id)
            pipe.srem(UNDISPATCHED, job_id)
            pipe.execute()

    def mark_dispatched(self, job_id: str) -> None:
        self.client.srem(UNDISPATCHED, job_id)

    def undispatched(self, created_before: float) -> list[str]:
        ids = sorted(i.decode() for i in self.client.smembers(UNDISPATCHED))
        if not ids:
            return []
        scores = self.client.zmscore(INDEX, ids)
        return [i for i, t in zip(ids, scores, strict=True) if t is not None and t < created_before]

    # --- processes that died (service.jobs.poison) ---------------------------------------

    def begin_attempt(self, job_id: str, index: int) -> int:
        attempting, died, *_ = _ledger_keys(job_id)
        return int(self._begin_attempt(keys=[attempting, died], args=[index]))

    def end_attempt(self, job_id: str, index: int) -> None:
        self.client.hdel(_ledger_keys(job_id)[0], str(index))

    def begin_careful(self, job_id: str, index: int) -> dict[str, int]:
        *_, translating, deaths = _ledger_keys(job_id)
        self._charge(keys=[translating, deaths], args=[index])
        prefix = f"{index}/"
        return {
            field.decode()[len(prefix) :]: int(count)
            for field, count in self.client.hgetall(deaths).items()
            if field.decode().startswith(prefix)
        }

    def frames_done(self, job_id: str, item: str, frames: int) -> None:
        self._frames(keys=[_keys(job_id)[0], _frames_key(job_id)], args=[item, frames])

    def translating(self, job_id: str, index: int, item: str | None) -> None:
        key = _ledger_keys(job_id)[2]
        if item is None:
            self.client.hdel(key, str(index))
        else:
            self.client.hset(key, str(index), item)


def _status(data: dict[bytes, bytes], errors: list[ItemError]) -> JobStatus:
    started = data.get(b"started_at")
    finished = data.get(b"finished_at")
    return JobStatus(
        spec=JobSpec.from_dict(json.loads(data[b"spec"])),
        state=JobState(data[b"state"].decode()),
        done=int(data[b"done"]),
        failed=int(data[b"failed"]),
        started_at=None if started is None else float(started),
        finished_at=None if finished is None else float(finished),
        errors=errors,
    )
