"""What every `unpaired` command shares: the stderr console, user-error handling, JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

# soft_wrap: a message is never broken inside a path or a word when stderr is a log or a pipe
err = Console(stderr=True, soft_wrap=True)

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
    from training.export import ExportError
    from training.folder_data import DatasetError
    from training.synthetic import UnknownDatasetError

    return (
        ConfigError,
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


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except _user_errors() as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, markup=True)
        raise typer.Exit(EXIT_USER_ERROR) from None


def print_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
