"""Pre- and post-processing shared by every inference caller (CLI, API, workers, benchmarks).

Untrusted bytes become a :class:`DecodedImage` (RGB plus optional alpha, EXIF-oriented) only
through :func:`decode_image`, which refuses oversized, unknown and broken files with an
:class:`ImageRejected` before spending memory on them. Pixels cross into and out of a network
only through :func:`to_network` / :func:`from_network`, which delegate the value mapping to
:mod:`models.imaging` so training and serving can never disagree. Large images are padded to
the size rules of a model (:func:`pad_to`) or cut into overlapping, feathered tiles
(:func:`translate_tiled`) so memory stays bounded. :func:`encode_image` is byte-deterministic,
so the CLI, the API and a bulk job return identical files for the same input.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, UnidentifiedImageError

# _DECODE_ERRORS is private to models.imaging, but it is the one list of what PIL raises on
# hostile input; importing it keeps the two decoders catching exactly the same things.
from models.imaging import (
    _DECODE_ERRORS,
    UnsupportedImageError,
    array_to_tensor,
    split_alpha,
    tensor_to_array,
    to_rgb,
)

__all__ = [
    "MEDIA_TYPES",
    "CorruptImage",
    "DecodedImage",
    "ImageLimits",
    "ImageRejected",
    "ImageTooLarge",
    "Tile",
    "UnsupportedFormat",
    "UnsupportedMode",
    "blend_weights",
    "crop_to",
    "decode_image",
    "encode_image",
    "from_network",
    "output_format",
    "pad_to",
    "padded_shape",
    "plan_tiles",
    "read_image_file",
    "thumbnail",
    "thumbnail_shape",
    "to_network",
    "translate_tiled",
]


# --- errors ---------------------------------------------------------------------------------


class ImageRejected(ValueError):
    """An input the service will not process; ``str(exc)`` is safe to show the user."""

    code: ClassVar[str] = "rejected"


class ImageTooLarge(ImageRejected):
    """More bytes or pixels than :class:`ImageLimits` allows."""

    code: ClassVar[str] = "too_large"


class UnsupportedFormat(ImageRejected):
    """A real image, but in a format outside the allow-list."""

    code: ClassVar[str] = "unsupported_format"


class CorruptImage(ImageRejected):
    """Not an image, or a damaged / truncated one."""

    code: ClassVar[str] = "corrupt"


class UnsupportedMode(CorruptImage):
    """The pixels decoded, but their mode has no defined RGB meaning (see models.imaging)."""

    code: ClassVar[str] = "bad_mode"


# --- limits and the decoded image -----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ImageLimits:
    """What :func:`decode_image` accepts; checked before the expensive (decoding) work."""

    max_bytes: int = 50 * 2**20
    #: Checked on the size the header declares, before any pixel is decoded (8000x8000 default).
    #: PIL's own guard (``Image.MAX_IMAGE_PIXELS``, ~89 Mpx) also refuses; raise both to go higher.
    max_pixels: int = 64_000_000
    #: PIL format names; only these decoders are ever run on the data.
    formats: frozenset[str] = frozenset({"PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"})

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_pixels <= 0:
            raise ValueError(
                f"max_bytes and max_pixels must be positive, got {self.max_bytes}, "
                f"{self.max_pixels}"
            )
        formats = frozenset(f.upper() for f in self.formats)
        Image.init()  # registers every plugin, so Image.OPEN lists all readable formats
        unknown = formats - Image.OPEN.keys()
        if not formats or unknown:
            raise ValueError(
                f"formats must be a non-empty set of PIL format names; unknown: "
                f"{sorted(unknown)}; known: {sorted(Image.OPEN)}"
            )
        object.__setattr__(self, "formats", formats)


_DEFAULT_LIMITS: Final = ImageLimits()


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """An upload as the network sees it (``rgb``) plus what it does not see (``alpha``).

    Alpha is kept apart so a translated RGB image can get the original transparency back.
    """

    rgb: npt.NDArray[np.uint8]  # (H, W, 3), C-contiguous, EXIF orientation applied
    alpha: npt.NDArray[np.uint8] | None = None  # (H, W), or None when fully opaque by format

    def __post_init__(self) -> None:
        rgb = self.rgb
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
        object.__setattr__(self, "rgb", np.ascontiguousarray(rgb))
        if self.alpha is not None:
            alpha = self.alpha
            if alpha.dtype != np.uint8 or alpha.shape != rgb.shape[:2]:
                raise ValueError(
                    f"alpha must be uint8 {rgb.shape[:2]}, got {alpha.dtype} {alpha.shape}"
                )
            object.__setattr__(self, "alpha", np.ascontiguousarray(alpha))

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``, numpy order (PIL's ``Image.size`` is ``(width, height)``)."""
        return (self.height, self.width)


