"""Fitting any image to a network: padding to its size rules, and overlapping tiles for images
too large for one pass.

Sides are padded (reflect) to what the network accepts and cropped back afterwards
(:func:`pad_to` / :func:`crop_to`); a large image is cut into equal, aligned, overlapping tiles
whose outputs are blended with feathered weights (:class:`RowBlender`) a band of rows at a
time, so memory stays bounded and seams do not show. A thumbnail of the whole image
(:func:`thumbnail`) gives tiles shared instance-norm statistics (see :mod:`models.norm_stats`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = [
    "RowBlender",
    "Tile",
    "blend_weights",
    "crop_to",
    "pad_to",
    "padded_shape",
    "plan_tiles",
    "reflect_indices",
    "thumbnail",
    "thumbnail_shape",
    "tile_batches",
    "translate_tiled",
]


# --- padding --------------------------------------------------------------------------------


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def padded_shape(height: int, width: int, *, multiple: int, min_side: int) -> tuple[int, int]:
    """The smallest size >= ``(height, width)`` a model with these size rules accepts."""
    if height < 1 or width < 1 or multiple < 1 or min_side < 0:
        raise ValueError(
            f"need height, width, multiple >= 1 and min_side >= 0, got "
            f"{height}, {width}, {multiple}, {min_side}"
        )
    floor = _round_up(min_side, multiple)
    return (max(_round_up(height, multiple), floor), max(_round_up(width, multiple), floor))


def pad_to(batch: npt.NDArray[np.float32], height: int, width: int) -> npt.NDArray[np.float32]:
    """Reflect-pad ``(N, C, h, w)`` on the bottom and right to ``(N, C, height, width)``.

    Padding only at the far edges keeps the original at ``[:h, :w]`` (see :func:`crop_to`);
    reflection (repeated when the pad exceeds the side) avoids the hard edge a constant pad
    shows the network. Returns ``batch`` itself when no padding is needed.
    """
    if batch.ndim != 4:
        raise ValueError(f"expected a batch of shape (N, C, H, W), got {batch.shape}")
    h, w = batch.shape[2:]
    if height < h or width < w:
        raise ValueError(f"cannot pad {h}x{w} to the smaller {height}x{width}")
    if (height, width) == (h, w):
        return batch
    return np.pad(batch, ((0, 0), (0, 0), (0, height - h), (0, width - w)), mode="reflect")


def crop_to(batch: npt.NDArray[np.float32], height: int, width: int) -> npt.NDArray[np.float32]:
    """Top-left ``(N, C, height, width)`` view of ``batch``: undoes :func:`pad_to`."""
    if batch.ndim != 4:
        raise ValueError(f"expected a batch of shape (N, C, H, W), got {batch.shape}")
    h, w = batch.shape[2:]
    if not (0 < height <= h and 0 < width <= w):
        raise ValueError(f"cannot crop {h}x{w} to {height}x{width}")
    return batch[:, :, :height, :width]


# --- tiling ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    """One window of a (padded) image: rows ``y:y+height``, columns ``x:x+width``."""

    y: int
    x: int
    height: int
    width: int


def _tile_origins(side: int, tile: int, overlap: int, multiple: int) -> list[int]:
    """Evenly spread origins of windows of ``min(tile, side)`` covering ``side``.

    Works in units of ``multiple`` so every origin stays aligned; consecutive origins differ
    by at most ``tile - overlap`` (``overlap`` already rounded up to the multiple).
    """
    s, t, o = side // multiple, min(tile, side) // multiple, overlap // multiple
    if t == s:
        return [0]
    span = s - t
    gaps = -(-span // (t - o))  # fewest gaps whose steps all stay <= t - o
    return [i * span // gaps * multiple for i in range(gaps + 1)]


def plan_tiles(height: int, width: int, *, tile: int, overlap: int, multiple: int) -> list[Tile]:
    """Equal-size, aligned, overlapping windows covering a ``(height, width)`` image.

    All windows share one shape (``min(tile, side)`` per axis) so they batch together; their
    origins are multiples of ``multiple`` and neighbours overlap by at least ``overlap``.
    Row-major order.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    if not 0 <= overlap < tile:
        raise ValueError(f"need 0 <= overlap < tile, got overlap={overlap}, tile={tile}")
    if tile % multiple:
        raise ValueError(f"tile ({tile}) must be a multiple of {multiple}")
    aligned_overlap = _round_up(overlap, multiple)
    if aligned_overlap >= tile:
        raise ValueError(
            f"overlap {overlap}, rounded up to a multiple of {multiple} ({aligned_overlap}), "
            f"must be smaller than tile ({tile})"
        )
    if height < 1 or width < 1 or height % multiple or width % multiple:
        raise ValueError(f"image {height}x{width} must be non-empty multiples of {multiple}")
    th, tw = min(tile, height), min(tile, width)
    return [
        Tile(y=y, x=x, height=th, width=tw)
        for y in _tile_origins(height, tile, aligned_overlap, multiple)
        for x in _tile_origins(width, tile, aligned_overlap, multiple)
    ]


