"""`unpaired jobs`: bulk jobs on a running server (`unpaired serve`), from the command line.

    unpaired jobs submit day2night photos/ --direction AtoB --wait
    unpaired jobs status JOB_ID        unpaired jobs wait JOB_ID
    unpaired jobs download JOB_ID --out night/
    unpaired jobs cancel JOB_ID        unpaired jobs list
    unpaired jobs delete JOB_ID

Folders and images are packed into one zip (stored, not recompressed) and uploaded as the
job's archive, keeping their relative paths; a .zip or .tar file is uploaded as it is;
`--source` names a folder the server reads in place. Exit codes: 0 done, 1 some images
failed (or the job was cancelled), 2 a usage, connection or server error.
"""

from __future__ import annotations

import os
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import httpx
import typer

from cli.common import err, fail, failed, print_json
from service.files import atomic_file, write_atomic
from service.jobs.records import TERMINAL

app = typer.Typer(help="Bulk jobs on a running server: submit, watch, download, cancel.")

EXIT_SOME_FAILED = 1
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")

UrlOption = Annotated[
    str, typer.Option(envvar="UNPAIRED_URL", help="the server (env UNPAIRED_URL)")
]
KeyOption = Annotated[
    str | None,
    typer.Option(envvar="UNPAIRED_API_KEY", help="API key, if the server wants one"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print the job as JSON on stdout")]
DEFAULT_URL = "http://127.0.0.1:8000"


class Client:
    """The few calls the commands make; every failure becomes a clear message + exit 2."""

    def __init__(self, url: str, api_key: str | None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=60)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            fail(f"cannot reach {self.http.base_url}: {exc} (is `unpaired serve` running?)")
        if response.is_success:
            return response
        return fail(_error_message(response))

    def job(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.call("GET", f"/v1/jobs/{job_id}").json()
        return body


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{error['message']} ({error['code']}, HTTP {response.status_code})"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"


def _pack(inputs: list[Path], target: Path) -> int:
    """Images and videos of `inputs` into a zip at `target` (folders keep their relative
    paths)."""
    from models.imaging import find_images
    from service.inference.videos.formats import VIDEO_SUFFIXES

    count = 0
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive:
        for path in inputs:
            if path.is_dir():
                files = find_images(path, also=VIDEO_SUFFIXES)
                members = [(p, p.relative_to(path).as_posix()) for p in files]
            elif path.is_file():
                members = [(path, path.name)]
            else:
                fail(f"{path}: no such file or folder")
            for source, name in members:
                archive.write(source, name)
                count += 1
    return count


def _summary(job: dict[str, Any]) -> str:
    counts = job["counts"]
    line = (
        f"job {job['id']}: {job['state']}, {counts['done']}/{counts['total']} done, "
        f"{counts['failed']} failed"
    )
    if job.get("frames_done"):
        line += f", {job['frames_done']} video frame(s) translated"
    if job.get("throughput"):
        line += f", {job['throughput']:.1f} img/s"
    if job.get("eta_seconds") and job["state"] not in TERMINAL:
        line += f", about {job['eta_seconds']:.0f} s left"
    return line


def _report(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(job)
        return
    err.print(_summary(job))
    for failure in job.get("errors", []):
        failed(failure["item"], failure["error"])


def _exit_for(job: dict[str, Any]) -> None:
    if job["state"] != "succeeded":
        raise typer.Exit(EXIT_SOME_FAILED)


def _wait(client: Client, job_id: str, quiet: bool) -> dict[str, Any]:
    from tqdm import tqdm

    job = client.job(job_id)
    with tqdm(total=job["counts"]["total"], unit="img", disable=quiet or None) as bar:
        while True:
            counts = job["counts"]
            bar.n = counts["done"] + counts["failed"]
            frames = job.get("frames_done")  # a video advances by frames before it is done
            bar.set_postfix_str(
                f"{job['state']}, {frames} frames" if frames else job["state"], refresh=True
            )
            if job["state"] in TERMINAL:
                return job
            time.sleep(1.0)
            job = client.job(job_id)


@app.command()
def submit(
    model: Annotated[str, typer.Argument(help="model name or alias on the server")],
    inputs: Annotated[
        list[Path] | None, typer.Argument(help="images, folders, or one .zip/.tar archive")
    ] = None,
    direction: Annotated[str | None, typer.Option(help="AtoB or BtoA")] = None,
    output_format: Annotated[str, typer.Option("--format", help="png | jpeg | webp")] = "png",
    quality: Annotated[int, typer.Option(min=1, max=100, help="jpeg / webp quality")] = 95,
    source: Annotated[
        str | None, typer.Option(help="a folder the server reads in place (no upload)")
    ] = None,
    destination: Annotated[
        str | None, typer.Option(help="where the server writes outputs (inside its roots)")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="wait for the job, with progress")] = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Submit a bulk job and print its id (or wait for it with --wait)."""
    client = Client(url, api_key)
    fields: dict[str, Any] = {"model": model, "format": output_format, "quality": quality}
    for name, value in (("direction", direction), ("destination", destination)):
        if value is not None:
            fields[name] = value
    if source is not None:
        if inputs:
            fail("give either INPUTS to upload or --source, not both")
        job = client.call("POST", "/v1/jobs", json={**fields, "source": source}).json()
    elif not inputs:
        fail("nothing to convert: give images, folders or an archive (or --source)")
    elif (
        len(inputs) == 1
        and inputs[0].is_file()
        and inputs[0].name.lower().endswith(ARCHIVE_SUFFIXES)
    ):
        with inputs[0].open("rb") as handle:
            job = _post_archive(client, fields, inputs[0].name, handle)
    else:
        with tempfile.TemporaryDirectory(prefix="unpaired-jobs-") as scratch:
            packed = Path(scratch) / "inputs.zip"
            count = _pack(inputs, packed)
            if count == 0:
                fail("no image files in the inputs")
            err.print(f"uploading {count} image(s)")
            with packed.open("rb") as handle:
                job = _post_archive(client, fields, "inputs.zip", handle)
    if not wait:
        if as_json:
            print_json(job)
        else:
            err.print(_summary(job))
            print(job["id"])
        return
    job = _wait(client, job["id"], quiet=as_json)
    _report(job, as_json)
    _exit_for(job)


def _post_archive(client: Client, fields: dict[str, Any], name: str, handle: Any) -> Any:
    form = {k: str(v) for k, v in fields.items()}
    return client.call(
        "POST", "/v1/jobs", data=form, files={"archive": (name, handle)}, timeout=None
    ).json()


@app.command()
def status(
    job_id: Annotated[str, typer.Argument(help="the job's id")],
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """A job's state, counts, throughput, ETA and failed images."""
    _report(Client(url, api_key).job(job_id), as_json)


@app.command("wait")
def wait_for(
    job_id: Annotated[str, typer.Argument(help="the job's id")],
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Wait for a job to end, with a progress bar; exit 1 if any image failed."""
    job = _wait(Client(url, api_key), job_id, quiet=as_json)
    _report(job, as_json)
    _exit_for(job)


@app.command()
def download(
    job_id: Annotated[str, typer.Argument(help="the job's id")],
    out: Annotated[
        Path, typer.Option(help="a folder to extract into, or a path ending in .zip to keep it")
    ],
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Download a finished job's outputs (or list where they were written)."""
    client = Client(url, api_key)
    with client.http.stream("GET", f"/v1/jobs/{job_id}/result", timeout=None) as response:
        if not response.is_success:
            response.read()
            client.call("GET", f"/v1/jobs/{job_id}/result")  # reports the error and exits
        if response.headers.get("content-type", "").startswith("application/json"):
            response.read()
            listing = response.json()
            if as_json:
                print_json(listing)
            else:
                for entry in listing["outputs"]:
                    print(entry["output"])
            return
        zip_path = out if out.suffix.lower() == ".zip" else out.with_name(f".{out.name}.zip")
        with atomic_file(zip_path) as handle:  # a broken download leaves no half zip
            for chunk in response.iter_bytes():
                handle.write(chunk)
    if zip_path == out:
        err.print(f"saved {out}")
        return
    try:
        names = _extract(zip_path, out)
    finally:
        os.unlink(zip_path)
    if as_json:
        print_json({"id": job_id, "written": [str(out / n) for n in names]})
    else:
        err.print(f"wrote {len(names)} file(s) to {out}")


def _extract(archive_path: Path, folder: Path) -> list[str]:
    """The server's zip into `folder`, refusing any name that would leave it."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with zipfile.ZipFile(archive_path) as archive:
        for info in archive.infolist():
            parts = PurePosixPath(info.filename).parts
            if info.is_dir() or not parts or ".." in parts or info.filename.startswith("/"):
                continue
            write_atomic(folder.joinpath(*parts), archive.read(info))
            written.append(info.filename)
    return written


@app.command()
def cancel(
    job_id: Annotated[str, typer.Argument(help="the job's id")],
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a job: no new chunk starts; finished outputs are kept."""
    job = Client(url, api_key).call("POST", f"/v1/jobs/{job_id}/cancel").json()
    _report(job, as_json)


@app.command()
def delete(
    job_id: Annotated[str, typer.Argument(help="the job's id")],
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Delete a finished job with its uploaded inputs and outputs (cancel a running one first)."""
    Client(url, api_key).call("DELETE", f"/v1/jobs/{job_id}")
    err.print(f"deleted job {job_id}")


@app.command("list")
def list_jobs(
    limit: Annotated[int, typer.Option(min=1, max=200, help="jobs to show")] = 20,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recent jobs, newest first."""
    body = Client(url, api_key).call("GET", "/v1/jobs", params={"limit": limit}).json()
    if as_json:
        print_json(body)
        return
    from rich.table import Table

    table = Table("id", "state", "model", "direction", "done", "failed", "total", "created")
    for job in body["jobs"]:
        counts = job["counts"]
        table.add_row(
            job["id"],
            job["state"],
            job["model"],
            job["direction"],
            str(counts["done"]),
            str(counts["failed"]),
            str(counts["total"]),
            job["created_at"][:19],
        )
    err.print(table)
