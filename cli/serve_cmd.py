"""`unpaired serve` (the REST API and web page) and `unpaired worker` (a Celery worker).

Both read every setting from `UNPAIRED_*` (see `service/settings.py`); the flags here override
the few that differ between invocations. With `UNPAIRED_BROKER_URL` unset, `serve` runs the
models in its own process (embedded mode); set, it hands requests to `unpaired worker`s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import err, fail, user_errors
from cli.export_cmd import StoreOption

ModelsOption = Annotated[
    list[str] | None,
    typer.Option("--model", help="load only this model (repeatable; default: the whole store)"),
]


def _settings(**flags: Any) -> Any:
    from service.settings import load_settings

    overrides = {k: v for k, v in flags.items() if v not in (None, [], ())}
    with user_errors():
        return load_settings(**overrides)


def serve(
    host: Annotated[str | None, typer.Option(help="address to bind (env UNPAIRED_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (env UNPAIRED_PORT; 8000)")] = None,
    store: StoreOption = None,
    model: ModelsOption = None,
    workers: Annotated[
        int,
        typer.Option(
            min=0,
            help="distributed mode on this machine: start N `unpaired worker`s (and a private "
            "redis-server when UNPAIRED_BROKER_URL is unset)",
        ),
    ] = 0,
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            help="API processes sharing the port (distributed mode only: in embedded mode the "
            "models and the bulk jobs live in the one API process)",
        ),
    ] = 1,
) -> None:
    """Serve the REST API and the web page (embedded mode unless UNPAIRED_BROKER_URL is set)."""
    settings = _settings(host=host, port=port, store=store, models=model)
    if processes > 1 and workers == 0 and settings.broker_url is None:
        fail(
            "--processes needs distributed mode (UNPAIRED_BROKER_URL or --workers N): in "
            "embedded mode the models and the bulk jobs live in the one API process"
        )
    if workers == 0:
        _serve(settings, processes)
        return
    # uvicorn re-raises SIGTERM once it has shut down; as an exception it lets the stack below
    # stop the workers and the private Redis instead of killing this process on the spot
    signal.signal(signal.SIGTERM, _terminate)
    from cli.launch import WORKER_COMMAND, python_command

    with contextlib.suppress(_Terminated), contextlib.ExitStack() as stack:
        broker_url = settings.broker_url or _private_redis(stack)
        env = {**os.environ, "UNPAIRED_BROKER_URL": broker_url, "UNPAIRED_STORE": settings.store}
        if model:
            env["UNPAIRED_MODELS"] = ",".join(model)
        for _ in range(workers):
            process = subprocess.Popen(python_command(WORKER_COMMAND), env=env)
            stack.callback(_stop, process)
        settings = _settings(host=host, port=port, store=store, models=model, broker_url=broker_url)
        _serve(settings, processes)


class _Terminated(Exception):
    """SIGTERM arrived."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated


def _private_redis(stack: contextlib.ExitStack) -> str:
    from cli.local_redis import LocalRedis, RedisNotInstalled

    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="unpaired-redis-")))
    try:
        server = stack.enter_context(LocalRedis(folder, persistent=True))
    except RedisNotInstalled as exc:
        fail(str(exc))
    err.print(f"started a private redis-server at {server.url}")
    return server.url


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Celery's warm shutdown: finish the requests in hand, then exit."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


def _serve(settings: Any, processes: int = 1) -> None:
    import uvicorn

    from service.api.app import create_app
    from service.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    shown = "localhost" if settings.host in ("0.0.0.0", "127.0.0.1", "::") else settings.host
    url = f"http://{shown}:{settings.port}/"

    def announce(mode: str) -> None:
        message = f"unpaired is serving ({mode} mode): web page {url} · API docs {url}docs"
        if processes > 1:
            message = f"unpaired starts {processes} API processes ({mode} mode): web page {url}"
        _say(settings, message, url=url, mode=mode)

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,  # one JSON line per request comes from the app itself
        "server_header": False,
        "timeout_graceful_shutdown": int(settings.request_timeout_s),
    }
    with user_errors():
        try:
            if processes == 1:
                uvicorn.run(create_app(settings, on_ready=announce), **options)
            else:  # uvicorn's supervisor: each process builds its app from UNPAIRED_*
                os.environ.update(_environment(settings))
                announce("distributed")
                uvicorn.run(
                    "cli.serve_cmd:app_of_process", factory=True, workers=processes, **options
                )
        except SystemExit as stop:  # uvicorn exits 3 when the lifespan fails
            if stop.code:
                fail("the server did not start (see above)")


def _environment(settings: Any) -> dict[str, str]:
    """What the CLI's flags changed, as UNPAIRED_* for the API processes uvicorn starts."""
    env = {"UNPAIRED_STORE": str(settings.store), "UNPAIRED_BROKER_URL": str(settings.broker_url)}
    if settings.models:
        env["UNPAIRED_MODELS"] = ",".join(settings.models)
    return env


def app_of_process() -> Any:
    """One API process of `serve --processes N` (uvicorn imports this by name)."""
    from service.api.app import create_app
    from service.logs import configure_logging
    from service.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)

    def announce(mode: str) -> None:
        _say(settings, f"API process {os.getpid()} ready ({mode} mode)", mode=mode)

    return create_app(settings, on_ready=announce)


def _say(settings: Any, message: str, **fields: str) -> None:
    """A line for the operator: a JSON log record when stderr is a log stream, else text."""
    if settings.log_format == "json":  # every line one JSON object
        logging.getLogger("unpaired.serve").info(message, extra=fields)
    else:
        err.print(message)


def worker(
    queues: Annotated[
        str | None,
        typer.Option(
            help="comma-separated queues (default: UNPAIRED_QUEUE, then UNPAIRED_BULK_QUEUE)"
        ),
    ] = None,
    store: StoreOption = None,
    model: ModelsOption = None,
    name: Annotated[
        str | None, typer.Option(help="worker name (env UNPAIRED_WORKER_NAME; unpaired-PID@host)")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="requests held at once (default 2 x max batch)")
    ] = None,
) -> None:
    """Run a Celery worker that batches translation requests from Redis (one per GPU)."""
    from service.distributed.worker import run_worker

    settings = _settings(store=store, models=model, worker_concurrency=concurrency)
    if settings.broker_url is None:
        fail("a worker needs UNPAIRED_BROKER_URL (e.g. redis://127.0.0.1:6379/0)")
    with user_errors():
        run_worker(settings, queues=[q for q in (queues or "").split(",") if q], name=name)
