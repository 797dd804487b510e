"""How an engine runs: backend, device, precision, batch and tile sizes, from the settings or
given. Its own home so the engine and its backends both read it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, replace

from service.settings import BackendName, DeviceName, PrecisionName, Settings

__all__ = ["EngineOptions"]


@dataclass(frozen=True, kw_only=True)
class EngineOptions:
    backend: BackendName = "auto"  # auto: onnx
    device: DeviceName = "auto"  # auto: CUDA when the backend can use it, else CPU
    precision: PrecisionName = "auto"  # auto: fp16 on CUDA, fp32 on CPU; int8 only if asked
    max_batch: int = 8  # images (or tiles) per network call
    threads: int | None = None  # CPU threads; None: the CPUs this process may use
    tile: int = 512  # side of the tiles large images are cut into
    tile_overlap: int = 64  # blended overlap between tiles
    max_untiled_pixels: int = 1024 * 1024  # larger images are tiled (bounded memory)
    tile_batch: int | None = None  # tiles per call; None: max_batch on a GPU, 2 on a CPU
    thumbnail_pixels: int | None = None  # tiles' shared statistics come from a thumbnail of
    # at most this many pixels (None: max_untiled_pixels)
    channels_last: bool = True  # torch on CUDA
    compile: bool = False  # torch: torch.compile the generator
    cuda_graphs: bool = False  # torch + compile on CUDA: CUDA graphs (reduce-overhead mode)

    @property
    def thumbnail_budget(self) -> int:
        """Pixels the statistics pass of a tiled image may use (its default is here only)."""
        return self.thumbnail_pixels or self.max_untiled_pixels

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> EngineOptions:
        options = cls(
            backend=settings.backend,
            device=settings.device,
            precision=settings.precision,
            max_batch=settings.max_batch,
            threads=settings.threads,
            tile=settings.tile,
            tile_overlap=settings.tile_overlap,
            max_untiled_pixels=settings.max_untiled_pixels,
            tile_batch=settings.tile_batch,
            thumbnail_pixels=settings.thumbnail_pixels,
        )
        return replace(options, **overrides)  # type: ignore[arg-type]
