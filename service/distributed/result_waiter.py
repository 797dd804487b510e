"""Waiting for task results without a thread per request: one Redis pub/sub connection.

Celery's Redis result backend stores each result under ``celery-task-meta-<id>`` and publishes
it on a channel of the same name. :class:`ReplyWaiter` subscribes to that channel before the
task is sent and resolves an asyncio future when the result arrives, so thousands of waiting
requests cost one connection and no threads.

Nothing published while the connection was down is lost: every ``poll_s`` seconds, and right
after a reconnection, the waiter reads the stored results of everything still waiting (one
MGET), which also covers a result that raced its subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis
from celery import states
from redis.exceptions import RedisError

from service.errors import BrokerUnavailable

__all__ = ["ReplyWaiter"]

log = logging.getLogger(__name__)


class ReplyWaiter:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        key_prefix: str,
        decode: Callable[[bytes | str], dict[str, Any]],
        poll_s: float = 2.0,
    ) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.decode = decode
        self.poll_s = poll_s
        self.connected = False
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._pubsub = client.pubsub()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="reply-waiter")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()
        for future in self._waiting.values():
            future.cancel()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def expect(self, task_id: str) -> AsyncIterator[asyncio.Future[dict[str, Any]]]:
        """Subscribe to `task_id`'s result; yields the future its result meta will resolve."""
        channel = self.key_prefix + task_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[channel] = future
        try:
            try:
                await self._pubsub.subscribe(channel)
            except (RedisError, OSError) as exc:
                raise BrokerUnavailable(str(exc) or type(exc).__name__) from None
            yield future
        finally:
            del self._waiting[channel]
            try:
                await self._pubsub.unsubscribe(channel)
            except (RedisError, OSError):  # disconnected: do not resubscribe it on reconnect
                self._pubsub.channels.pop(channel.encode(), None)

    def _deliver(self, channel: str, data: bytes | str) -> None:
        future = self._waiting.get(channel)
        if future is None or future.done():
            return
        try:
            meta = self.decode(data)
        except Exception:  # a foreign or damaged message must not stop the listener
            log.exception("cannot decode the result on %s", channel)
            return
        if meta.get("status") in states.READY_STATES:
            future.set_result(meta)

    async def _catch_up(self) -> None:
        """Read the stored result of everything still waiting (missed messages)."""
        channels = list(self._waiting)
        if not channels:
            return
        for channel, data in zip(channels, await self.client.mget(channels), strict=True):
            if data is not None:
                self._deliver(channel, data)

    async def _listen(self) -> None:
        backoff = 0.05
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + self.poll_s
        while True:
            try:
                if not self._pubsub.subscribed:
                    # a channel of our own keeps the connection open while nobody waits
                    await self._pubsub.subscribe(f"{self.key_prefix}listener")
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=min(1.0, self.poll_s)
                )
                if not self.connected:
                    self.connected = True
                    log.info("result channel connected")
                    await self._catch_up()
                if message is not None and message["type"] == "message":
                    self._deliver(message["channel"].decode(), message["data"])
                if loop.time() >= next_poll:
                    next_poll = loop.time() + self.poll_s
                    await self._catch_up()
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self.connected:
                    log.warning("result channel lost: %s; reconnecting", exc)
                self.connected = False
                await asyncio.sleep(backoff)
                backoff = min(1.0, backoff * 2)
