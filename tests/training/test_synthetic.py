"""The built-in pairs: deterministic, unpaired for training, truthful for testing, and not
solvable by a per-pixel colour lookup."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio

from training.make_dataset import write_synthetic_dataset
from training.synthetic import PAIRS, get_pair, pair_names

pair_name = pytest.mark.parametrize("name", sorted(PAIRS))


def render(name: str, split: str, domain: str, index: int, *, seed: int = 0, size: int = 64):
    pair = get_pair(name)
    scene = pair.scene(seed=seed, split=split, domain=domain, index=index, size=size)
    return pair.render(scene, domain), scene


def test_at_least_three_pairs() -> None:
    assert len(pair_names()) >= 3
    with pytest.raises(ValueError, match="built-in pairs: "):
        get_pair("horse2zebra")


@pair_name
def test_deterministic_by_seed(name: str) -> None:
    a, _ = render(name, "train", "A", 3)
    again, _ = render(name, "train", "A", 3)
    other_seed, _ = render(name, "train", "A", 3, seed=1)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, again)
    assert not np.array_equal(a, other_seed)


@pair_name
def test_training_domains_are_unpaired_and_test_domains_paired(name: str) -> None:
    _, scene_a = render(name, "train", "A", 0)
    _, scene_b = render(name, "train", "B", 0)
    assert not np.array_equal(scene_a.labels, scene_b.labels)
    _, test_a = render(name, "test", "A", 0)
    _, test_b = render(name, "test", "B", 0)
    assert np.array_equal(test_a.labels, test_b.labels)
    _, train_a = render(name, "train", "A", 0)
    assert not np.array_equal(test_a.labels, train_a.labels)  # held-out split


@pair_name
def test_appearance_changes_a_lot_but_not_per_pixel(name: str) -> None:
    """Identity is a poor guess (low PSNR), and equal A colours map to different B colours:
    the mapping depends on geometry, not only on the pixel's colour."""
    pair = get_pair(name)
    psnrs, spatial = [], False
    for i in range(8):
        _, scene = render(name, "test", "A", i)
        a, b = pair.render(scene, "A"), pair.render(scene, "B")
        psnrs.append(peak_signal_noise_ratio(b, a, data_range=255))
        colours_a = a.reshape(-1, 3)
        colours_b = b.reshape(-1, 3)
        for colour in np.unique(colours_a, axis=0)[:20]:
            hits = np.all(colours_a == colour, axis=1)
            if len(np.unique(colours_b[hits], axis=0)) > 1:
                spatial = True
    assert np.mean(psnrs) < 20
    assert spatial


@pair_name
def test_shapes_keep_their_place(name: str) -> None:
    """Geometry is preserved: in both domains the shapes cover the same pixels, and nothing
    changes further than a cast shadow's few pixels away from a shape."""
    pair = get_pair(name)
    _, scene = render(name, "test", "A", 5)
    inside = scene.labels > 0
    near = ndimage.binary_dilation(inside, structure=np.ones((3, 3), bool), iterations=4)
    empty = type(scene)(labels=np.zeros_like(scene.labels), colours=scene.colours)
    for domain in "AB":
        image = pair.render(scene, domain).astype(int)
        background = pair.render(empty, domain).astype(int)
        changed = np.abs(image - background).sum(-1) > 0
        assert (changed & inside).sum() >= 0.95 * inside.sum()
        assert not (changed & ~near).any()


def test_make_writes_the_layout_with_ground_truth(tmp_path: Path) -> None:
    counts = write_synthetic_dataset("flat2relief", tmp_path, size=32, n_train=3, n_test=2, seed=4)
    assert counts == {
        "trainA": 3,
        "trainB": 3,
        "testA": 2,
        "testB": 2,
        "testA_to_B": 2,
        "testB_to_A": 2,
    }
    pair = get_pair("flat2relief")
    scene = pair.scene(seed=4, split="test", domain="A", index=1, size=32)
    truth = np.asarray(Image.open(tmp_path / "testA_to_B" / "000001.png"))
    assert np.array_equal(truth, pair.render(scene, "B"))
    source = np.asarray(Image.open(tmp_path / "testA" / "000001.png"))
    assert np.array_equal(source, pair.render(scene, "A"))
