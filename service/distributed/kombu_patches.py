"""A workaround for kombu's Redis transport, applied by every worker at start.

When the broker goes away while a worker holds unacknowledged messages (Redis restarted while a
request is being acknowledged), Celery closes the connection and kombu's channel, on closing,
restores those messages to the queue through a connection that has already been released:
``AttributeError: 'NoneType' object has no attribute 'hostname'`` in ``_connparams``, which
Celery treats as unrecoverable, and the worker exits (celery/kombu#582, #970; seen in the soak
and in the suite's Redis-outage test). Nothing needs restoring there: the messages stay in
Redis's unacknowledged record, and any worker hands them out again after the visibility
timeout. So that one restore is skipped when the connection is gone; the worker reconnects.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from kombu.transport import redis as kombu_redis

__all__ = ["tolerate_restoring_on_a_released_connection"]

log = logging.getLogger("unpaired.worker")


def tolerate_restoring_on_a_released_connection() -> None:
    qos = kombu_redis.QoS
    if getattr(qos.restore_unacked, "_unpaired_patched", False):
        return
    original = qos.restore_unacked

    @functools.wraps(original)
    def restore_unacked(self: Any, client: Any = None) -> Any:
        if self.channel.connection is None or self.channel.connection.client is None:
            log.warning(
                "broker connection already released: %d unacknowledged message(s) are left "
                "to the visibility timeout's redelivery",
                len(self._delivered),
            )
            self._delivered.clear()
            return None
        return original(self, client)

    restore_unacked._unpaired_patched = True  # type: ignore[attr-defined]
    qos.restore_unacked = restore_unacked  # type: ignore[method-assign]
