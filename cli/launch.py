"""How each long-running process of a deployment is started: one definition.

``docker-compose.yml``, the Kubernetes manifests in ``deploy/k8s/``, ``unpaired serve
--workers`` and the end-to-end tests all start the API and the workers with these commands and
configure them only through ``UNPAIRED_*`` variables; ``tests/deploy`` checks that the
compose file and the manifests say exactly this.
"""

from __future__ import annotations

import sys
from typing import Final

__all__ = ["API_COMMAND", "DISTRIBUTED_ENV", "WORKER_COMMAND", "python_command"]

#: The REST API and web page (distributed mode when UNPAIRED_BROKER_URL is set).
API_COMMAND: Final = ("unpaired", "serve")
#: A Celery worker: interactive queue first, then the bulk queue (one per GPU).
WORKER_COMMAND: Final = ("unpaired", "worker")
#: What every API and worker process of a distributed deployment is given; the rest of the
#: settings have defaults (`.env.example` lists them all).
DISTRIBUTED_ENV: Final = ("UNPAIRED_BROKER_URL", "UNPAIRED_STORE", "UNPAIRED_JOBS_DIR")


def python_command(command: tuple[str, ...]) -> list[str]:
    """`command` run by this interpreter (``python -m cli ...``), for where the `unpaired`
    script may not be on PATH (a checkout, a virtual environment not activated)."""
    if command[0] != "unpaired":
        raise ValueError(f"not an unpaired command: {command}")
    return [sys.executable, "-m", "cli", *command[1:]]
