"""Decoding on a thread of its own, watched: a demuxer or decoder that hangs on a hostile file
fails its clip instead of holding a worker for ever.

Demuxers and decoders are an attack surface; one that stops returning (a crafted file, a bug)
cannot be interrupted from Python. So the clip's reader runs on a daemon thread that hands
items over through a small bounded queue (memory stays bounded: at most `depth` frames wait),
and the consumer gives up when no item has come for ``stall_s`` seconds: the clip fails with
:class:`~service.errors.VideoRejected`, the worker goes on serving, and the stuck thread is left
behind (it holds what it held; a process restart reclaims it). A reader that crashes the process
instead is the poison path (redelivery, then failed after its attempts).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Final, TypeVar

from service.errors import VideoRejected

__all__ = ["watched"]

T = TypeVar("T")

_DONE: Final = object()
#: How often a blocked producer looks whether its consumer has gone.
_PUT_POLL_S: Final = 0.5
#: How long a producer may take to notice its consumer has gone before it counts as hung.
_JOIN_S: Final = 5.0


def watched(
    items: Iterator[T],
    *,
    stall_s: float,
    depth: int,
    name: str,
    on_abandon: Callable[[], None],
) -> Generator[T, None, None]:
    """`items`, produced on a daemon thread; :class:`VideoRejected` when none comes for
    `stall_s` seconds. Stopping early (the consumer raises or is closed) stops the producer at
    its next item; a producer still inside the reader after that (hung) is left behind, and
    ``on_abandon()`` says so (its container must then not be closed under it)."""
    handoff: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
    gone = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(handoff, item, gone):
                    return
            _put(handoff, _DONE, gone)
        except BaseException as exc:  # the reader's own error: raised in the consumer
            _put(handoff, exc, gone)

    thread = threading.Thread(target=produce, name=f"decode {name}", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = handoff.get(timeout=stall_s)
            except queue.Empty:
                raise VideoRejected(
                    f"{name}: decoding stalled: no frame for {stall_s:g} s "
                    "(UNPAIRED_VIDEO_STALL_S); the clip was given up"
                ) from None
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        gone.set()
        thread.join(_JOIN_S)
        if thread.is_alive():
            on_abandon()


def _put(handoff: queue.Queue[object], item: object, gone: threading.Event) -> bool:
    while not gone.is_set():
        try:
            handoff.put(item, timeout=_PUT_POLL_S)
            return True
        except queue.Full:
            continue
    return False
