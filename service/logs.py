"""Logging for the serving processes: one JSON object per line (or plain text for a terminal).

The API writes one ``unpaired.access`` line per request whose fields come from the request
itself (request id, model, direction, sizes, batch size, queue wait, engine time, status);
the worker logs through the same formatter, so one log pipeline reads both.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from service.settings import LogFormat

__all__ = ["JsonFormatter", "configure_logging"]

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
#: Extras other libraries attach that a log pipeline must not get: uvicorn's ``color_message``
#: repeats the message with ANSI colour escapes for its own terminal formatter.
_DROPPED = frozenset({"color_message"})


class JsonFormatter(logging.Formatter):
    """A record as JSON: time, level, logger, message and every ``extra=`` field."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in _DROPPED and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(format: LogFormat, level: str) -> None:
    """Route every logger (ours, uvicorn's, celery's) to stderr in one format."""
    handler = logging.StreamHandler(sys.stderr)
    if format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "kombu"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Celery logs every task's return value (whole images) at INFO; failures stay at ERROR
    logging.getLogger("celery.app.trace").setLevel(max(logging.WARNING, root.level))
