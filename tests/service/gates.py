"""Failpoint gates: hold a real process at an exact place, see that it got there, let it go.

``UNPAIRED_FAILPOINTS`` (service/failpoints.py) makes a process wait at a named place until a
file exists; a :class:`Gate` is that file, seen from the test. A fault (a SIGKILL, a SIGTERM, a
cancel) then lands while the process holds exactly the work the test meant, on any machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.waiting import wait_until


class Gate:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.reached_log = Path(f"{path}.reached")

    def failpoint(self, at: str, **options: Any) -> dict[str, Any]:
        """A failpoint that waits at `at` for this gate (`match`, `after`, `times`...)."""
        return {"at": at, "do": "wait", "path": str(self.path), **options}

    @property
    def reached(self) -> int:
        """How many times a process has arrived at this gate."""
        return len(self.reached_log.read_text().splitlines()) if self.reached_log.exists() else 0

    def wait_reached(self, times: int = 1, timeout: float = 120) -> None:
        wait_until(
            lambda: self.reached >= times,
            f"a process reached {self.path.name} {times} time(s)",
            timeout=timeout,
        )

    def open(self) -> None:
        self.path.touch()


def failpoints(*points: dict[str, Any]) -> str:
    """The value of UNPAIRED_FAILPOINTS for these failpoints."""
    return json.dumps(list(points))
