"""The single image convention shared by training, export and the inference service.

Every image that enters a network goes through :func:`to_rgb` (orientation and mode handled on
purpose, never by PIL's defaults) and :func:`image_to_tensor`; every image that leaves one goes
through :func:`tensor_to_image`. Keeping these in one place means a model trained on folder
data sees exactly what the service feeds it. This lives in ``models`` because the service may
import ``models`` but never ``training``.

Tensor convention: float32, channels first, RGB, values in [-1, 1] with ``x / 127.5 - 1``.
The mapping is written once, on numpy arrays (:func:`array_to_network`,
:func:`network_to_array`); the tensor functions wrap it. Importing this module does not import
torch, so a process that only decodes and encodes images (the API in distributed mode) stays
light.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DECODE_ERRORS",
    "IMAGE_EXTENSIONS",
    "ImageDecodeError",
    "UnsupportedImageError",
    "array_to_network",
    "array_to_tensor",
    "decode_image_bytes",
    "find_images",
    "image_to_tensor",
    "is_image_file",
    "is_listed_image",
    "load_image",
    "network_to_array",
    "split_alpha",
    "tensor_to_array",
    "tensor_to_image",
    "to_rgb",
]

#: Lower-case suffixes (with the dot, as ``Path.suffix`` gives them) treated as images when
#: scanning folders; compare with ``path.suffix.lower()``.
IMAGE_EXTENSIONS: Final[frozenset[str]] = frozenset(
    {
        ".png",
        ".jpg",
        ".jpeg",
        ".bmp",
        ".gif",
        ".tif",
        ".tiff",
        ".webp",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".tga",
    }
)

Background = tuple[int, int, int]
WHITE: Final[Background] = (255, 255, 255)

# Modes PIL converts to RGB correctly on its own (real colour-space conversions, or dropping a
# padding channel); everything else is handled explicitly below.
_PIL_COLOUR_MODES: Final = frozenset({"L", "1", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"})
_INT16_MODES: Final = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_INT32_MAX: Final = 2**31 - 1

#: What PIL and its plugins raise on broken, truncated, hostile or unknown files: the one list
#: every decoder of the project catches (training data, uploads, bulk jobs).
DECODE_ERRORS: Final = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)


class UnsupportedImageError(ValueError):
    """The image decoded, but its pixel mode has no well-defined RGB meaning here."""


class ImageDecodeError(ValueError):
    """A file could not be read as an image; names the file so users can find and fix it."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")

    def __reduce__(self) -> tuple[type[ImageDecodeError], tuple[Path, str]]:
        # Default exception pickling replays args (the formatted message) into __init__.
        return (type(self), (self.path, self.reason))


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether a path's suffix is one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


# --- which files of a folder are its images -------------------------------------------------
#
# One rule for every folder the project reads images from (training data, `unpaired
# translate`, `unpaired jobs submit`, a bulk job's source): recursive; a file counts when its
# suffix is an image suffix (any case) and no part of its path below the folder is hidden
# (starts with "."), which skips .git/, .DS_Store and the ._name.jpg files macOS leaves on
# shared drives. Symbolic links are followed, each real folder once (a cycle ends there).


def is_listed_image(relative: str, also: Collection[str] = ()) -> bool:
    """Whether a file at this path (relative to the folder scanned, "/"-separated) is one of
    the folder's images, or has one of the suffixes `also` lists (lower case: ".mp4")."""
    parts = relative.split("/")
    wanted = is_image_file(parts[-1]) or os.path.splitext(parts[-1])[1].lower() in also
    return wanted and not any(part.startswith(".") for part in parts)


def _walk(folder: Path, also: Collection[str]) -> Iterator[Path]:
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink cycle, or the same tree linked twice
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            path = Path(dirpath, name)
            if is_listed_image(name, also) and path.is_file():
                yield path


def find_images(folder: str | os.PathLike[str], also: Collection[str] = ()) -> list[Path]:
    """Every image of a local folder by the rule above (and every file with a suffix `also`
    lists: the CLI and jobs add videos), sorted by relative path."""
    root = Path(folder)
    return sorted(_walk(root, also), key=lambda p: p.relative_to(root).parts)


# --- mode handling --------------------------------------------------------------------------


def _gray_to_rgb(gray: npt.NDArray[np.uint8]) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(gray)).convert("RGB")


