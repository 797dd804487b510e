"""A large image's translation as a sequence of short steps.

One step is the thumbnail pass that gives every tile the same normalisation statistics (for
networks with instance norm), or one batch of tiles. Whoever runs the steps decides what
happens between them: the micro-batcher serves other requests there and drops the remaining
steps when nobody waits for the answer any more (a deadline passed, a client hung up, a bulk
job was cancelled), so a huge image neither monopolises the engine nor keeps it busy for a
request that is gone.

Memory is bounded by the image, not by a multiple of it in float: tiles are cut from the uint8
pixels (reflect padding by index, no padded copy), translated a batch at a time and blended
a band of rows at a time (:class:`~service.inference.tiling.RowBlender`) straight into a uint8
output. Beyond the input and output images it holds the float sums of about two tile rows
(``16 * 2 * tile * width`` bytes) and one batch of tiles (the formula is
:func:`service.inference.admission.working_bytes`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from service import failpoints
from service.inference import image_io, tiling
from service.inference.image_io import DecodedImage

if TYPE_CHECKING:
    from service.inference.backends import Runner

__all__ = ["TileGeometry", "TiledTranslation"]

_CHANNELS: Final = 3


@dataclass(frozen=True, kw_only=True)
class TileGeometry:
    """How an engine tiles: tile side and overlap, the model's side multiple, tiles per call."""

    tile: int
    overlap: int
    multiple: int
    batch: int


class TiledTranslation:
    """Translate one large image step by step; :meth:`step` until :attr:`done`, then
    :meth:`result`. Not thread-safe: one runner (the batcher's dispatcher, or the caller)."""

    def __init__(
        self,
        image: DecodedImage,
        runner: Runner,
        *,
        padded: tuple[int, int],
        geometry: TileGeometry,
        thumbnail: npt.NDArray[np.uint8] | None,
        on_finish: Callable[[], None] | None = None,
    ) -> None:
        self._rgb: npt.NDArray[np.uint8] | None = image.rgb
        self._alpha = image.alpha
        self._runner = runner
        self.height, self.width = image.size
        padded_h, padded_w = padded
        self._rows = tiling.reflect_indices(self.height, padded_h)
        self._cols = tiling.reflect_indices(self.width, padded_w)
        tiles = tiling.plan_tiles(
            padded_h,
            padded_w,
            tile=geometry.tile,
            overlap=geometry.overlap,
            multiple=geometry.multiple,
        )
        self._batches = tiling.tile_batches(tiles, geometry.batch)
        self._next = 0
        self._thumbnail = thumbnail if runner.shares_stats else None
        self._stats: np.ndarray | None = None
        self._output: npt.NDArray[np.uint8] | None = np.empty(
            (self.height, self.width, _CHANNELS), dtype=np.uint8
        )
        self._blender = tiling.RowBlender(
            _CHANNELS,
            padded_h,
            padded_w,
            overlap=geometry.overlap,
            emit=self._emit,
            tile_height=tiles[0].height,
        )
        self.tiles_per_step = geometry.batch
        self._on_finish = on_finish  # after the last step (the engine gives memory back)

    @property
    def done(self) -> bool:
        return self._next == len(self._batches)

    @property
    def steps_left(self) -> int:
        return len(self._batches) - self._next + (self._thumbnail is not None)

    def step(self) -> None:
        """Run the next unit of work: the statistics pass first (if any), then a tile batch."""
        if self.done:
            raise RuntimeError("the translation is already finished")
        failpoints.hit("step", f"{self.height}x{self.width}")
        if self._thumbnail is not None:
            small = image_io.to_network([self._thumbnail])
            _, self._stats = self._runner.run_shared(small, None)  # (1, S)
            self._thumbnail = None
            return
        chunk = self._batches[self._next]
        batch = image_io.to_network([self._cut(t) for t in chunk])  # (N, 3, th, tw)
        if self._stats is None:
            outputs = self._runner(batch)
        else:
            stats = np.repeat(self._stats, len(batch), axis=0)
            outputs = self._runner.run_shared(batch, stats)[0]
        outputs = np.asarray(outputs, dtype=np.float32)
        if outputs.shape != batch.shape:
            raise ValueError(f"the network returned {outputs.shape} for tiles of {batch.shape}")
        for t, out in zip(chunk, outputs, strict=True):
            self._blender.add(t, out)
        self._next += 1  # rows above each tile were flushed as it was added (RowBlender.add)
        if self.done:
            self._blender.flush(self._blender.height)
            self._rgb = None  # the input is not needed any more: free it before encoding
            if self._on_finish is not None:
                self._on_finish()

    def result(self) -> DecodedImage:
        if not self.done or self._output is None:
            raise RuntimeError("the translation has steps left")
        output, self._output = self._output, None
        return DecodedImage(rgb=output, alpha=self._alpha)

    def close(self) -> None:
        """Dropped before its end (nobody waits for it): free the images and the band now,
        and let the engine give back the runtime's working memory."""
        finished = self.done
        self._rgb = self._output = self._thumbnail = None
        self._blender = tiling.RowBlender(_CHANNELS, 0, 0, overlap=0, emit=self._emit)  # freed
        self._batches = self._batches[: self._next]  # no steps left
        if not finished and self._on_finish is not None:
            self._on_finish()

    def run_to_end(self) -> DecodedImage:
        while not self.done:
            self.step()
        return self.result()

    def _cut(self, t: tiling.Tile) -> npt.NDArray[np.uint8]:
        """The tile's pixels of the padded image, taken from the unpadded uint8 image."""
        assert self._rgb is not None
        if t.y + t.height <= self.height and t.x + t.width <= self.width:
            return self._rgb[t.y : t.y + t.height, t.x : t.x + t.width]
        rows = self._rows[t.y : t.y + t.height]
        cols = self._cols[t.x : t.x + t.width]
        return self._rgb[rows[:, None], cols[None, :]]

    def _emit(self, top: int, band: npt.NDArray[np.float32]) -> None:
        """Finished rows of the padded image into the uint8 output, cropped to the image."""
        assert self._output is not None
        bottom = min(top + band.shape[1], self.height)
        if bottom > top:
            rows = band[None, :, : bottom - top, : self.width]
            self._output[top:bottom] = image_io.from_network(rows)[0]
