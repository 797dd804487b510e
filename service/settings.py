"""Service settings from the environment (prefix ``UNPAIRED_``), validated once at start.

Use :func:`get_settings` rather than a module-level instance so tests and the CLI can build
their own (``Settings(store=...)``) without touching the environment. One class serves every
process (CLI, API, Celery worker), so a deployment sets each variable once for all of them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.validation import describe_validation_error

BackendName = Literal["auto", "onnx", "torch"]
DeviceName = Literal["auto", "cpu", "cuda"]
PrecisionName = Literal["auto", "fp32", "fp16", "int8"]
LogFormat = Literal["json", "text"]


def _split_commas(value: object) -> object:
    """`a,b` or a JSON list: lists of keys and origins are easier to write with commas."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


FailpointSite = Literal["decode", "batch", "step", "chunk"]


class Failpoint(BaseModel):
    """A fault armed on purpose (``UNPAIRED_FAILPOINTS``, see :mod:`service.failpoints`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: FailpointSite
    do: Literal["wait", "error", "crash"]
    match: str = ""
    """act only on names containing this"""
    after: Annotated[int, Field(ge=0)] = 0
    """let this many matching hits pass first"""
    times: Annotated[int, Field(ge=1)] | None = None
    """act at most this many times in one process; default: every time"""
    path: str | None = None
    """`wait`: the file whose appearance lets the process go on"""
    timeout_s: Annotated[float, Field(gt=0)] = 300.0
    """`wait`: give up (an error) after this long"""

    @model_validator(mode="after")
    def _wait_needs_a_path(self) -> Failpoint:
        if self.do == "wait" and not self.path:
            raise ValueError("a failpoint that waits needs the `path` of the file it waits for")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="UNPAIRED_", frozen=True, extra="forbid", use_attribute_docstrings=True
    )

    store: str = Field("model-store", description="model store: a folder or an fsspec URL")
    cache_dir: Path = Field(
        Path.home() / ".cache" / "unpaired" / "models",
        description="local copies of models from remote stores",
    )

    # engine
    backend: BackendName = "auto"
    """inference runtime: onnx (onnxruntime) or torch; auto: onnx"""
    device: DeviceName = "auto"
    """cpu or cuda; auto: CUDA when the backend can use it"""
    precision: PrecisionName = Field(
        "auto", description="auto: fp16 on CUDA, fp32 on CPU; int8 (CPU) if exported with it"
    )
    max_batch: Annotated[int, Field(ge=1, le=1024)] = 8
    """images (or tiles) per engine call, interactive requests"""
    threads: Annotated[int, Field(ge=1)] | None = Field(
        None, description="CPU threads per engine; default: the CPUs this process may use"
    )
    tile: Annotated[int, Field(ge=64)] = 512
    """side of the tiles large images are cut into"""
    tile_overlap: Annotated[int, Field(ge=0)] = 64
    """pixels of blended overlap between tiles"""
    max_untiled_pixels: Annotated[int, Field(ge=1)] = 1024 * 1024
    """larger images are translated in tiles (bounded memory)"""
    tile_batch: Annotated[int, Field(ge=1, le=1024)] | None = Field(
        None,
        description="tiles per engine call for large images; default max_batch on a GPU, 2 on "
        "a CPU, where a request arriving during a large image waits for one call",
    )
    thumbnail_pixels: Annotated[int, Field(ge=1)] | None = None
    """tiled images share normalisation statistics from a thumbnail of this many pixels;
    default max_untiled_pixels (larger: closer to the untiled translation, more memory)"""

    # input limits
    max_image_bytes: Annotated[int, Field(ge=1)] = 50 * 2**20
    """largest encoded image accepted"""
    max_image_pixels: Annotated[int, Field(ge=1)] = 64_000_000
    """largest decoded image accepted (width x height), checked before decoding"""
    image_formats: frozenset[str] = frozenset({"PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"})
    """input formats accepted (PIL names)"""

    # videos (the CLI and bulk jobs; see docs/video.md)
    video_max_frames: Annotated[int, Field(ge=1)] = 18_000
    """most frames a clip may hold (10 minutes at 30 frames/s)"""
    video_max_seconds: Annotated[float, Field(gt=0)] = 600.0
    """longest clip accepted, seconds"""
    video_max_streams: Annotated[int, Field(ge=1)] = 16
    """most streams (video, audio, subtitles...) a clip may hold"""
    video_max_pixels: Annotated[int, Field(ge=1)] = 3840 * 2160
    """largest frame accepted (width x height), checked before decoding"""
    video_stall_s: Annotated[float, Field(gt=0)] = 300.0
    """a clip whose demuxer or decoder gives no frame for this long (it hangs) fails; the
    worker serves on"""
    temporal: Literal["blend", "none"] = "blend"
    """blend: each output frame is blended with the previous one moved along the input's
    optical flow (no flicker); none: every frame translated on its own"""
    temporal_strength: Annotated[float, Field(ge=0, lt=1)] = 0.6
    """weight of the previous output where it is visible: higher is steadier, lower is closer
    to each frame's own translation"""
    video_container: Literal["mp4", "mov", "mkv"] = "mp4"
    """container clips are written in (H.264 video; audio copied as it is)"""
    video_crf: Annotated[int, Field(ge=0, le=51)] = 18
    """H.264 constant quality of written clips (lower: larger files, closer to the frames)"""

    memory_budget_mb: Annotated[int, Field(ge=1)] | None = Field(
        None,
        description="working memory (MB) the images in flight in one process (the embedded "
        "server, each worker) may hold; a request that does not fit gets 503 + Retry-After. "
        "Default: half the memory available at start (a container's limit counts)",
    )
    large_image_share: Annotated[float, Field(gt=0, le=1)] = 0.75
    """share of the memory budget large (tiled) images may hold together; the rest stays free
    for small requests"""

    # HTTP API (`unpaired serve`)
    host: str = "127.0.0.1"
    """address `unpaired serve` binds (0.0.0.0 in containers)"""
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    """port `unpaired serve` listens on"""
    models: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="models (names or aliases) to load and warm at start; empty: all"
    )
    default_model: str | None = Field(
        None, description="the model (name or alias) the web page opens on; unset: the first"
    )
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (), description="if set, every /v1 request needs `Authorization: Bearer <key>`"
    )
    rate_limit: Annotated[float, Field(gt=0)] | None = Field(
        None, description="requests per second per API key (per client address without keys)"
    )
    rate_limit_burst: Annotated[int, Field(ge=1)] = 20
    """requests a key may send at once above the rate limit"""
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="origins allowed to call the API from a browser ('*' for any)"
    )
    max_request_bytes: Annotated[int, Field(ge=1)] = 200 * 2**20
    """largest request body (bulk-job uploads: max_job_bytes)"""
    max_files: Annotated[int, Field(ge=1)] = 32
    """images per multipart translate request"""
    max_inflight: Annotated[int, Field(ge=1)] = 1024
    """requests the API holds at once before answering 503"""
    max_inflight_bytes: Annotated[int, Field(ge=1)] = 2**30
    """bytes of request bodies the API holds in memory at once before answering 503 (bulk-job
    uploads, which go to disk, are exempt)"""
    request_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    """seconds an interactive request may take before 504"""
    log_format: LogFormat = "json"
    """json (one object per line) or text"""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """debug, info, warning or error"""

    # micro-batching (embedded API and every worker)
    max_wait_ms: Annotated[float, Field(ge=0)] = 5.0
    """milliseconds a request waits for others to share its batch when the engine is idle"""
    max_queue: Annotated[int, Field(ge=1)] = 256
    """interactive requests waiting for the engine before 503"""

    # distributed mode: the API enqueues to Celery workers through this Redis
    broker_url: str | None = Field(None, description="redis://host:port/db; unset: embedded mode")
    queue: str = Field("unpaired.interactive", description="Celery queue of interactive requests")
    worker_concurrency: Annotated[int, Field(ge=1)] | None = Field(
        None, description="requests a worker holds at once (prefetch); default 2 x max_batch"
    )
    worker_name: str | None = Field(
        None,
        description="a worker's name in logs, heartbeats and the X-Worker header; default "
        "unpaired-<pid>@<host> (Kubernetes: the pod's name)",
    )
    visibility_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """seconds before Redis hands a dead worker's unacknowledged messages to another worker"""
    result_expires_s: Annotated[int, Field(ge=1)] = 600
    """seconds results stay in Redis"""
    blob_threshold_bytes: Annotated[int, Field(ge=0)] = 256 * 2**10
    """images larger than this travel as separate Redis blobs, not in the message"""
    heartbeat_s: Annotated[float, Field(gt=0)] = 2.0
    """seconds between worker heartbeats (/readyz counts live workers)"""

    # bulk jobs (`/v1/jobs`): state in Redis (distributed) or SQLite (embedded)
    jobs_dir: str = Field(
        "jobs",
        description="job inputs and outputs: a folder or an fsspec URL; in distributed mode the "
        "API and every worker must reach it (a shared volume, s3://...)",
    )
    jobs_db: Path | None = Field(
        None, description="embedded mode's job database (SQLite); default <jobs_dir>/jobs.db"
    )
    jobs_roots: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="folders or fsspec URL prefixes a job may read from (`source`) and write to "
        "(`destination`); empty: jobs take uploads only",
    )
    bulk_queue: str = Field("unpaired.bulk", description="Celery queue of bulk-job chunks")
    frames_queue: str = Field(
        "unpaired.frames",
        description="Celery queue of the frames a worker running a clip shares out to the "
        "others (each worker consumes it between the interactive and the bulk queue)",
    )
    chunk_size: Annotated[int, Field(ge=1, le=4096)] = 32
    """images per bulk-job chunk (one task)"""
    bulk_max_batch: Annotated[int, Field(ge=1, le=1024)] | None = Field(
        None,
        description="images per engine call for bulk work; default max_batch on a GPU, 1 on a "
        "CPU, where an interactive request waits behind the whole bulk batch",
    )
    bulk_concurrency: Annotated[int, Field(ge=1, le=64)] = Field(
        2,
        description="bulk chunks one process runs at once (the embedded server, each worker); "
        "a worker at the limit takes no bulk message, so its slots stay free for interactive "
        "requests",
    )
    max_job_bytes: Annotated[int, Field(ge=1)] = 4 * 2**30
    """largest bulk-job upload"""
    max_job_items: Annotated[int, Field(ge=1)] = 100_000
    """most images in one bulk job"""
    job_retention_s: Annotated[int, Field(ge=60)] = 7 * 24 * 3600
    """seconds finished jobs, their inputs and outputs are kept"""
    chunk_retries: Annotated[int, Field(ge=0)] = 5
    """retries of a bulk chunk that failed for a passing reason, with backoff"""
    poison_attempts: Annotated[int, Field(ge=1)] = 2
    """times a request or a bulk image may take the process translating it down (a crash,
    the OOM killer) before it is answered or recorded as failed instead of tried again"""

    # testing
    failpoints: tuple[Failpoint, ...] = ()
    """faults armed on purpose for fault tests and the soak, as a JSON list (never in
    production): see service/failpoints.py"""

    @field_validator("models", "api_keys", "cors_origins", "jobs_roots", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return _split_commas(value)

    @model_validator(mode="after")
    def _redelivery_before_deadline(self) -> Settings:
        # A request held by a worker that dies is redelivered after the visibility timeout;
        # it can still be answered only if that comes before the request's deadline.
        if self.visibility_timeout_s >= self.request_timeout_s:
            raise ValueError(
                f"visibility_timeout_s ({self.visibility_timeout_s}) must be below "
                f"request_timeout_s ({self.request_timeout_s}), or requests held by a worker "
                "that dies can never be answered"
            )
        return self

    @property
    def distributed(self) -> bool:
        return self.broker_url is not None

    @property
    def jobs_database(self) -> Path:
        """Embedded mode's SQLite file: beside the job files unless set."""
        return self.jobs_db or Path(self.jobs_dir) / "jobs.db"

    @property
    def prefetch(self) -> int:
        """Requests one worker holds: enough for one batch running and the next one forming."""
        return self.worker_concurrency or 2 * self.max_batch


class SettingsError(ValueError):
    """An UNPAIRED_* environment variable has a value the service cannot use."""


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment with `overrides` (e.g. CLI flags) on top.

    A bad value raises :class:`SettingsError` naming its variable and what is allowed.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = describe_validation_error(
            exc, where=lambda location: f"UNPAIRED_{'_'.join(location).upper() or '*'}"
        )
        raise SettingsError(f"invalid settings: {problems}") from None


@lru_cache
def get_settings() -> Settings:
    """The settings from the environment, read once per process."""
    return load_settings()
