"""A pydantic validation error as the text and details a user reads: one formatting rule.

The training config, the model manifest, the service settings and the API's request bodies
all validate with pydantic; each names the place of a problem in its own terms (an option, a
manifest field, an ``UNPAIRED_*`` variable, a query parameter), but the rule is the same: one
``where: what`` per problem, joined with ``; ``. It lives in ``models`` because every package
may import ``models``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Problem", "ValidationErrors", "describe_validation_error", "problems"]


class ValidationErrors(Protocol):
    """pydantic's ``ValidationError``, or FastAPI's ``RequestValidationError``."""

    def errors(self) -> Sequence[Mapping[str, Any]]: ...


@dataclass(frozen=True)
class Problem:
    """One thing pydantic refused: where (the path of keys and indexes) and why."""

    location: tuple[str, ...]
    message: str
    kind: str  # pydantic's error type, e.g. "missing", "extra_forbidden"

    def as_detail(self) -> dict[str, object]:
        """The API's per-parameter detail: ``{"location": [...], "message": ...}``."""
        return {"location": list(self.location), "message": self.message}


def problems(exc: ValidationErrors) -> list[Problem]:
    return [
        Problem(tuple(str(part) for part in error["loc"]), error["msg"], error["type"])
        for error in exc.errors()
    ]


def _dotted(location: tuple[str, ...], root: str) -> str:
    return ".".join(location) or root


def describe_validation_error(
    exc: ValidationErrors,
    *,
    root: str = "(root)",
    where: Callable[[tuple[str, ...]], str] | None = None,
    explain: Callable[[Problem], str | None] | None = None,
) -> str:
    """``where: what; where: what`` for every problem.

    `where` names a location (default: dotted keys, `root` for the whole value); `explain`
    may replace a problem's whole line (e.g. to list the valid options of an unknown one).
    """
    lines = []
    for problem in problems(exc):
        line = explain(problem) if explain is not None else None
        if line is None:
            place = where(problem.location) if where is not None else None
            line = f"{place or _dotted(problem.location, root)}: {problem.message}"
        lines.append(line)
    return "; ".join(lines)
