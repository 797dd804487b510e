"""What every `unpaired` command shares: the stderr console, user-error handling, JSON output.

The console never reads Rich markup: messages carry file, model and job names a user chose,
and a file named ``[bold red]x.png`` must be reported as it is named. Colour comes only from
:func:`error`, :func:`warning` and :func:`failed`, which style their fixed prefix.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

# soft_wrap: a message is never broken inside a path or a word when stderr is a log or a pipe;
# markup and highlighting off: every string printed is shown exactly as it is
err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that describe a mistake the user can fix (message, no traceback)."""
    from models import IncompatibleCheckpointError, UnknownModelError
    from models.imaging import ImageDecodeError
    from models.manifest import ManifestError
    from service.errors import EngineError, ImageRejected, StoreError
    from service.settings import SettingsError
    from training.checkpoint import CheckpointError
    from training.config import ConfigError
    from training.distill import DistillError
    from training.export import ExportError
    from training.folder_data import DatasetError
    from training.synthetic import UnknownDatasetError

    return (
        ConfigError,
        DistillError,
        DatasetError,
        CheckpointError,
        ImageDecodeError,
        UnknownModelError,
        UnknownDatasetError,
        IncompatibleCheckpointError,
        FileNotFoundError,
        ManifestError,
        StoreError,
        EngineError,
        ImageRejected,
        ExportError,
        SettingsError,
    )


def _prefixed(prefix: str, style: str, message: str) -> None:
    err.print(Text.assemble((prefix, style), " ", message))


def error(message: str) -> None:
    """``error: message`` (the prefix in red)."""
    _prefixed("error:", "red", message)


def warning(message: str) -> None:
    _prefixed("warning:", "yellow", message)


def failed(item: str, reason: str) -> None:
    """One input that could not be processed: ``failed: item: reason``."""
    _prefixed("failed:", "red", f"{item}: {reason}")


def fail(message: str) -> NoReturn:
    """Report a mistake the user can fix and stop (exit 2)."""
    error(message)
    raise typer.Exit(EXIT_USER_ERROR)


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except _user_errors() as exc:
        fail(str(exc))


def print_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
