"""The one inference path: run a batch of images through one direction of a stored model.

The CLI, the API's batcher, the Celery workers and the benchmarks all call :class:`Engine`.
Two backends (:mod:`service.inference.backends`) run the network on a float32
``(N, 3, H, W)`` batch in [-1, 1]:

- ``onnx``: onnxruntime with the best installed provider (TensorRT → CUDA → CPU), IO binding
  on CUDA, thread count and graph optimisation set explicitly;
- ``torch``: the PyTorch generator rebuilt from the manifest and its safetensors weights, fp16
  and channels_last on CUDA, optionally compiled (with CUDA graphs), for GPUs where
  onnxruntime-gpu is not available.

:meth:`Engine.translate` wraps either with the shared pre/post-processing of
:mod:`service.inference.image_io`: sides padded (reflect) to what the network accepts and
cropped back, large images translated in overlapping tiles, images grouped by padded shape into
batches, alpha reattached untouched.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Final

import numpy as np

from models.manifest import (
    ModelManifest,
)
from service.errors import EngineError
from service.inference import admission, image_io, tiling
from service.inference.backends import make_runner
from service.inference.engine_options import EngineOptions
from service.inference.image_io import DecodedImage
from service.inference.tiled_translation import TiledTranslation, TileGeometry
from service.store.model_store import StoredModel

__all__ = ["Engine", "EngineOptions"]

#: Tiles per network call on a CPU unless set: onnxruntime gains nothing from larger batches
#: there, and a small request that arrives meanwhile waits for one call.
_CPU_TILE_BATCH: Final = 2

#: A call on more pixels than this (a 512x512 image) leaves the runtime's cache to be given back
#: once the engine is idle: what small images need stays cached.
_ARENA_KEEP_PIXELS: Final = 2**18

#: Side of the small runs that warm an engine and shrink its runtime's arena.
_SMALL_SIDE: Final = 64

#: Full-resolution channels assumed for an imported graph (no architecture): the paper's ngf.
_UNKNOWN_WIDTH: Final = 64


class Engine:
    """One direction of one model, ready to translate batches of images."""

    def __init__(
        self, model: StoredModel, direction: str, options: EngineOptions = EngineOptions()
    ) -> None:
        model.direction(direction)  # a clear error for a direction the model lacks
        if options.max_batch < 1:
            raise EngineError("max_batch must be at least 1")
        rules = model.manifest.input
        if options.tile % rules.multiple or options.tile < rules.min_side:
            raise EngineError(
                f"tile {options.tile} must be a multiple of {rules.multiple} and "
                f">= {rules.min_side} for model {model.manifest.name!r}"
            )
        self.model = model
        self.direction = direction
        self.options = options
        self.runner = make_runner(model, direction, options)
        self._large_cached = False  # a call since the last release_memory left a large cache

    @property
    def manifest(self) -> ModelManifest:
        return self.model.manifest

    def describe(self) -> dict[str, object]:
        return {
            "model": self.manifest.name,
            "direction": self.direction,
            "backend": self.runner.backend,
            "device": self.runner.device,
            "precision": self.runner.precision,
        }

    # --- network level ------------------------------------------------------------------

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The network on a float32 (N, 3, H, W) batch whose sides it accepts, in chunks."""
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise EngineError(f"expected a (N, 3, H, W) batch, got shape {batch.shape}")
        rules = self.manifest.input
        height, width = batch.shape[2:]
        if height % rules.multiple or width % rules.multiple or min(height, width) < rules.min_side:
            raise EngineError(
                f"sides must be multiples of {rules.multiple} and >= {rules.min_side}, "
                f"got {height}x{width}; use translate() to pad automatically"
            )
        size = self.options.max_batch
        chunks = [self.runner(batch[i : i + size]) for i in range(0, len(batch), size)]
        return np.concatenate(chunks)

    # --- image level --------------------------------------------------------------------

    def translate(self, images: Sequence[DecodedImage]) -> list[DecodedImage]:
        """Translate images of any size; each output has its input's size and alpha."""
        rgb: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            shape = self.batch_shape(image.height, image.width)
            if shape is None:
                rgb[index] = self.start_tiled(image).run_to_end().rgb
            else:
                groups[shape].append(index)
        size = self.options.max_batch
        largest_call = 0  # pixels
        for (height, width), members in groups.items():
            for start in range(0, len(members), size):  # one batch in memory at a time
                chunk = members[start : start + size]
                largest_call = max(largest_call, len(chunk) * height * width)
                batch = np.concatenate(
                    [
                        tiling.pad_to(image_io.to_network([images[i].rgb]), height, width)
                        for i in chunk
                    ]
                )
                for i, out in zip(chunk, self.runner(batch), strict=True):
                    h, w = images[i].rgb.shape[:2]
                    rgb[i] = image_io.from_network(tiling.crop_to(out[None], h, w))[0]
        outputs = []
        for out, image in zip(rgb, images, strict=True):
            assert out is not None
            outputs.append(DecodedImage(rgb=np.ascontiguousarray(out), alpha=image.alpha))
        if largest_call > _ARENA_KEEP_PIXELS:
            self._large_cached = True  # given back when the engine goes idle
        return outputs

    def release_if_large(self) -> bool:
        """After large calls, give back what the runtime cached for them (the batcher calls
        this when it goes idle: under steady load the cache is reused, idle it is returned)."""
        if not self._large_cached:
            return False
        self._large_cached = False
        self.release_memory()
        return True

    def release_memory(self) -> None:
        """Give back what the runtime cached for a large call (see Runner.release_memory)."""
        self.runner.release_memory(np.zeros((1, 3, *self.small_shape), np.float32))

    @property
    def small_shape(self) -> tuple[int, int]:
        """A small (height, width) the network accepts: warm-up and arena-shrinking runs."""
        rules = self.manifest.input
        return tiling.padded_shape(
            _SMALL_SIDE, _SMALL_SIDE, multiple=rules.multiple, min_side=rules.min_side
        )

    def translate_each(self, images: Sequence[DecodedImage]) -> list[DecodedImage | Exception]:
        """:meth:`translate`, but an image that fails costs only its own result.

        The batch runs in one call; if that raises, each image is retried alone so the error
        lands on the image that caused it. Every caller that serves many people at once (the
        CLI, the micro-batcher, the workers) goes through here.
        """
        try:
            return list(self.translate(images))
        except Exception:  # narrowed to the failing image below
            results: list[DecodedImage | Exception] = []
            for image in images:
                try:
                    results.append(self.translate([image])[0])
                except Exception as exc:
                    results.append(exc)
            return results

    def working_bytes(self, height: int, width: int) -> int:
        """Peak memory translating one image of this size costs (see admission)."""
        architecture = self.manifest.architecture
        tiled = self.batch_shape(height, width) is None
        return admission.working_bytes(
            height,
            width,
            padded=self._padded(height, width),
            tile=self.options.tile if tiled else None,
            tile_batch=self.tile_batch,
            widest_channels=architecture.ngf if architecture else _UNKNOWN_WIDTH,
            stats_pixels=self._stats_pixels(height, width) if tiled else 0,
        )

    def batch_shape(self, height: int, width: int) -> tuple[int, int] | None:
        """The padded shape an image of this size is batched at; None when it is tiled alone.

        Images with the same batch shape run in one network call: it is the grouping key of
        the micro-batcher.
        """
        if height * width > self.options.max_untiled_pixels:
            return None
        return self._padded(height, width)

    def _padded(self, height: int, width: int) -> tuple[int, int]:
        rules = self.manifest.input
        return tiling.padded_shape(height, width, multiple=rules.multiple, min_side=rules.min_side)

    def start_tiled(self, image: DecodedImage) -> TiledTranslation:
        """A large image's translation as steps (a statistics pass, then tile batches), for a
        scheduler that interleaves other work between them or drops the rest; with instance
        norm every tile is normalised with the statistics of a thumbnail of the whole image, so
        tiles agree in tone (see :mod:`models.norm_stats`)."""
        height, width = image.size
        padded = self._padded(height, width)
        return TiledTranslation(
            image,
            self.runner,
            padded=padded,
            geometry=self.tile_geometry,
            thumbnail=self._thumbnail(image.rgb, padded) if self.runner.shares_stats else None,
            on_finish=self.release_memory,
        )

    @property
    def tile_geometry(self) -> TileGeometry:
        return TileGeometry(
            tile=self.options.tile,
            overlap=self.options.tile_overlap,
            multiple=self.manifest.input.multiple,
            batch=self.tile_batch,
        )

    @property
    def tile_batch(self) -> int:
        """Tiles per network call: ``max_batch`` on a GPU; on a CPU, where batching gains
        nothing and a request waiting behind a huge image waits for one call, ``tile_batch``."""
        if self.options.tile_batch is not None:
            return min(self.options.tile_batch, self.options.max_batch)
        return self.options.max_batch if self.runner.device != "cpu" else _CPU_TILE_BATCH

    def _thumbnail_shape(self, height: int, width: int) -> tuple[int, int]:
        """The statistics pass's input: the whole padded image when it fits the thumbnail
        budget (exact: the statistics an untiled pass would use), else a downscaled view."""
        budget = self.options.thumbnail_budget
        padded = self._padded(height, width)
        if padded[0] * padded[1] <= budget:
            return padded
        rules = self.manifest.input
        return tiling.thumbnail_shape(
            height, width, max_pixels=budget, multiple=rules.multiple, min_side=rules.min_side
        )

    def _stats_pixels(self, height: int, width: int) -> int:
        """Pixels of the statistics pass a tiled image of this size costs (0: none)."""
        if not self.runner.shares_stats:
            return 0
        rows, cols = self._thumbnail_shape(height, width)
        return rows * cols

    def _thumbnail(self, rgb: np.ndarray, padded: tuple[int, int]) -> np.ndarray:
        """uint8: the whole (padded) image, downscaled to the thumbnail budget when larger."""
        height, width = self._thumbnail_shape(*rgb.shape[:2])
        if (height, width) == padded:
            rows = tiling.reflect_indices(rgb.shape[0], padded[0])
            cols = tiling.reflect_indices(rgb.shape[1], padded[1])
            return np.ascontiguousarray(rgb[rows[:, None], cols[None, :]])
        return tiling.thumbnail(rgb, height, width)