# --- decoding -------------------------------------------------------------------------------

# warnings.catch_warnings swaps process-wide state and is not thread-safe; API threads decode
# concurrently, so the (fast, header-only) open that needs it is serialised.
_WARNINGS_LOCK: Final = threading.Lock()
_BOMB_ERRORS: Final = (Image.DecompressionBombError, Image.DecompressionBombWarning)


def _open_quietly(stream: io.BytesIO, formats: list[str] | None) -> Image.Image:
    """``Image.open`` with PIL's bomb warning raised as an error and its other notes silenced."""
    stream.seek(0)
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(stream, formats=formats)


def _sniff_format(stream: io.BytesIO) -> str | None:
    """The real format of data the allowed decoders refused, only to name it in the error."""
    try:
        with _open_quietly(stream, None) as img:
            return img.format
    except (*_DECODE_ERRORS, Image.DecompressionBombWarning):
        return None


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def decode_image(
    data: bytes, *, limits: ImageLimits = _DEFAULT_LIMITS, name: str = "<upload>"
) -> DecodedImage:
    """Validate and decode untrusted image bytes; every refusal is an :class:`ImageRejected`.

    Order matters for safety: byte size, then the format allow-list, then the pixel count the
    header declares, and only then the (memory-hungry) decode. Animated images give their
    first frame.
    """
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(
            f"{name}: the file is {len(data)} bytes; the limit is {limits.max_bytes} bytes"
        )
    if not data:
        raise CorruptImage(f"{name}: the file is empty")
    allowed = sorted(limits.formats)
    stream = io.BytesIO(data)
    try:
        img = _open_quietly(stream, allowed)
    except UnidentifiedImageError as exc:
        detected = _sniff_format(stream)
        if detected is not None and detected not in limits.formats:
            raise UnsupportedFormat(
                f"{name}: {detected} images are not accepted; allowed formats: {', '.join(allowed)}"
            ) from exc
        raise CorruptImage(
            f"{name}: not a readable image (allowed formats: {', '.join(allowed)})"
        ) from exc
    except _BOMB_ERRORS as exc:
        raise ImageTooLarge(f"{name}: the image is too large to decode safely: {exc}") from exc
    except _DECODE_ERRORS as exc:
        raise CorruptImage(f"{name}: not a readable image ({_reason(exc)})") from exc

    with img:
        width, height = img.size
        if width * height > limits.max_pixels:
            raise ImageTooLarge(
                f"{name}: the image is {width}x{height} = {width * height} pixels; "
                f"the limit is {limits.max_pixels} pixels"
            )
        if width == 0 or height == 0:
            raise CorruptImage(f"{name}: the image is {width}x{height} and has no pixels")
        try:
            img.load()  # truncated data fails here (LOAD_TRUNCATED_IMAGES stays off)
            colour, alpha = split_alpha(img)
        except UnsupportedImageError as exc:
            raise UnsupportedMode(f"{name}: {exc}") from exc
        except _BOMB_ERRORS as exc:
            raise ImageTooLarge(f"{name}: the image is too large to decode safely: {exc}") from exc
        except _DECODE_ERRORS as exc:
            raise CorruptImage(
                f"{name}: the image data is damaged or truncated ({_reason(exc)})"
            ) from exc
    return DecodedImage(
        rgb=np.array(colour, dtype=np.uint8),
        alpha=None if alpha is None else np.array(alpha, dtype=np.uint8),
    )


def read_image_file(
    path: str | os.PathLike[str], *, limits: ImageLimits = _DEFAULT_LIMITS
) -> DecodedImage:
    """:func:`decode_image` for a file, refusing an oversized one from ``stat`` before reading.

    A missing or unreadable file raises the usual :class:`OSError`: that is the caller's
    mistake, not a property of an image.
    """
    name = os.fspath(path)
    size = os.stat(path).st_size
    if size > limits.max_bytes:
        raise ImageTooLarge(
            f"{name}: the file is {size} bytes; the limit is {limits.max_bytes} bytes"
        )
    with open(path, "rb") as f:
        data = f.read(limits.max_bytes + 1)  # a file that grew since stat still gets refused
    return decode_image(data, limits=limits, name=name)


# --- encoding -------------------------------------------------------------------------------

MEDIA_TYPES: Final[dict[str, str]] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
}
_FORMAT_ALIASES: Final = {"jpg": "jpeg"}

