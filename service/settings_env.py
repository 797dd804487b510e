"""`.env.example`, written from :class:`~service.settings.Settings` itself.

Every ``UNPAIRED_`` variable appears once, commented out at its default, under its
description, so the file can never list a variable the service does not read or miss one it
does (``tests/deploy/test_env_example.py`` compares the file with this function's output).
Regenerate with ``unpaired settings --env-example > .env.example``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from service.settings import Settings

__all__ = ["env_example", "env_value", "variable"]

HEADER = """\
# Every UNPAIRED_ setting of the unpaired service, at its default (commented out).
# Copy to .env and uncomment what you change: docker compose reads .env, `unpaired serve` and
# `unpaired worker` read the same variables from their environment.
# Generated from service/settings.py by `unpaired settings --env-example`; do not edit by hand.
"""


def variable(field: str) -> str:
    return f"UNPAIRED_{field.upper()}"


def env_value(value: Any) -> str:
    """A default as the environment spells it (lists comma-separated, none empty)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, SecretStr):
        return ""
    if isinstance(value, (tuple, list, frozenset, set)):
        items = sorted(value) if isinstance(value, (frozenset, set)) else value
        return ",".join(env_value(item) for item in items)
    if isinstance(value, Path):
        home = Path.home()
        return f"~/{value.relative_to(home)}" if value.is_relative_to(home) else str(value)
    return str(value)


def env_example() -> str:
    lines = [HEADER]
    for name, field in Settings.model_fields.items():
        if field.description:
            lines += [f"# {line}" for line in textwrap.wrap(field.description, 94)]
        lines.append(f"# {variable(name)}={env_value(field.default)}")
        lines.append("")
    return "\n".join(lines)