# Weight of the pixels next to an inner tile edge: float32's resolution at 1, so it vanishes
# beside a neighbour's full weight, yet the weights never sum to zero.
_EDGE_WEIGHT: Final = 2.0**-24


def _ramp(length: int, overlap: int, *, start: bool, end: bool) -> npt.NDArray[np.float64]:
    """1-D feather: ~0 for ``overlap // 4`` pixels at an inner edge, then linear up to 1.

    A network sees past a tile's edge into padding, so the pixels nearest an inner edge are
    wrong; giving them (almost) no weight makes tiling exact for operators whose reach is at
    most ``overlap // 4``, and the ramp hides the seam for wider ones. Two neighbours that
    overlap by exactly ``overlap`` get weights that sum to 1.
    """
    weights = np.ones(length)
    if overlap == 0:
        return weights
    margin = overlap // 4
    distance = np.arange(length)
    rising = np.clip((distance - margin + 1) / (overlap - 2 * margin + 1), _EDGE_WEIGHT, 1.0)
    if start:
        weights = np.minimum(weights, rising)
    if end:
        weights = np.minimum(weights, rising[::-1])
    return weights


def blend_weights(tile: Tile, height: int, width: int, *, overlap: int) -> npt.NDArray[np.float32]:
    """float32 ``(tile.height, tile.width)`` feather weights, > 0, ramped on inner sides only.

    Sides on the image border keep full weight: no other tile covers those pixels.
    """
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    fits_rows = tile.y >= 0 and tile.height > 0 and tile.y + tile.height <= height
    fits_cols = tile.x >= 0 and tile.width > 0 and tile.x + tile.width <= width
    if not (fits_rows and fits_cols):
        raise ValueError(f"{tile} does not fit a {height}x{width} image")
    rows = _ramp(tile.height, overlap, start=tile.y > 0, end=tile.y + tile.height < height)
    cols = _ramp(tile.width, overlap, start=tile.x > 0, end=tile.x + tile.width < width)
    return np.outer(rows, cols).astype(np.float32)


def reflect_indices(length: int, padded: int) -> npt.NDArray[np.intp]:
    """For each position of an axis reflect-padded at its end from ``length`` to ``padded``,
    the source position (numpy's ``reflect`` mode, so it matches :func:`pad_to`).

    Lets a tile of the padded image be cut straight from the unpadded uint8 pixels, without a
    padded (or float) copy of the whole image.
    """
    if not 0 < length <= padded:
        raise ValueError(f"need 0 < length <= padded, got {length}, {padded}")
    return np.pad(np.arange(length), (0, padded - length), mode="reflect")


