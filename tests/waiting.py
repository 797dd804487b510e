"""Waiting in tests: on a condition, with a generous deadline, never for a fixed time.

A machine shared with another test process (two cores, `pytest -n 2`) only makes a wait
longer; it never changes what a test asserts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Generous: what a condition needs on the slowest machine the suite runs on, many times over.
DEFAULT_TIMEOUT = 60.0


def wait_until(
    condition: Callable[[], T],
    what: str | Callable[[], str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.02,
) -> T:
    """The first truthy value of `condition()`, polled every `interval` seconds; an
    AssertionError naming `what` (a text, or a function that describes the last state) if none
    comes within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"not within {timeout:.0f} s: {described}")
        time.sleep(interval)


async def eventually(
    condition: Callable[[], T],
    what: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> T:
    """:func:`wait_until` for a coroutine: yields to the event loop between looks."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(0.005)
