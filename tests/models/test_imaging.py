"""The shared image convention: every file a user might hand us becomes the RGB they expect."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.imaging import (
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    UnsupportedImageError,
    array_to_tensor,
    decode_image_bytes,
    image_to_tensor,
    is_image_file,
    load_image,
    split_alpha,
    tensor_to_array,
    tensor_to_image,
    to_rgb,
)


def pixels(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img).astype(int)


def gray16(value: int, mode: str = "I;16") -> Image.Image:
    img = Image.new(mode, (3, 2))
    img.putdata([value] * 6)
    return img


# --- modes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [(0, 0), (65535, 255), (32768, 128), (257 * 77, 77), (200, 1)]
)
@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I"])
def test_16bit_gray_scales_by_type_range(mode: str, value: int, expected: int) -> None:
    assert (pixels(to_rgb(gray16(value, mode))) == expected).all()


def test_16bit_png_from_disk_is_not_clipped_white(tmp_path: Path) -> None:
    ramp = (np.arange(16, dtype=np.uint16) * 4369).reshape(4, 4)  # 0 .. 65535
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    out = pixels(load_image(tmp_path / "deep.png"))
    np.testing.assert_array_equal(out[..., 0], np.rint(ramp / 257))
    assert out[..., 0].min() == 0 and out[..., 0].max() == 255


def test_int32_beyond_16_bits_scales_by_int32_max() -> None:
    img = Image.new("I", (2, 1))
    img.putdata([2**31 - 1, -5])
    np.testing.assert_array_equal(pixels(to_rgb(img))[0, :, 0], [255, 0])


@pytest.mark.parametrize(
    ("values", "expected"),
    [([0.0, 0.5, 1.0, -0.2], [0, 128, 255, 0]), ([0.0, 100.0, 255.0, 400.0], [0, 100, 255, 255])],
)
def test_float_gray_rule(values: list[float], expected: list[int]) -> None:
    img = Image.new("F", (4, 1))
    img.putdata(values)
    np.testing.assert_array_equal(pixels(to_rgb(img))[0, :, 1], expected)


def test_gray_and_bilevel_become_rgb() -> None:
    assert (pixels(to_rgb(Image.new("L", (2, 2), 77))) == 77).all()
    assert (pixels(to_rgb(Image.new("1", (2, 2), 1))) == 255).all()


def test_rgba_half_transparent_red_over_white_and_black() -> None:
    img = Image.new("RGBA", (2, 2), (255, 0, 0, 128))
    assert tuple(pixels(to_rgb(img))[0, 0]) == (255, 127, 127)
    assert tuple(pixels(to_rgb(img, background=(0, 0, 0)))[0, 0]) == (128, 0, 0)


def test_la_composites_over_background() -> None:
    img = Image.new("LA", (1, 1), (0, 0))  # fully transparent black
    assert tuple(pixels(to_rgb(img, background=(10, 20, 30)))[0, 0]) == (10, 20, 30)


def test_palette_with_transparency_from_disk(tmp_path: Path) -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putdata([0, 1])
    img.save(tmp_path / "pal.png", transparency=1)
    loaded = load_image(tmp_path / "pal.png")
    np.testing.assert_array_equal(pixels(loaded)[0], [[255, 0, 0], [255, 255, 255]])
    with Image.open(tmp_path / "pal.png") as raw:
        colour, alpha = split_alpha(raw)
    assert alpha is not None and np.asarray(alpha).tolist() == [[255, 0]]
    np.testing.assert_array_equal(pixels(colour)[0], [[255, 0, 0], [0, 0, 255]])  # not blended


def test_palette_without_transparency() -> None:
    img = Image.new("P", (1, 1))
    img.putpalette([12, 34, 56] + [0] * 765)
    assert split_alpha(img)[1] is None
    assert tuple(pixels(to_rgb(img))[0, 0]) == (12, 34, 56)


def test_pa_mode() -> None:
    img = Image.new("PA", (1, 1))
    img.putpalette([0, 200, 0] + [0] * 765)
    img.putpixel((0, 0), (0, 0))
    colour, alpha = split_alpha(img)
    assert alpha is not None and alpha.getpixel((0, 0)) == 0
    assert tuple(pixels(colour)[0, 0]) == (0, 200, 0)
    assert tuple(pixels(to_rgb(img))[0, 0]) == (255, 255, 255)


def test_cmyk_ycbcr_lab_hsv_convert_to_colour() -> None:
    assert tuple(pixels(to_rgb(Image.new("CMYK", (1, 1), (0, 255, 255, 0))))[0, 0]) == (255, 0, 0)
    red = pixels(to_rgb(Image.new("YCbCr", (1, 1), (76, 85, 255))))[0, 0]
    assert red[0] > 250 and red[1] < 5 and red[2] < 5
    assert tuple(pixels(to_rgb(Image.new("HSV", (1, 1), (0, 255, 255))))[0, 0]) == (255, 0, 0)
    white = pixels(to_rgb(Image.new("LAB", (1, 1), (255, 128, 128))))[0, 0]
    assert (white >= 250).all()


def test_cmyk_jpeg_from_disk(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 8), (0, 0, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    out = pixels(load_image(tmp_path / "c.jpg"))[4, 4]
    assert out[0] > 240 and out[1] > 240 and out[2] < 20  # yellow


def test_split_alpha_keeps_alpha_and_colour_untouched() -> None:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(5, 7, 4), dtype=np.uint8)
    colour, alpha = split_alpha(Image.fromarray(rgba))
    assert alpha is not None and alpha.mode == "L"
    np.testing.assert_array_equal(np.asarray(alpha), rgba[..., 3])
    np.testing.assert_array_equal(np.asarray(colour), rgba[..., :3])
    assert split_alpha(Image.new("RGB", (2, 2)))[1] is None


def test_unsupported_mode_raises() -> None:
    # Every mode Pillow can construct is handled, so feed the mode dispatcher a fake image.
    from types import SimpleNamespace

    from models.imaging import colour_to_rgb

    with pytest.raises(UnsupportedImageError, match="BGR;15"):
        colour_to_rgb(SimpleNamespace(mode="BGR;15"))  # type: ignore[arg-type]


def test_bad_background_rejected() -> None:
    with pytest.raises(ValueError, match="background"):
        to_rgb(Image.new("RGBA", (1, 1)), background=(0, 0, 300))


# --- orientation --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_6_rotates(tmp_path: Path, suffix: str) -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 0, 0), (0, 0, 8, 8))  # mark the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / f"o{suffix}", exif=exif, quality=95)
    out = load_image(tmp_path / f"o{suffix}")
    assert out.size == (20, 40)
    assert pixels(out)[2, 17][0] > 200  # the mark is now top-right
    assert pixels(out)[2, 2][0] < 50


def test_split_alpha_orients_colour_and_alpha_together(tmp_path: Path) -> None:
    img = Image.new("RGBA", (4, 2), (0, 0, 0, 255))
    img.putpixel((0, 0), (255, 0, 0, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "a.png", exif=exif)
    with Image.open(tmp_path / "a.png") as raw:
        colour, alpha = split_alpha(raw)
    assert colour.size == (2, 4) and alpha is not None and alpha.size == (2, 4)
    assert colour.getpixel((1, 0)) == (255, 0, 0) and alpha.getpixel((1, 0)) == 10


# --- decoding -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "fmt"), [(".png", "PNG"), (".jpg", "JPEG"), (".bmp", "BMP"), (".webp", "WEBP")]
)
def test_load_image_formats(tmp_path: Path, ext: str, fmt: str) -> None:
    Image.new("RGB", (6, 4), (10, 200, 30)).save(tmp_path / f"x{ext}", format=fmt, quality=100)
    out = load_image(tmp_path / f"x{ext}")
    assert out.mode == "RGB" and out.size == (6, 4)
    assert np.abs(pixels(out)[2, 3] - [10, 200, 30]).max() <= 3


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_fails_at_load(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    path = tmp_path / f"cut.{fmt.lower()}"
    Image.fromarray(noise).save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="cut") as info:
        load_image(path)
    assert info.value.path == path


def test_text_file_with_png_suffix(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(ImageDecodeError, match=r"notes\.png"):
        load_image(path)


def test_missing_file_is_decode_error(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="nope"):
        load_image(tmp_path / "nope.png")


def test_decode_error_is_value_error_and_pickles() -> None:
    err = ImageDecodeError("/x/y.png", "broken")
    assert isinstance(err, ValueError) and "/x/y.png" in str(err) and "broken" in str(err)
    back = pickle.loads(pickle.dumps(err))
    assert back.path == err.path and back.reason == "broken"


def test_decode_image_bytes(tmp_path: Path) -> None:
    Image.new("LA", (3, 3), (0, 0)).save(tmp_path / "la.png")
    out = decode_image_bytes((tmp_path / "la.png").read_bytes())
    assert (pixels(out) == 255).all()
    with pytest.raises(ImageDecodeError, match=r"upload\.png"):
        decode_image_bytes(b"garbage", name="upload.png")


def test_image_extensions() -> None:
    assert {".png", ".jpg", ".jpeg", ".tga", ".pnm", ".webp"} <= IMAGE_EXTENSIONS
    assert is_image_file("a/B.JPG") and is_image_file("x.TiFf")
    assert not is_image_file("notes.txt") and not is_image_file("png")


# --- tensors ------------------------------------------------------------------------------


def test_round_trip_is_exact_for_every_uint8_value() -> None:
    values = np.arange(256, dtype=np.uint8)
    arr = np.stack([values, values[::-1], np.roll(values, 7)], axis=-1).reshape(16, 16, 3)
    img = Image.fromarray(arr)
    t = image_to_tensor(img)
    assert t.shape == (3, 16, 16) and t.dtype == torch.float32
    assert t.min() == -1.0 and t.max() == 1.0
    np.testing.assert_array_equal(np.asarray(tensor_to_image(t)), arr)


def test_tensor_values_and_layout() -> None:
    img = Image.new("RGB", (2, 1), (0, 255, 51))
    t = image_to_tensor(img)
    torch.testing.assert_close(t[:, 0, 0], torch.tensor([-1.0, 1.0, 51 / 127.5 - 1]))


def test_tensor_to_image_clamps_rounds_and_handles_nan() -> None:
    t = torch.tensor([[[-3.0, 3.0, 0.0, float("nan")]]]).expand(3, 1, 4)
    out = np.asarray(tensor_to_image(t))[0, :, 0]
    np.testing.assert_array_equal(out, [0, 255, 128, 128])
    t2 = torch.full((3, 1, 1), (100.4 / 127.5) - 1)
    assert np.asarray(tensor_to_image(t2))[0, 0, 0] == 100


def test_batched_array_variants_and_shape_errors() -> None:
    batch = np.random.default_rng(2).integers(0, 256, size=(2, 4, 5, 3), dtype=np.uint8)
    t = array_to_tensor(batch)
    assert t.shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(tensor_to_array(t.requires_grad_()), batch)
    with pytest.raises(ValueError, match="uint8"):
        array_to_tensor(batch.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        tensor_to_image(t)
    with pytest.raises(ValueError, match="to_rgb"):
        image_to_tensor(Image.new("L", (2, 2)))


def test_a_folders_images_follow_one_rule(tmp_path: Path) -> None:
    """Recursive, any-case image suffixes, hidden files and folders skipped, cycles ended."""
    from models.imaging import find_images, is_listed_image

    for name in ("b.PNG", "a.jpg", "sub/c.webp", ".hidden.png", "._mac.jpg", ".git/d.png",
                 "sub/.cache/e.png", "notes.txt"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a.jpg", "b.PNG", "sub/c.webp"]  # sub/loop/ is the root again: not twice
    assert is_listed_image("cats/a.JPEG") and not is_listed_image("cats/.x/a.png")
    assert not is_listed_image("a.txt")
