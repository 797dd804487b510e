"""Service pre/post-processing: what every upload becomes, what gets refused, and tiling."""

from __future__ import annotations

import io
import itertools
import re
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile
from scipy.ndimage import uniform_filter

import service.inference.image_io as imaging
from models.imaging import UnsupportedImageError
from service.errors import (
    CorruptImage,
    ImageRejected,
    ImageTooLarge,
    UnsupportedFormat,
    UnsupportedMode,
)
from service.inference.image_io import (
    MEDIA_TYPES,
    DecodedImage,
    ImageLimits,
    decode_image,
    encode_image,
    from_network,
    read_image_file,
    to_network,
)
from service.inference.tiling import (
    Tile,
    blend_weights,
    crop_to,
    pad_to,
    padded_shape,
    plan_tiles,
    translate_tiled,
)

RNG_SEED = 1234
ORIENTATION = 0x0112  # EXIF tag


def rng() -> np.random.Generator:
    return np.random.default_rng(RNG_SEED)


def save(img: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


def noise(height: int, width: int, channels: int = 3) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return rng().integers(0, 256, shape, dtype=np.uint8)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bilevel_png(width: int, height: int, idat: bytes) -> bytes:
    """A 1-bit grayscale PNG declaring ``width x height`` with the given (compressed) data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


# --- modes ----------------------------------------------------------------------------------


def test_rgb_png_decodes_exactly_without_alpha() -> None:
    pixels = noise(5, 7)
    decoded = decode_image(save(Image.fromarray(pixels), "PNG"))
    np.testing.assert_array_equal(decoded.rgb, pixels)
    assert decoded.alpha is None
    assert decoded.rgb.flags.c_contiguous and decoded.rgb.flags.writeable
    assert decoded.size == (5, 7) and (decoded.height, decoded.width) == (5, 7)


def _palette_image(transparency: int | None = None) -> Image.Image:
    img = Image.new("P", (3, 1))
    img.putpalette([255, 0, 0, 0, 0, 255, 10, 200, 30])
    img.putdata([0, 1, 2])
    if transparency is not None:
        img.info["transparency"] = transparency
    return img


def _gray(mode: str, values: list[float]) -> Image.Image:
    img = Image.new(mode, (len(values), 1))
    img.putdata(values)
    return img


# (image, format, expected grey or RGB values along the single row, tolerance)
OPAQUE_CASES: dict[str, tuple[Callable[[], bytes], list[object], int]] = {
    "L": (lambda: save(_gray("L", [0, 77, 255]), "PNG"), [0, 77, 255], 0),
    "1": (lambda: save(_gray("1", [0, 1, 0]), "PNG"), [0, 255, 0], 0),
    "P": (
        lambda: save(_palette_image(), "PNG"),
        [(255, 0, 0), (0, 0, 255), (10, 200, 30)],
        0,
    ),
    "CMYK-jpeg": (
        lambda: save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95),
        [(255, 0, 0)] * 8,
        3,
    ),
    "CMYK-tiff": (
        lambda: save(
            Image.fromarray(np.array([[[0, 255, 255, 0], [0, 0, 0, 255]]], np.uint8), "CMYK"),
            "TIFF",
        ),
        [(255, 0, 0), (0, 0, 0)],
        0,
    ),
    # 16-bit data is scaled by the type's range, not clipped at 255
    "I;16-png": (
        lambda: save(Image.fromarray(np.array([[0, 257 * 77, 32768, 65535]], np.uint16)), "PNG"),
        [0, 77, 128, 255],
        0,
    ),
    "I-tiff": (lambda: save(_gray("I", [0, 257 * 77, 65535]), "TIFF"), [0, 77, 255], 0),
    "I-tiff-int32": (lambda: save(_gray("I", [2**31 - 1, -5]), "TIFF"), [255, 0], 0),
    "F-tiff": (lambda: save(_gray("F", [0.0, 0.5, 1.0, -0.2]), "TIFF"), [0, 128, 255, 0], 0),
}


@pytest.mark.parametrize("case", OPAQUE_CASES)
def test_every_opaque_mode_decodes_to_expected_rgb(case: str) -> None:
    make, expected, tolerance = OPAQUE_CASES[case]
    decoded = decode_image(make())
    want = np.array([v if isinstance(v, tuple) else (v, v, v) for v in expected])
    assert decoded.rgb.shape == (1 if case != "CMYK-jpeg" else 8, len(expected), 3)
    assert decoded.alpha is None
    np.testing.assert_allclose(decoded.rgb[0].astype(int), want, atol=tolerance)


def test_rgba_colour_and_alpha_carried_through_exactly() -> None:
    rgb, alpha = noise(6, 4), noise(6, 4, channels=1)
    alpha[0, 0] = 0  # colour under a fully transparent pixel must survive too
    decoded = decode_image(save(Image.fromarray(np.dstack((rgb, alpha))), "PNG"))
    np.testing.assert_array_equal(decoded.rgb, rgb)
    assert decoded.alpha is not None
    np.testing.assert_array_equal(decoded.alpha, alpha)


def test_la_gives_grey_colour_and_its_alpha() -> None:
    la = np.array([[[10, 0], [200, 128], [90, 255]]], np.uint8)
    decoded = decode_image(save(Image.fromarray(la, "LA"), "PNG"))
    np.testing.assert_array_equal(decoded.rgb[0], np.repeat(la[0, :, :1], 3, axis=1))
    assert decoded.alpha is not None
    np.testing.assert_array_equal(decoded.alpha[0], [0, 128, 255])


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_becomes_alpha(fmt: str) -> None:
    decoded = decode_image(save(_palette_image(), fmt, transparency=1))
    np.testing.assert_array_equal(decoded.rgb[0, [0, 2]], [(255, 0, 0), (10, 200, 30)])
    assert decoded.alpha is not None
    np.testing.assert_array_equal(decoded.alpha[0], [255, 0, 255])


def test_animated_gif_gives_first_frame() -> None:
    red, blue = Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))
    data = save(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    assert (decode_image(data).rgb == (255, 0, 0)).all()


def test_unsupported_mode_is_a_typed_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every mode Pillow produces today is handled, so a future one is simulated.
    def refuse(img: Image.Image) -> None:
        raise UnsupportedImageError("unsupported image mode 'XYZ'")

    monkeypatch.setattr(imaging, "split_alpha", refuse)
    with pytest.raises(UnsupportedMode, match="XYZ") as info:
        decode_image(save(Image.new("RGB", (2, 2)), "PNG"))
    assert info.value.code == "bad_mode" and isinstance(info.value, CorruptImage)


# --- EXIF orientation -----------------------------------------------------------------------

# EXIF orientation -> how the stored pixels must be turned for display.
ROTATIONS = {3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, -1), 8: lambda a: np.rot90(a, 1)}


@pytest.mark.parametrize("orientation", sorted(ROTATIONS))
def test_png_exif_orientation_is_applied(orientation: int) -> None:
    stored = noise(2, 4)  # 2 rows, 4 columns
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    decoded = decode_image(save(Image.fromarray(stored), "PNG", exif=exif))
    np.testing.assert_array_equal(decoded.rgb, ROTATIONS[orientation](stored))


def test_jpeg_exif_orientation_6_turns_clockwise() -> None:
    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:8, :8] = (255, 0, 0)  # a red block in the stored top-left corner
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    decoded = decode_image(save(Image.fromarray(stored), "JPEG", exif=exif, quality=95))
    assert decoded.size == (32, 16)
    np.testing.assert_allclose(decoded.rgb[3, 12].astype(int), (255, 0, 0), atol=8)  # top-right
    np.testing.assert_allclose(decoded.rgb[3, 3].astype(int), (0, 0, 0), atol=8)


# --- refusals -------------------------------------------------------------------------------


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


CORRUPT_CASES: dict[str, Callable[[], bytes]] = {
    "empty": lambda: b"",
    "text": lambda: b"this is a text file, not an image\n" * 4,
    "random": lambda: noise(1, 512, channels=1).tobytes(),
    "truncated-png": lambda: _half(save(Image.fromarray(noise(32, 32)), "PNG")),
    "truncated-jpeg": lambda: _half(save(Image.fromarray(noise(32, 32)), "JPEG")),
    "png-bad-header": lambda: save(Image.fromarray(noise(4, 4)), "PNG")[:20] + b"\0" * 40,
}


@pytest.mark.parametrize("case", CORRUPT_CASES)
def test_broken_data_is_corrupt(case: str) -> None:
    with pytest.raises(CorruptImage, match=r"^photo\.png: ") as info:
        decode_image(CORRUPT_CASES[case](), name="photo.png")
    assert info.value.code == "corrupt"
    assert type(info.value) is CorruptImage


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A valid 20000x20000 PNG (400 Mpx, 50 MB of 1-bit pixels) that is ~50 KB on disk."""
    width = height = 20_000
    packer = zlib.compressobj(9)
    row = b"\0" * (1 + width // 8)  # filter byte + packed bits
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return bilevel_png(width, height, idat)


def never_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any pixel decoding fails the test: what is refused must be refused from the header."""

    def decoded(*args: object, **kwargs: object) -> None:
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decoded)


def test_decompression_bomb_is_refused_before_decoding(
    bomb: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(bomb) < 100_000
    never_decodes(monkeypatch)  # a real decode takes seconds and 400 MB
    with pytest.raises(ImageTooLarge) as info:
        decode_image(bomb)
    assert info.value.code == "too_large"
    assert "400000000" in str(info.value)


def test_pil_bomb_warning_becomes_a_silent_refusal() -> None:
    # 100 Mpx passes a raised max_pixels but trips PIL's own guard (warning above ~89 Mpx):
    # that is a refusal too, and nothing may leak out as a printed warning.
    data = bilevel_png(10_000, 10_000, b"not zlib")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageTooLarge, match="100000000 pixels"):
            decode_image(data, limits=ImageLimits(max_pixels=150_000_000))
    assert not caught


def test_declared_size_over_max_pixels_is_checked_before_decoding() -> None:
    garbage = bilevel_png(9000, 8000, b"not zlib")  # 72 Mpx: over our limit, under PIL's
    with pytest.raises(ImageTooLarge, match=r"9000x8000 = 72000000 pixels.*64000000"):
        decode_image(garbage)
    # The same garbage within the limits only fails when decoded, proving the check came first.
    small = bilevel_png(64, 64, b"not zlib")
    with pytest.raises(ImageTooLarge, match="4096 pixels; the limit is 1000"):
        decode_image(small, limits=ImageLimits(max_pixels=1000))
    with pytest.raises(CorruptImage):
        decode_image(small)


def test_max_bytes_is_checked_on_the_raw_data() -> None:
    data = save(Image.fromarray(noise(8, 8)), "PNG")
    assert decode_image(data, limits=ImageLimits(max_bytes=len(data))).size == (8, 8)
    with pytest.raises(ImageTooLarge, match=f"{len(data)} bytes; the limit is {len(data) - 1}"):
        decode_image(data, limits=ImageLimits(max_bytes=len(data) - 1))


def test_read_image_file_decodes_and_names_the_path(tmp_path: Path) -> None:
    pixels = noise(3, 5)
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(save(Image.fromarray(pixels), "PNG"))
    bad.write_bytes(b"garbage")
    np.testing.assert_array_equal(read_image_file(good).rgb, pixels)
    with pytest.raises(CorruptImage, match=f"^{re.escape(str(bad))}: "):
        read_image_file(bad)
    with pytest.raises(FileNotFoundError):
        read_image_file(tmp_path / "missing.png")


def test_read_image_file_refuses_a_huge_file_from_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    huge = tmp_path / "huge.png"
    with huge.open("wb") as f:
        f.truncate(2**34)  # sparse 16 GiB: reading it first would take minutes and all memory

    def read(*args: object, **kwargs: object) -> None:
        raise AssertionError("the file was opened: its size alone should refuse it")

    monkeypatch.setattr(imaging, "open", read, raising=False)
    with pytest.raises(ImageTooLarge, match=f"{2**34} bytes"):
        read_image_file(huge)


@pytest.mark.parametrize(
    ("make", "limits", "detected"),
    [
        (lambda: save(Image.new("RGB", (4, 4)), "PPM"), ImageLimits(), "PPM"),
        (lambda: save(Image.new("RGB", (16, 16)), "ICO"), ImageLimits(), "ICO"),
        (
            lambda: save(Image.new("RGB", (4, 4)), "PNG"),
            ImageLimits(formats=frozenset({"JPEG"})),
            "PNG",
        ),
    ],
)
def test_formats_outside_the_allow_list_are_refused(
    make: Callable[[], bytes], limits: ImageLimits, detected: str
) -> None:
    with pytest.raises(UnsupportedFormat) as info:
        decode_image(make(), limits=limits)
    message = str(info.value)
    assert f"{detected} images are not accepted" in message
    assert all(name in message for name in limits.formats)
    assert info.value.code == "unsupported_format" and isinstance(info.value, ImageRejected)


def test_limits_normalise_and_validate_format_names() -> None:
    assert ImageLimits(formats=frozenset({"png", "Jpeg"})).formats == {"PNG", "JPEG"}
    with pytest.raises(ValueError, match="JPG"):
        ImageLimits(formats=frozenset({"JPG"}))
    with pytest.raises(ValueError, match="positive"):
        ImageLimits(max_bytes=0)


def test_decoded_image_validates_its_arrays() -> None:
    with pytest.raises(ValueError, match="rgb must be uint8"):
        DecodedImage(rgb=np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="alpha must be uint8"):
        DecodedImage(rgb=np.zeros((2, 2, 3), np.uint8), alpha=np.zeros((2, 3), np.uint8))


# --- encoding -------------------------------------------------------------------------------


@pytest.mark.parametrize("with_alpha", [False, True])
def test_png_round_trip_is_lossless(with_alpha: bool) -> None:
    image = DecodedImage(rgb=noise(9, 7), alpha=noise(9, 7, channels=1) if with_alpha else None)
    back = decode_image(encode_image(image, format="PNG"))
    np.testing.assert_array_equal(back.rgb, image.rgb)
    if image.alpha is None:
        assert back.alpha is None
    else:
        assert back.alpha is not None
        np.testing.assert_array_equal(back.alpha, image.alpha)


def test_webp_at_quality_100_is_lossless_with_alpha() -> None:
    image = DecodedImage(rgb=noise(9, 7), alpha=noise(9, 7, channels=1))
    back = decode_image(encode_image(image, format="webp", quality=100))
    np.testing.assert_array_equal(back.rgb, image.rgb)
    assert back.alpha is not None
    np.testing.assert_array_equal(back.alpha, image.alpha)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "jpg", "webp", "WEBP"])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_encoding_is_byte_deterministic_and_typed(fmt: str, with_alpha: bool) -> None:
    def fresh() -> DecodedImage:  # equal pixels in new arrays, not the same object
        return DecodedImage(rgb=noise(16, 12), alpha=noise(16, 12, 1) if with_alpha else None)

    first, second = encode_image(fresh(), format=fmt), encode_image(fresh(), format=fmt)
    assert first == second
    key = "jpeg" if fmt == "jpg" else fmt.lower()
    assert Image.open(io.BytesIO(first)).format == key.upper()
    assert key in MEDIA_TYPES and MEDIA_TYPES[key] == f"image/{key}"


def test_jpeg_composites_alpha_over_white() -> None:
    rgb = np.zeros((8, 16, 3), np.uint8)
    rgb[:, 8:] = (255, 0, 0)
    alpha = np.zeros((8, 16), np.uint8)  # left: transparent black
    alpha[:, 8:] = 128  # right: half-transparent red
    back = decode_image(encode_image(DecodedImage(rgb=rgb, alpha=alpha), format="jpeg"))
    assert back.alpha is None
    np.testing.assert_allclose(back.rgb[4, 2].astype(int), (255, 255, 255), atol=3)
    np.testing.assert_allclose(back.rgb[4, 12].astype(int), (255, 127, 127), atol=4)


def test_encode_rejects_bad_format_and_quality() -> None:
    image = DecodedImage(rgb=noise(2, 2))
    with pytest.raises(ValueError, match="gif"):
        encode_image(image, format="gif")
    with pytest.raises(ValueError, match="quality"):
        encode_image(image, format="jpeg", quality=0)


# --- network tensors ------------------------------------------------------------------------


def test_network_round_trip_is_exact_on_every_uint8_value() -> None:
    every = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    images = [every, every[::-1].copy()]
    batch = to_network(images)
    assert batch.dtype == np.float32 and batch.shape == (2, 3, 16, 16)
    assert batch.min() == -1.0 and batch.max() == 1.0
    np.testing.assert_array_equal(from_network(batch), np.stack(images))


def test_from_network_clamps_maps_nan_and_accepts_read_only_arrays() -> None:
    batch = np.array([-5.0, -1.0, 0.0, np.nan, 1.0, 7.0], np.float32).reshape(1, 1, 1, 6)
    batch = np.repeat(batch, 3, axis=1)
    batch.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = from_network(batch)
    np.testing.assert_array_equal(out[0, 0, :, 0], [0, 0, 128, 128, 255, 255])


def test_to_network_refuses_mixed_shapes_and_empty_batches() -> None:
    with pytest.raises(ValueError, match="share a shape"):
        to_network([noise(4, 4), noise(4, 5)])
    with pytest.raises(ValueError, match="at least one"):
        to_network([])


# --- padding --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "multiple", "min_side", "expected"),
    [
        ((257, 383), 4, 0, (260, 384)),
        ((256, 384), 4, 0, (256, 384)),
        ((3, 5), 4, 8, (8, 8)),
        ((3, 5), 4, 6, (8, 8)),  # min_side itself rounds up to the multiple
        ((100, 7), 1, 16, (100, 16)),
        ((1, 1), 8, 0, (8, 8)),
    ],
)
def test_padded_shape(
    size: tuple[int, int], multiple: int, min_side: int, expected: tuple[int, int]
) -> None:
    assert padded_shape(*size, multiple=multiple, min_side=min_side) == expected


def _reflect_index(n: int, target: int) -> np.ndarray:
    """Index into a side of n that numpy-style repeated reflection gives for positions < target."""
    if n == 1:
        return np.zeros(target, int)
    period = np.r_[np.arange(n), np.arange(n - 2, 0, -1)]  # 0 1 .. n-1 n-2 .. 1
    return np.resize(period, target)


@pytest.mark.parametrize(("h", "w"), [(1, 1), (3, 5), (6, 7), (8, 8)])
def test_pad_reflects_repeatedly_and_crop_undoes_it(h: int, w: int) -> None:
    batch = rng().standard_normal((2, 3, h, w)).astype(np.float32)
    padded = pad_to(batch, 8, 8)
    assert padded.shape == (2, 3, 8, 8) and padded.dtype == np.float32
    rows, cols = _reflect_index(h, 8), _reflect_index(w, 8)
    np.testing.assert_array_equal(padded, batch[:, :, rows][:, :, :, cols])
    np.testing.assert_array_equal(crop_to(padded, h, w), batch)


def test_pad_and_crop_refuse_the_wrong_direction() -> None:
    batch = np.zeros((1, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="smaller"):
        pad_to(batch, 2, 8)
    with pytest.raises(ValueError, match="crop"):
        crop_to(batch, 5, 4)


# --- tiling ---------------------------------------------------------------------------------

TILING_CASES = [
    # (height, width, tile, overlap, multiple)
    (64, 64, 32, 8, 4),
    (100, 60, 32, 8, 4),
    (96, 200, 64, 16, 8),
    (48, 40, 16, 5, 4),  # overlap not a multiple: neighbours still overlap >= 5 (8 here)
    (20, 100, 32, 8, 4),  # one side fits into a single tile
    (36, 36, 32, 0, 4),
]


@pytest.mark.parametrize(("height", "width", "tile", "overlap", "multiple"), TILING_CASES)
def test_plan_tiles_covers_the_image_with_equal_aligned_overlapping_windows(
    height: int, width: int, tile: int, overlap: int, multiple: int
) -> None:
    tiles = plan_tiles(height, width, tile=tile, overlap=overlap, multiple=multiple)
    assert len({(t.height, t.width) for t in tiles}) == 1  # one shape: they batch together
    assert tiles[0].height == min(tile, height) and tiles[0].width == min(tile, width)
    cover = np.zeros((height, width), int)
    for t in tiles:
        assert t.y % multiple == 0 and t.x % multiple == 0
        assert t.y >= 0 and t.x >= 0 and t.y + t.height <= height and t.x + t.width <= width
        cover[t.y : t.y + t.height, t.x : t.x + t.width] += 1
    assert (cover >= 1).all()
    for origins, side, size in (
        (sorted({t.y for t in tiles}), height, tiles[0].height),
        (sorted({t.x for t in tiles}), width, tiles[0].width),
    ):
        assert origins[0] == 0 and origins[-1] + size == side  # flush with both edges
        assert all(size - (b - a) >= overlap for a, b in itertools.pairwise(origins))
    assert len(tiles) == len({t.y for t in tiles}) * len({t.x for t in tiles})


def test_plan_tiles_uses_one_tile_when_the_image_fits() -> None:
    assert plan_tiles(24, 32, tile=32, overlap=8, multiple=4) == [Tile(0, 0, 24, 32)]


@pytest.mark.parametrize(
    ("tile", "overlap", "multiple", "size", "match"),
    [
        (32, 32, 4, 64, "overlap < tile"),
        (32, -1, 4, 64, "overlap < tile"),
        (30, 8, 4, 64, "multiple of 4"),
        (32, 30, 8, 64, "rounded up"),
        (32, 8, 4, 66, "multiples of 4"),
    ],
)
def test_plan_tiles_validates(
    tile: int, overlap: int, multiple: int, size: int, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        plan_tiles(size, size, tile=tile, overlap=overlap, multiple=multiple)


def test_blend_weights_ramp_only_on_sides_shared_with_another_tile() -> None:
    tiles = plan_tiles(56, 56, tile=32, overlap=8, multiple=4)  # a 2x2 grid
    assert len(tiles) == 4
    top_left = blend_weights(tiles[0], 56, 56, overlap=8)
    assert top_left.dtype == np.float32 and top_left.shape == (32, 32)
    assert (top_left > 0).all() and top_left.max() == 1.0
    assert (top_left[:24, :24] == 1).all()  # the image-border sides (top, left) keep full weight
    np.testing.assert_array_equal(top_left[:24, -1], top_left[:24, -1].min())  # right: ramped
    assert top_left[0, -1] < 1e-6 and top_left[-1, 0] < 1e-6
    assert np.all(np.diff(top_left[0, 20:]) <= 0) and np.all(np.diff(top_left[20:, 0]) <= 0)
    bottom_right = blend_weights(tiles[3], 56, 56, overlap=8)
    np.testing.assert_array_equal(bottom_right, top_left[::-1, ::-1])
    # neighbours that overlap by exactly `overlap` share each pixel with weights summing to 1
    pair = plan_tiles(8, 56, tile=32, overlap=8, multiple=4)
    assert [t.x for t in pair] == [0, 24]
    left, right = (blend_weights(t, 8, 56, overlap=8)[0] for t in pair)
    np.testing.assert_allclose(left[24:] + right[:8], 1.0, atol=1e-6)


def test_blend_weights_of_a_lone_tile_are_all_ones() -> None:
    assert (blend_weights(Tile(0, 0, 16, 24), 16, 24, overlap=8) == 1).all()


class Recorder:
    """A `run` that records the batch shapes it was given."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        self.fn = fn
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.float32
        self.shapes.append(batch.shape)
        return self.fn(batch)


def box_blur(batch: np.ndarray) -> np.ndarray:
    """A 3x3 local operator (reach 1 px) with reflect borders, applied per image and channel."""
    return uniform_filter(batch, size=(1, 1, 3, 3), mode="reflect")


def test_translate_tiled_identity_reproduces_the_image_in_bounded_batches() -> None:
    image = rng().uniform(-1, 1, (3, 72, 100)).astype(np.float32)
    run = Recorder(lambda b: b.copy())
    out = translate_tiled(image, run, tile=32, overlap=8, multiple=4, max_batch=3)
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_allclose(out, image, atol=1e-6)
    n_tiles = len(plan_tiles(72, 100, tile=32, overlap=8, multiple=4))
    assert n_tiles > 3
    assert [s[0] for s in run.shapes] == [3] * (n_tiles // 3) + [n_tiles % 3] * (n_tiles % 3 > 0)
    assert all(s[1:] == (3, 32, 32) for s in run.shapes)


def test_translate_tiled_has_no_seams_for_a_local_operator() -> None:
    image = rng().uniform(-1, 1, (3, 64, 88)).astype(np.float32)
    run = Recorder(box_blur)
    tiled = translate_tiled(image, run, tile=24, overlap=8, multiple=4, max_batch=4)
    assert sum(s[0] for s in run.shapes) > 4  # really tiled, in several batches
    whole = box_blur(image[None])[0]
    assert np.abs(tiled - whole)[:, 2:-2, 2:-2].max() < 1e-5


def test_translate_tiled_runs_a_small_image_as_one_tile() -> None:
    image = rng().uniform(-1, 1, (3, 16, 24)).astype(np.float32)
    run = Recorder(box_blur)
    out = translate_tiled(image, run, tile=32, overlap=8, multiple=4, max_batch=8)
    assert run.shapes == [(1, 3, 16, 24)]
    np.testing.assert_allclose(out, box_blur(image[None])[0], atol=1e-6)


def test_translate_tiled_refuses_a_run_that_changes_shape() -> None:
    image = np.zeros((3, 32, 32), np.float32)
    with pytest.raises(ValueError, match="shape"):
        translate_tiled(image, lambda b: b[:, :, :-1], tile=16, overlap=4, multiple=4, max_batch=2)
