"""Service settings from the environment (prefix ``UNPAIRED_``), validated once at start.

Use :func:`get_settings` rather than a module-level instance so tests and the CLI can build
their own (``Settings(store=...)``) without touching the environment.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

BackendName = Literal["auto", "onnx", "torch"]
DeviceName = Literal["auto", "cpu", "cuda"]
PrecisionName = Literal["auto", "fp32", "fp16", "int8"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="UNPAIRED_", frozen=True, extra="forbid")

    store: str = Field("model-store", description="model store: a folder or an fsspec URL")
    cache_dir: Path = Field(
        Path.home() / ".cache" / "unpaired" / "models",
        description="local copies of models from remote stores",
    )

    # engine
    backend: BackendName = "auto"
    device: DeviceName = "auto"
    precision: PrecisionName = Field(
        "auto", description="auto: fp16 on CUDA, fp32 on CPU; int8 (CPU) if exported with it"
    )
    max_batch: Annotated[int, Field(ge=1, le=1024)] = 8
    threads: Annotated[int, Field(ge=1)] | None = Field(
        None, description="CPU threads per engine; default: the CPUs this process may use"
    )
    tile: Annotated[int, Field(ge=64)] = 512
    tile_overlap: Annotated[int, Field(ge=0)] = 64
    max_untiled_pixels: Annotated[int, Field(ge=1)] = 1024 * 1024
    thumbnail_pixels: Annotated[int, Field(ge=1)] | None = None

    # input limits
    max_image_bytes: Annotated[int, Field(ge=1)] = 50 * 2**20
    max_image_pixels: Annotated[int, Field(ge=1)] = 64_000_000
    image_formats: frozenset[str] = frozenset({"PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"})


class SettingsError(ValueError):
    """An UNPAIRED_* environment variable has a value the service cannot use."""


@lru_cache
def get_settings() -> Settings:
    """The settings from the environment; a bad value names its variable and what is allowed."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"UNPAIRED_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None
