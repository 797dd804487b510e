"""A workaround for kombu's Redis transport, applied by every worker at start.

When the broker goes away while a worker holds unacknowledged messages (Redis restarted while a
request is being acknowledged), Celery closes the connection, and kombu's channel then still
acknowledges or restores those messages through the connection it has just released: an
``AttributeError`` on ``None`` in ``Channel._connparams``, which Celery calls unrecoverable, and
the worker exits (celery/kombu#582, #970; seen in the soak and in the suite's Redis-outage test).
Such a channel cannot reach Redis, which is exactly a connection error: raised as one, Celery's
recovery handles it (the worker reconnects, and the messages left unacknowledged in Redis are
handed out again after the visibility timeout).
"""

from __future__ import annotations

import functools
from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["released_connections_are_connection_errors"]


def released_connections_are_connection_errors() -> None:
    channel = kombu_redis.Channel
    if getattr(channel._connparams, "_unpaired_patched", False):
        return
    original = channel._connparams

    @functools.wraps(original)
    def connparams(self: Any, asynchronous: bool = False) -> Any:
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError("the broker connection was released (celery/kombu#582)")
        return original(self, asynchronous=asynchronous)

    connparams._unpaired_patched = True  # type: ignore[attr-defined]
    channel._connparams = connparams  # type: ignore[method-assign]
