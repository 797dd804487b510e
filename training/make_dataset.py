"""Write a built-in synthetic pair to disk in the standard unaligned layout, ground truth included.

testA/ and testB/ hold the same scenes seen in each domain, so testA_to_B/<name> is the true
translation of testA/<name> (and testB_to_A/ likewise), matched by file name.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from .synthetic import get_pair


def write_synthetic_dataset(
    name: str, out: Path, *, size: int, n_train: int, n_test: int, seed: int
) -> dict[str, int]:
    pair = get_pair(name)
    folders = {
        sub: Path(out) / sub
        for sub in ("trainA", "trainB", "testA", "testB", "testA_to_B", "testB_to_A")
    }
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)

    def save(sub: str, index: int, scene_domain: str, render_domain: str, split: str) -> None:
        scene = pair.scene(seed=seed, split=split, domain=scene_domain, index=index, size=size)
        Image.fromarray(pair.render(scene, render_domain)).save(folders[sub] / f"{index:06d}.png")

    for i in range(n_train):
        save("trainA", i, "A", "A", "train")
        save("trainB", i, "B", "B", "train")
    for i in range(n_test):
        save("testA", i, "A", "A", "test")
        save("testB", i, "B", "B", "test")
        save("testA_to_B", i, "A", "B", "test")
        save("testB_to_A", i, "B", "A", "test")
    meta = {"pair": name, "A": pair.domain_a, "B": pair.domain_b, "size": size, "seed": seed}
    (Path(out) / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
    return {sub: len(list(folder.iterdir())) for sub, folder in folders.items()}


PHOTOS_DATASET = "photos"  # `unpaired datasets make photos`: real photos, not a synthetic pair


def write_photo_dataset(out: Path) -> dict[str, int]:
    """The real photos installed packages ship (models.sample_photos) as domain A of a folder
    dataset: trainA/ all but the held-out ones, testA/ those (never trained on), at their own
    size. A one-way teacher of photos (`vintage`) distils on it."""
    from models.sample_photos import HELD_OUT, available, load_photo

    photos = available()
    if not photos:
        raise ValueError("no sample photos here: the photos dataset needs scikit-image")
    counts = {"trainA": 0, "testA": 0}
    for photo in photos:
        split = "testA" if photo.name in HELD_OUT else "trainA"
        folder = Path(out) / split
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(load_photo(photo.name)).save(folder / f"{photo.name}.png")
        counts[split] += 1
    meta = {"photos": [p.name for p in photos], "held_out": list(HELD_OUT)}
    (Path(out) / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
    return counts