def _int_to_rgb(img: Image.Image) -> Image.Image:
    """16/32-bit integer grayscale -> 8 bits by the type's range, not PIL's clipping to 255.

    16-bit modes map [0, 65535] onto [0, 255] with ``round(v / 257)`` (so 8-bit data widened by
    ``v * 257`` comes back exactly). Mode ``I`` (int32) is how PIL has historically delivered
    16-bit PNG/TIFF/PGM data, so values that all fit in [0, 65535] get the 16-bit rule; other
    ``I`` images are clipped at 0 and scaled by the int32 maximum.
    """
    values = np.asarray(img).astype(np.float64)
    if img.mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
        scaled = np.clip(values, 0, _INT32_MAX) * (255.0 / _INT32_MAX)
    else:
        scaled = values / 257.0
    return _gray_to_rgb(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _float_to_rgb(img: Image.Image) -> Image.Image:
    """Float grayscale: data with max <= 1 is taken as [0, 1] (scaled by 255), else as [0, 255].

    Values outside the chosen range are clipped; NaN becomes 0 (black).
    """
    values = np.nan_to_num(np.asarray(img).astype(np.float64), nan=0.0)
    if values.size == 0 or values.max() <= 1.0:
        values = np.clip(values, 0.0, 1.0) * 255.0
    else:
        values = np.clip(values, 0.0, 255.0)
    return _gray_to_rgb(np.rint(values).astype(np.uint8))


def colour_to_rgb(img: Image.Image) -> Image.Image:
    """Convert an image without an alpha channel to RGB, choosing the rule per mode."""
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode in _PIL_COLOUR_MODES:
        return img.convert("RGB")
    if mode in _INT16_MODES or mode == "I":
        return _int_to_rgb(img)
    if mode == "F":
        return _float_to_rgb(img)
    raise UnsupportedImageError(f"unsupported image mode {mode!r}")


def _unpremultiply_la(img: Image.Image) -> Image.Image:
    """Premultiplied ``La`` -> straight ``LA`` (luminance ``round(l * 255 / a)``, 0 where a = 0)."""
    la = np.asarray(img).astype(np.float64)
    lum, alpha = la[..., 0], la[..., 1]
    straight = np.where(alpha > 0, lum * 255.0 / np.maximum(alpha, 1.0), 0.0)
    lum8 = np.clip(np.rint(straight), 0, 255).astype(np.uint8)
    return Image.merge("LA", (Image.fromarray(lum8), Image.fromarray(la[..., 1].astype(np.uint8))))


def _split_oriented(img: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """Separate colour (as RGB, not composited) from alpha, for an already oriented image."""
    if img.mode in ("P", "L", "RGB", "1") and "transparency" in img.info:
        img = img.convert("RGBA")  # palette / colour-key transparency becomes a real alpha
    elif img.mode in ("PA", "RGBa"):
        img = img.convert("RGBA")  # resolve the palette / undo premultiplication
    elif img.mode == "La":
        img = _unpremultiply_la(img)  # PIL cannot convert La at all
    if img.mode == "RGBA":
        return img.convert("RGB"), img.getchannel("A")
    if img.mode == "LA":
        return img.getchannel("L").convert("RGB"), img.getchannel("A")
    return colour_to_rgb(img), None


def split_alpha(img: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """EXIF-orient, then return (RGB colour channels, alpha as mode ``L``, or None).

    The colour part is NOT composited, so a service can translate it and reattach the alpha
    untouched. Images without transparency return None for alpha.
    """
    return _split_oriented(_upright(img))


def _upright(img: Image.Image) -> Image.Image:
    """``img`` turned by its EXIF orientation; ``img`` itself when it is upright already
    (``ImageOps.exif_transpose`` would copy it: 4 bytes a pixel, 256 MB for a 64 Mpx photo)."""
    if img.getexif().get(ExifTags.Base.Orientation, 1) == 1:
        return img
    return ImageOps.exif_transpose(img)


def _check_background(background: Background) -> Background:
    if len(background) != 3 or any(not 0 <= int(c) <= 255 for c in background):
        raise ValueError(f"background must be three ints in [0, 255], got {background!r}")
    r, g, b = (int(c) for c in background)
    return (r, g, b)


def _composite(colour: Image.Image, alpha: Image.Image, background: Background) -> Image.Image:
    """Blend ``colour`` over a flat background: ``round((c * a + bg * (255 - a)) / 255)``."""
    c = np.asarray(colour, dtype=np.float64)
    a = np.asarray(alpha, dtype=np.float64)[..., None]
    bg = np.asarray(background, dtype=np.float64)
    out = np.rint((c * a + bg * (255.0 - a)) / 255.0)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def to_rgb(img: Image.Image, *, background: Background = WHITE) -> Image.Image:
    """Return an 8-bit RGB copy of ``img``, EXIF-oriented, with each mode converted on purpose.

    - ``RGB`` as is; ``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGBX`` via PIL.
    - Transparency (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, ``P``/``L``/``RGB`` with a
      ``transparency`` key) is alpha-composited over ``background``.
    - ``I;16*``: ``round(v / 257)``; ``I``: the same when values fit 16 bits, else scaled by
      the int32 maximum; ``F``: [0, 1] if max <= 1 else [0, 255], clipped (see helpers).
    - Anything else raises :class:`UnsupportedImageError`.
    """
    bg = _check_background(background)
    colour, alpha = split_alpha(img)
    if alpha is None:
        return colour
    return _composite(colour, alpha, bg)


# --- decoding -------------------------------------------------------------------------------


def _decode(
    source: str | os.PathLike[str] | io.BytesIO, name: str | os.PathLike[str]
) -> Image.Image:
    try:
        with Image.open(source) as img:
            img.load()  # decode everything now, so truncated files fail here and not later
            return to_rgb(img)
    except UnsupportedImageError as exc:
        raise ImageDecodeError(name, str(exc)) from exc
    except DECODE_ERRORS as exc:
        reason = str(exc) or type(exc).__name__
        raise ImageDecodeError(name, f"{reason} ({type(exc).__name__})") from exc


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open, fully decode and :func:`to_rgb` a file; any failure is an :class:`ImageDecodeError`."""
    return _decode(path, path)


def decode_image_bytes(data: bytes, *, name: str = "<bytes>") -> Image.Image:
    """Like :func:`load_image` for in-memory data (uploads); ``name`` labels errors."""
    return _decode(io.BytesIO(data), name)


# --- tensors --------------------------------------------------------------------------------


def array_to_network(array: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """uint8 ``(H, W, 3)`` / ``(N, H, W, 3)`` -> float32 ``(3, H, W)`` / ``(N, 3, H, W)``, [-1, 1]

    This is the only place the forward value mapping ``x / 127.5 - 1`` is written.
    """
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[-1] != 3:
        raise ValueError(
            f"expected a uint8 array of shape (H, W, 3) or (N, H, W, 3), "
            f"got {array.dtype} {array.shape}"
        )
    values = array.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return np.ascontiguousarray(np.moveaxis(values, -1, -3))


def network_to_array(values: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """float ``(3, H, W)`` / ``(N, 3, H, W)`` in [-1, 1] -> uint8 ``(H, W, 3)`` / ``(N, H, W, 3)``.

    Clamped and rounded to nearest (``((v.clip(-1, 1) + 1) * 127.5).round()``), so it is the
    exact inverse of :func:`array_to_network` on uint8 data. NaN maps to 0 (mid grey).
    """
    if values.ndim not in (3, 4) or values.shape[-3] != 3:
        raise ValueError(
            f"expected an array of shape (3, H, W) or (N, 3, H, W), got {tuple(values.shape)}"
        )
    finite = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0)
    scaled = np.round((np.clip(finite, -1.0, 1.0) + np.float32(1.0)) * np.float32(127.5))
    return np.ascontiguousarray(np.moveaxis(scaled.astype(np.uint8), -3, -1))


def array_to_tensor(array: npt.NDArray[np.uint8]) -> torch.Tensor:
    """:func:`array_to_network` as a tensor (training and export)."""
    import torch

    return torch.from_numpy(array_to_network(array))


def tensor_to_array(tensor: torch.Tensor) -> npt.NDArray[np.uint8]:
    """:func:`network_to_array` of a tensor on any device."""
    import torch

    if tensor.ndim not in (3, 4) or tensor.shape[-3] != 3:
        raise ValueError(
            f"expected a tensor of shape (3, H, W) or (N, 3, H, W), got {tuple(tensor.shape)}"
        )
    return network_to_array(tensor.detach().to("cpu", torch.float32).numpy())


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB uint8 image -> float32 ``(3, H, W)`` in [-1, 1]; other modes go via :func:`to_rgb`."""
    if img.mode != "RGB":
        raise ValueError(
            f"expected an RGB image, got mode {img.mode!r}; convert it with models.imaging.to_rgb"
        )
    return array_to_tensor(np.asarray(img))


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """float ``(3, H, W)`` in [-1, 1] -> RGB uint8 image (see :func:`tensor_to_array`)."""
    if tensor.ndim != 3:
        raise ValueError(f"expected a tensor of shape (3, H, W), got {tuple(tensor.shape)}")
    return Image.fromarray(tensor_to_array(tensor))
