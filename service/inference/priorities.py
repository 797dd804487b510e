"""CPU priorities inside a serving process, so bulk work never slows interactive requests.

Bulk jobs share a process (and on a CPU, the cores) with interactive requests: the embedded
server runs its chunks itself, and every worker takes both queues. The micro-batcher already
puts interactive items first; these two settings cover what it cannot see:

- threads that only ever do bulk work (decoding, encoding, file reads and writes) run at a
  higher niceness, so the kernel gives interactive threads the cores first;
- the interpreter hands the GIL over every millisecond rather than every 5 ms, so an
  interactive thread waits less behind bulk threads' Python code (measured in
  ``bench/bulk.py``: p95 during a job 2.2x idle -> 1.6x on 2 cores, throughput unchanged).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Final

__all__ = ["BULK_NICENESS", "SWITCH_INTERVAL_S", "favour_interactive", "lower_thread_priority"]

#: Niceness added to bulk-only threads (0 is normal, 19 the lowest priority).
BULK_NICENESS: Final = 10
#: How often (seconds) a thread holding the GIL hands it over when others wait (default 5 ms).
SWITCH_INTERVAL_S: Final = 0.001


def favour_interactive() -> None:
    """Process-wide, once at start: the GIL changes hands often enough for short requests."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def lower_thread_priority() -> None:
    """Make the calling thread yield the CPU to interactive work (Linux: niceness is per
    thread). Only for threads that do nothing else: a thread cannot take it back."""
    # relative, so it only ever lowers the priority (which needs no privilege); not Linux,
    # or not allowed: the same priority, still correct
    with contextlib.suppress(AttributeError, OSError):
        thread = threading.get_native_id()
        niceness = os.getpriority(os.PRIO_PROCESS, thread) + BULK_NICENESS
        os.setpriority(os.PRIO_PROCESS, thread, min(19, niceness))
