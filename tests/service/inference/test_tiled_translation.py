"""A large image translated in steps: the same pixels as blending it all in float, with memory
bounded by a band of tile rows, and nothing left behind when it is dropped."""

from __future__ import annotations

import numpy as np

from service.inference import image_io, tiling
from service.inference.image_io import DecodedImage
from service.inference.tiled_translation import TiledTranslation, TileGeometry


class HalfRunner:
    """A network stand-in that dims its input (so blending weights matter) and records calls."""

    backend, device, precision, shares_stats = "fake", "cpu", "fp32", False

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        # position-dependent, so a tile's pixels must land where they came from
        return batch * 0.5 + np.linspace(-0.2, 0.2, batch.shape[-1], dtype=np.float32)

    def run_shared(self, batch: np.ndarray, stats: np.ndarray | None) -> tuple[np.ndarray, ...]:
        raise AssertionError("no shared statistics for this network")


def _image(height: int, width: int) -> DecodedImage:
    rng = np.random.default_rng(0)
    return DecodedImage(rgb=rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_steps_give_the_pixels_of_blending_the_whole_padded_image_in_float() -> None:
    image = _image(301, 150)  # padded to 304 x 152 (multiple 4): reflect padding by index
    geometry = TileGeometry(tile=64, overlap=16, multiple=4, batch=3)
    runner = HalfRunner()
    job = TiledTranslation(image, runner, padded=(304, 152), geometry=geometry, thumbnail=None)
    steps = job.steps_left
    widest_band = 0
    while not job.done:
        job.step()
        widest_band = max(widest_band, job._blender.band_rows)
    out = job.result()

    padded = tiling.pad_to(image_io.to_network([image.rgb]), 304, 152)[0]
    blended = tiling.translate_tiled(padded, runner, tile=64, overlap=16, multiple=4, max_batch=3)
    expected = image_io.from_network(tiling.crop_to(blended[None], 301, 150))[0]
    np.testing.assert_array_equal(out.rgb, expected)
    assert out.rgb.shape == (301, 150, 3)
    assert runner.calls == 2 * steps  # each step one call (and the same again for the check)
    assert widest_band <= 2 * 64, f"held {widest_band} rows of float sums"


def test_a_tall_narrow_image_batches_many_tile_rows_in_one_call() -> None:
    image = _image(1000, 64)  # one tile a row: a batch of 8 spans 8 rows of tiles
    geometry = TileGeometry(tile=64, overlap=16, multiple=4, batch=8)
    job = TiledTranslation(
        image, HalfRunner(), padded=(1000, 64), geometry=geometry, thumbnail=None
    )
    out = job.run_to_end()
    padded = image_io.to_network([image.rgb])[0]
    blended = tiling.translate_tiled(
        padded, HalfRunner(), tile=64, overlap=16, multiple=4, max_batch=8
    )
    np.testing.assert_array_equal(out.rgb, image_io.from_network(blended[None])[0])


def test_a_dropped_translation_frees_its_images_and_gives_back_the_runtimes_memory() -> None:
    released: list[bool] = []
    geometry = TileGeometry(tile=64, overlap=16, multiple=4, batch=1)
    job = TiledTranslation(
        _image(256, 256),
        HalfRunner(),
        padded=(256, 256),
        geometry=geometry,
        thumbnail=None,
        on_finish=lambda: released.append(True),
    )
    job.step()
    job.close()
    assert job.done and job._rgb is None and job._output is None
    assert released == [True]
