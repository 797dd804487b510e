"""What a student trains on: the teacher's own output for exactly the input it is shown."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.imaging import tensor_to_image
from training.config import TrainConfig
from training.distill import DistillDataset, TeacherRecord, build_teacher_cache


def _lopsided(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """A teacher that is not mirror-symmetric (it brightens the right-hand side), as a trained
    generator is not, in detail: cropping or mirroring its output is not its output."""
    out = []
    for image in images:
        ramp = np.linspace(0, 120, image.shape[1])[None, :, None]
        out.append(np.clip(image.astype(np.float64) * 0.5 + ramp, 0, 255).astype(np.uint8))
    return out


def test_every_training_pair_is_the_teachers_output_on_that_input(tmp_path: Path) -> None:
    cfg = TrainConfig(model="distill", teacher="t", dataset="day2night", size=24, n_train=4,
                      distill_holdout=2, flip=True, out=tmp_path)  # fmt: skip
    teacher = TeacherRecord(name="t", kind="model", sha256={"AtoB": "a", "BtoA": "b"},
                            architecture=None,
                            translate={"AtoB": _lopsided, "BtoA": _lopsided})  # fmt: skip
    cache = build_teacher_cache(cfg, teacher, tmp_path)
    dataset = DistillDataset(cache)
    assert len(dataset) == 8  # four images, each also mirrored
    for key in range(0, len(dataset), 2):  # each crop, then its mirror image
        crop, mirror = (np.asarray(tensor_to_image(dataset[k]["A"])) for k in (key, key + 1))
        assert np.array_equal(mirror, crop[:, ::-1])


def test_folder_images_of_any_size_become_crops_at_random_scales(tmp_path: Path) -> None:
    """Each image at a scale between the crop and its own size, cropped, then mirrored."""
    from PIL import Image

    from training.distill import training_inputs

    rng = np.random.default_rng(0)
    for domain in ("A", "B"):
        (tmp_path / f"train{domain}").mkdir()
        for index, (w, h) in enumerate([(40, 60), (200, 96), (24, 24)]):
            pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / f"train{domain}" / f"{index}.png")
    cfg = TrainConfig(model="distill", teacher="t", dataroot=tmp_path, size=24, n_train=3,
                      flip=True, out=tmp_path / "run")  # fmt: skip
    crops = list(training_inputs(cfg, "AtoB"))
    assert len(crops) == 6 and all(c.shape == (24, 24, 3) for c in crops)
    for crop, mirror in zip(crops[::2], crops[1::2], strict=True):
        assert np.array_equal(mirror, crop[:, ::-1])
    # an image of the crop's size is its own crop, at any scale the draw picks
    assert np.array_equal(crops[4], np.asarray(Image.open(tmp_path / "trainA" / "2.png")))
    again = list(training_inputs(cfg, "AtoB"))
    assert all(np.array_equal(a, b) for a, b in zip(crops, again, strict=True))  # seeded
    # several crops per image, each its own draw; the first is the one a single crop gives
    many = list(training_inputs(cfg.model_copy(update={"distill_crops": 3}), "AtoB"))
    assert len(many) == 18
    assert np.array_equal(many[0], crops[0]) and np.array_equal(many[6], crops[2])
    assert not np.array_equal(many[0], many[2])  # two crops of the 40x60 image


def test_recoloured_crops_cover_colours_the_photos_lack(tmp_path: Path) -> None:
    """With distill_colour, a grey photo's crops come tinted and a colour photo's in other
    tones, each crop its own seeded draw (and its mirror the same colours); without it, the
    crops are the photo's own pixels."""
    from PIL import Image

    from training.distill import training_inputs

    (tmp_path / "trainA").mkdir()
    ramp = np.tile(np.linspace(30, 220, 32, dtype=np.uint8)[None, :, None], (32, 1, 3))
    Image.fromarray(ramp).save(tmp_path / "trainA" / "grey.png")  # three equal channels
    cfg = TrainConfig(model="distill", teacher="t", dataroot=tmp_path, size=32, n_train=1,
                      flip=True, distill_crops=4, out=tmp_path / "run")  # fmt: skip
    plain = list(training_inputs(cfg, "AtoB"))
    assert all(np.array_equal(c, ramp) or np.array_equal(c, ramp[:, ::-1]) for c in plain)
    recoloured = list(training_inputs(cfg.model_copy(update={"distill_colour": 0.5}), "AtoB"))
    assert len(recoloured) == 8 and all(c.dtype == np.uint8 for c in recoloured)
    for crop, mirror in zip(recoloured[::2], recoloured[1::2], strict=True):
        assert np.array_equal(mirror, crop[:, ::-1])
        channels = crop.reshape(-1, 3).mean(0)
        assert channels.max() - channels.min() > 2  # tinted: no longer grey
    tints = {tuple(np.round(c.reshape(-1, 3).mean(0))) for c in recoloured[::2]}
    assert len(tints) == 4  # each crop its own light
    again = list(training_inputs(cfg.model_copy(update={"distill_colour": 0.5}), "AtoB"))
    assert all(np.array_equal(a, b) for a, b in zip(recoloured, again, strict=True))