class RowBlender:
    """Blends tile outputs into an image one band of rows at a time.

    Tiles arrive in row-major order (:func:`plan_tiles`). Rows above the top of every tile
    still to come are final (those above each new tile, and all of them at the end):
    :meth:`flush` divides them by their weights and hands them to
    ``emit(top, rows)`` (float32 ``(C, n, width)`` for rows ``top:top + n``, a few dozen rows
    at a time), so only the rows some pending tile still covers stay as float sums: one buffer
    of two tile heights, whatever the image's height, allocated once.
    """

    #: Rows divided and emitted at a time: bounds the temporaries of the conversion.
    EMIT_ROWS: Final = 64

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        *,
        overlap: int,
        emit: Callable[[int, npt.NDArray[np.float32]], None],
        tile_height: int | None = None,
    ) -> None:
        self.channels, self.height, self.width = channels, height, width
        self.overlap = overlap
        self._emit = emit
        self._top = 0  # first row not yet emitted; row _top is row 0 of the buffers
        self._rows = 0  # rows of the buffers in use
        capacity = min(height, 2 * tile_height) if tile_height else height
        self._sums = np.zeros((channels, capacity, width), dtype=np.float32)
        self._weights = np.zeros((capacity, width), dtype=np.float32)

    @property
    def band_rows(self) -> int:
        """Rows held as float sums now."""
        return self._rows

    def add(self, tile: Tile, output: npt.NDArray[np.float32]) -> None:
        """Blend one tile's float32 ``(C, tile.height, tile.width)`` output in."""
        if tile.y < self._top:
            raise ValueError(f"{tile} starts above row {self._top}, which was already emitted")
        self.flush(tile.y)  # rows above a tile are final: every later tile starts lower
        bottom = tile.y + tile.height - self._top
        if bottom > self._weights.shape[0]:
            raise ValueError(
                f"{tile} reaches {bottom} rows below row {self._top}; the band holds "
                f"{self._weights.shape[0]} (tiles must arrive row by row)"
            )
        self._rows = max(self._rows, bottom)
        weights = blend_weights(tile, self.height, self.width, overlap=self.overlap)
        rows = slice(tile.y - self._top, bottom)
        cols = slice(tile.x, tile.x + tile.width)
        self._sums[:, rows, cols] += output * weights
        self._weights[rows, cols] += weights

    def flush(self, below: int) -> None:
        """Emit rows ``_top:below``: no tile still to come covers them."""
        done = min(below - self._top, self._rows)
        if done <= 0:
            return
        for start in range(0, done, self.EMIT_ROWS):
            stop = min(done, start + self.EMIT_ROWS)
            self._emit(self._top + start, self._sums[:, start:stop] / self._weights[start:stop])
        left = self._rows - done  # rows still covered by pending tiles move to the front
        self._sums[:, :left] = self._sums[:, done : self._rows]
        self._weights[:left] = self._weights[done : self._rows]
        self._sums[:, left : self._rows] = 0
        self._weights[left : self._rows] = 0
        self._top += done
        self._rows = left


def tile_batches(tiles: list[Tile], max_batch: int) -> list[list[Tile]]:
    """Row-major runs of at most ``max_batch`` tiles: one network call each."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    return [tiles[start : start + max_batch] for start in range(0, len(tiles), max_batch)]


def translate_tiled(
    image: npt.NDArray[np.float32],
    run: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
    *,
    tile: int,
    overlap: int,
    multiple: int,
    max_batch: int,
) -> npt.NDArray[np.float32]:
    """Run ``run`` over overlapping tiles of a ``(C, H, W)`` image and blend them seamlessly.

    ``run`` maps a float32 ``(N, C, th, tw)`` batch to the same shape. The engine streams its
    tiles from uint8 pixels instead (:mod:`service.inference.tiled_translation`); this is the
    same blending for an image already in float.
    """
    if image.ndim != 3:
        raise ValueError(f"expected an image of shape (C, H, W), got {image.shape}")
    channels, height, width = image.shape
    tiles = plan_tiles(height, width, tile=tile, overlap=overlap, multiple=multiple)
    result = np.empty((channels, height, width), dtype=np.float32)

    def emit(top: int, band: npt.NDArray[np.float32]) -> None:
        result[:, top : top + band.shape[1]] = band

    blender = RowBlender(
        channels, height, width, overlap=overlap, emit=emit, tile_height=tiles[0].height
    )
    for chunk in tile_batches(tiles, max_batch):
        batch = np.stack(
            [image[:, t.y : t.y + t.height, t.x : t.x + t.width] for t in chunk]
        ).astype(np.float32, copy=False)  # (N, C, th, tw)
        outputs = np.asarray(run(batch), dtype=np.float32)
        if outputs.shape != batch.shape:
            raise ValueError(
                f"run must return its input's shape {batch.shape}, got {outputs.shape}"
            )
        for t, out in zip(chunk, outputs, strict=True):
            blender.add(t, out)  # emits the rows above each tile as it comes
    blender.flush(height)
    return result


def thumbnail_shape(
    height: int, width: int, *, max_pixels: int, multiple: int, min_side: int
) -> tuple[int, int]:
    """The largest (h, w) of the image's aspect with h * w <= max_pixels, sides multiples of
    `multiple` and >= min_side: the whole-image view tiles take their statistics from."""
    scale = min(1.0, (max_pixels / (height * width)) ** 0.5)
    floor = _round_up(min_side, multiple)

    def side(length: int) -> int:
        return max(floor, int(length * scale) // multiple * multiple)

    return side(height), side(width)


def thumbnail(rgb: npt.NDArray[np.uint8], height: int, width: int) -> npt.NDArray[np.uint8]:
    """uint8 (H, W, 3) resized to (height, width) with an antialiasing (Lanczos) filter."""
    resized = Image.fromarray(rgb).resize((width, height), Image.Resampling.LANCZOS)
    return np.ascontiguousarray(np.asarray(resized))
