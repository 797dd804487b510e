"""Image bytes in and out, shared by every inference caller (CLI, API, workers, benchmarks).

Untrusted bytes become a :class:`DecodedImage` (RGB plus optional alpha, EXIF-oriented) only
through :func:`decode_image`, which refuses oversized, unknown and broken files with an
:class:`~service.errors.ImageRejected` before spending memory on them. Pixels cross into and
out of a network only through :func:`to_network` / :func:`from_network`, which delegate the
value mapping to :mod:`models.imaging` so training and serving can never disagree (fitting an
image to a network's size rules is :mod:`service.inference.tiling`). :func:`encode_image` is
byte-deterministic, so the CLI, the API and a bulk job return identical files for the same
input. Nothing here imports torch.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from models.imaging import (
    DECODE_ERRORS,
    UnsupportedImageError,
    array_to_network,
    network_to_array,
    split_alpha,
    to_rgb,
)
from service.errors import CorruptImage, ImageTooLarge, UnsupportedFormat, UnsupportedMode
from service.settings import Settings

__all__ = [
    "MEDIA_TYPES",
    "DecodedImage",
    "ImageLimits",
    "decode_image",
    "encode_image",
    "from_network",
    "output_format",
    "read_image_file",
    "to_network",
]


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

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        """What every front door accepts (CLI, API, workers): one definition."""
        return cls(
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
            formats=settings.image_formats,
        )


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
    except (*DECODE_ERRORS, Image.DecompressionBombWarning):
        return None


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def decode_image(
    data: bytes,
    *,
    limits: ImageLimits = _DEFAULT_LIMITS,
    name: str = "<upload>",
    admit: Callable[[int, int], None] | None = None,
) -> DecodedImage:
    """Validate and decode untrusted image bytes; every refusal is an :class:`ImageRejected`.

    Order matters for safety: byte size, then the format allow-list, then the pixel count the
    header declares, then ``admit(height, width)`` (a memory budget's say: it raises to refuse),
    and only then the (memory-hungry) decode. Animated images give their first frame.
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
    except DECODE_ERRORS as exc:
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
        if admit is not None:
            admit(height, width)
        try:
            img.load()  # truncated data fails here (LOAD_TRUNCATED_IMAGES stays off)
            colour, alpha = split_alpha(img)
        except UnsupportedImageError as exc:
            raise UnsupportedMode(f"{name}: {exc}") from exc
        except _BOMB_ERRORS as exc:
            raise ImageTooLarge(f"{name}: the image is too large to decode safely: {exc}") from exc
        except DECODE_ERRORS as exc:
            raise CorruptImage(
                f"{name}: the image data is damaged or truncated ({_reason(exc)})"
            ) from exc
        if colour is not img:
            img.close()  # frees the decoded copy before the array is made from the colour one
        return DecodedImage(rgb=_pixels(colour), alpha=None if alpha is None else _pixels(alpha))


#: Rows converted at a time by :func:`_pixels`.
_STRIP_ROWS: Final = 256


def _pixels(img: Image.Image) -> npt.NDArray[np.uint8]:
    """A decoded image's pixels as uint8 ``(H, W, 3)`` (RGB) or ``(H, W)`` (L).

    ``np.array(img)`` goes through ``img.tobytes()``: a bytes copy of the whole image on top of
    PIL's (4 bytes a pixel for RGB) and the array's. Strips keep that transient small, so a
    64 Mpx photo peaks at PIL's copy plus the array while it decodes.
    """
    width, height = img.size
    shape = (height, width, 3) if img.mode == "RGB" else (height, width)
    out = np.empty(shape, dtype=np.uint8)
    for top in range(0, height, _STRIP_ROWS):
        bottom = min(height, top + _STRIP_ROWS)
        strip = img.crop((0, top, width, bottom)).tobytes()
        out[top:bottom] = np.frombuffer(strip, np.uint8).reshape((bottom - top, *shape[1:]))
    return out


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
_PNG_COMPRESS_LEVEL: Final = 1  # zlib's fastest: 3x faster than 6 on 256 px photos, ~10% larger
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
    return array_to_network(np.stack(images))


def from_network(batch: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """float ``(N, 3, H, W)`` network output -> uint8 ``(N, H, W, 3)`` (clamped, rounded)."""
    if batch.ndim != 4:
        raise ValueError(f"expected a batch of shape (N, 3, H, W), got {batch.shape}")
    return network_to_array(batch)