# Fixed encoder settings: the same pixels must always give the same bytes.
_PNG_COMPRESS_LEVEL: Final = 6
_JPEG_SUBSAMPLING: Final = 0  # 4:4:4; translated colours are the point, keep them sharp
_WEBP_METHOD: Final = 4


def output_format(format: str) -> str:
    """The canonical output format name (png, jpeg, webp) for a user's spelling of it."""
    key = format.lower()
    key = _FORMAT_ALIASES.get(key, key)
    if key not in MEDIA_TYPES:
        raise ValueError(
            f"cannot encode format {format!r}; choose one of {', '.join(MEDIA_TYPES)} (or jpg)"
        )
    return key


def _to_pil(image: DecodedImage) -> Image.Image:
    if image.alpha is None:
        return Image.fromarray(image.rgb)
    return Image.fromarray(np.dstack((image.rgb, image.alpha)))  # (H, W, 4) -> RGBA


def encode_image(image: DecodedImage, *, format: str = "png", quality: int = 95) -> bytes:
    """Encode to PNG, JPEG or WebP with fixed settings and no metadata (byte-deterministic).

    PNG and WebP keep the alpha channel; JPEG has none, so transparent images are composited
    over white by :func:`models.imaging.to_rgb`. ``quality`` (1-100) is ignored for PNG;
    WebP at 100 is lossless.
    """
    key = output_format(format)
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in [1, 100], got {quality}")
    pil = _to_pil(image)
    out = io.BytesIO()
    if key == "png":
        pil.save(out, "PNG", compress_level=_PNG_COMPRESS_LEVEL, optimize=False)
    elif key == "jpeg":
        flat = to_rgb(pil) if image.alpha is not None else pil
        flat.save(
            out,
            "JPEG",
            quality=quality,
            subsampling=_JPEG_SUBSAMPLING,
            optimize=False,
            progressive=False,
        )
    else:
        pil.save(
            out,
            "WEBP",
            quality=quality,
            method=_WEBP_METHOD,
            lossless=quality == 100,
            exact=True,  # keep colour under transparent pixels, as PNG does
        )
    return out.getvalue()


# --- network tensors ------------------------------------------------------------------------


def to_network(images: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
    """Same-shape uint8 ``(H, W, 3)`` images -> float32 ``(N, 3, H, W)`` in [-1, 1]."""
    if not images:
        raise ValueError("to_network needs at least one image")
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise ValueError(f"images in one batch must share a shape, got {sorted(shapes)}")
    return array_to_tensor(np.stack(images)).numpy()


def from_network(batch: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """float ``(N, 3, H, W)`` network output -> uint8 ``(N, H, W, 3)`` (clamped, rounded)."""
    if batch.ndim != 4:
        raise ValueError(f"expected a batch of shape (N, 3, H, W), got {batch.shape}")
    # torch refuses to share read-only memory (e.g. some runtimes' outputs) without a warning.
    tensor = torch.from_numpy(np.require(batch, dtype=np.float32, requirements=["W"]))
    return tensor_to_array(tensor)


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

    For images too large for one forward pass: memory is bounded by one batch of at most
    ``max_batch`` tiles plus two full-size float32 accumulators. ``run`` maps a float32
    ``(N, C, th, tw)`` batch to the same shape.
    """
    if image.ndim != 3:
        raise ValueError(f"expected an image of shape (C, H, W), got {image.shape}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    channels, height, width = image.shape
    tiles = plan_tiles(height, width, tile=tile, overlap=overlap, multiple=multiple)
    by_shape: dict[tuple[int, int], list[Tile]] = {}
    for t in tiles:
        by_shape.setdefault((t.height, t.width), []).append(t)

    total = np.zeros((channels, height, width), dtype=np.float32)  # sum of output * weight
    weight_sum = np.zeros((height, width), dtype=np.float32)
    for group in by_shape.values():
        for start in range(0, len(group), max_batch):
            chunk = group[start : start + max_batch]
            batch = np.stack(
                [image[:, t.y : t.y + t.height, t.x : t.x + t.width] for t in chunk]
            ).astype(np.float32, copy=False)  # (N, C, th, tw)
            result = np.asarray(run(batch), dtype=np.float32)
            if result.shape != batch.shape:
                raise ValueError(
                    f"run must return its input's shape {batch.shape}, got {result.shape}"
                )
            for t, out in zip(chunk, result, strict=True):
                weights = blend_weights(t, height, width, overlap=overlap)
                total[:, t.y : t.y + t.height, t.x : t.x + t.width] += out * weights
                weight_sum[t.y : t.y + t.height, t.x : t.x + t.width] += weights
    total /= weight_sum
    return total


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
