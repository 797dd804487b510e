"""Real photos that ship inside installed packages: the one list the web page's examples, the
CPU student's training data, export's parity checks and the benchmarks draw from.

Nothing is downloaded: scikit-image keeps these files in its wheel (`skimage/data/*.png`,
`*.jpg`), read here by file name. Where scikit-image is not installed (the torch-free API
image), there are none.
Grey photos are real photos too; they come back as three equal channels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import numpy as np
from PIL import Image

__all__ = ["HELD_OUT", "PHOTOS", "SamplePhoto", "available", "load_photo", "photo_size"]


@dataclass(frozen=True)
class SamplePhoto:
    name: str
    file: str  # in skimage/data
    title: str


PHOTOS: dict[str, SamplePhoto] = {
    p.name: p
    for p in (
        SamplePhoto("astronaut", "astronaut.png", "Eileen Collins, astronaut (NASA)"),
        SamplePhoto("chelsea", "chelsea.png", "Chelsea the cat"),
        SamplePhoto("coffee", "coffee.png", "A cup of coffee"),
        SamplePhoto("rocket", "rocket.jpg", "A rocket on its launch pad (NASA)"),
        SamplePhoto("motorcycle", "motorcycle_left.png", "A motorcycle (Middlebury stereo)"),
        SamplePhoto("retina", "retina.jpg", "A human retina"),
        SamplePhoto("hubble", "hubble_deep_field.jpg", "The Hubble deep field (NASA)"),
        SamplePhoto("tissue", "ihc.png", "A tissue sample under the microscope"),
        SamplePhoto("camera", "camera.png", "A cameraman"),
        SamplePhoto("moon", "moon.png", "The surface of the moon"),
        SamplePhoto("coins", "coins.png", "Greek coins"),
        SamplePhoto("brick", "brick.png", "A brick wall"),
        SamplePhoto("grass", "grass.png", "Grass"),
        SamplePhoto("gravel", "gravel.png", "Gravel"),
    )
}
# Photos a student is never trained on, so its fidelity is measured on what it has not seen.
HELD_OUT = ("chelsea", "coffee")


def _folder() -> Traversable | None:
    try:
        return resources.files("skimage.data")
    except ModuleNotFoundError:
        return None


def available() -> list[SamplePhoto]:
    """The photos this installation has (none without scikit-image)."""
    folder = _folder()
    return [p for p in PHOTOS.values() if folder is not None and (folder / p.file).is_file()]


def _open(name: str) -> Image.Image:
    """Photo `name` opened lazily (its header read, its pixels not yet decoded)."""
    if name not in PHOTOS:
        raise KeyError(name)
    folder = _folder()
    if folder is None:
        raise KeyError(f"{name}: scikit-image is not installed")
    with (folder / PHOTOS[name].file).open("rb") as file:
        return Image.open(io.BytesIO(file.read()))


def photo_size(name: str) -> tuple[int, int]:
    """(width, height) of photo `name`, from its header: listing the photos decodes none."""
    return _open(name).size


def load_photo(name: str) -> np.ndarray:
    """Photo `name` as uint8 RGB (H, W, 3); KeyError for a name not in PHOTOS."""
    return np.asarray(_open(name).convert("RGB"))
