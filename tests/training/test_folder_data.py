"""The folder dataset: clear errors, deterministic keyed samples, and survival of bad files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.folder_data import (
    DatasetError,
    Sample,
    Transform,
    UnalignedFolderDataset,
    scan_images,
    unaligned_test_pairs,
)

SMALL = Transform(size=8, load_size=12, preprocess="resize_and_crop", flip=True)


def write_image(path: Path, size: tuple[int, int] = (16, 16), seed: int = 0) -> Path:
    """Random-noise RGB PNG, so different crops give different tensors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3))
    Image.fromarray(noise.astype(np.uint8)).save(path)
    return path


def make_root(tmp_path: Path, n_a: int = 3, n_b: int = 2, phase: str = "train") -> Path:
    root = tmp_path / "data"
    for i in range(n_a):
        write_image(root / f"{phase}A" / f"a{i}.png", seed=i)
    for i in range(n_b):
        write_image(root / f"{phase}B" / f"b{i}.png", seed=100 + i)
    return root


def name(sample: Sample, key: str) -> str:
    value = sample[key]
    assert isinstance(value, str)
    return Path(value).name


def tensor(sample: Sample, key: str) -> torch.Tensor:
    value = sample[key]
    assert isinstance(value, torch.Tensor)
    return value


def corrupt(path: Path) -> None:
    path.write_bytes(b"not an image at all")


# --- scanning -----------------------------------------------------------------------------


def test_scan_is_sorted_recursive_and_filters(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    for rel in ["b.png", "a.JPG", "sub/c.png", ".hidden.png", ".cache/d.png", "notes.txt"]:
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    names = [p.relative_to(folder).as_posix() for p in scan_images(folder)]
    assert names == ["a.JPG", "b.png", "sub/c.png"]


def test_missing_folder_error_names_folder_and_layout(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_image(root / "trainB" / "b.png")
    with pytest.raises(DatasetError, match=r"trainA does not exist.*DATAROOT/trainA"):
        UnalignedFolderDataset(root, transform=SMALL)


def test_empty_folder_error(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    for p in (root / "trainB").iterdir():
        p.unlink()
    (root / "trainB" / "readme.txt").write_text("hi")
    with pytest.raises(DatasetError, match=r"trainB contains no image files"):
        UnalignedFolderDataset(root, transform=SMALL)


def test_path_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        scan_images(tmp_path / "f")


# --- indexing -----------------------------------------------------------------------------


def test_len_and_serial_pairing_wraps(tmp_path: Path) -> None:
    root = make_root(tmp_path, n_a=3, n_b=2)
    ds = UnalignedFolderDataset(root, transform=SMALL, pairing="serial")
    assert len(ds) == 3
    pairs = [(name(ds[k], "A_path"), name(ds[k], "B_path")) for k in range(7)]
    assert pairs[:3] == [("a0.png", "b0.png"), ("a1.png", "b1.png"), ("a2.png", "b0.png")]
    assert pairs[3:6] == pairs[:3]  # key 3 = epoch 1, index 0
    assert pairs[6] == pairs[0]


def test_same_key_same_sample_across_instances(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    one = UnalignedFolderDataset(root, transform=SMALL, seed=5)[4]
    two = UnalignedFolderDataset(root, transform=SMALL, seed=5)[4]
    assert one["A_path"] == two["A_path"] and one["B_path"] == two["B_path"]
    assert torch.equal(tensor(one, "A"), tensor(two, "A"))
    assert torch.equal(tensor(one, "B"), tensor(two, "B"))


def test_samples_do_not_touch_global_rngs(tmp_path: Path) -> None:
    ds = UnalignedFolderDataset(make_root(tmp_path), transform=SMALL)
    np.random.seed(0)
    torch.manual_seed(0)
    first = tensor(ds[1], "A")
    np.random.seed(123)
    torch.manual_seed(123)
    assert torch.equal(first, tensor(ds[1], "A"))


def test_different_epochs_give_different_crops_of_same_file(tmp_path: Path) -> None:
    ds = UnalignedFolderDataset(make_root(tmp_path), transform=SMALL)
    samples = [ds[k * len(ds)] for k in range(6)]
    assert {s["A_path"] for s in samples} == {samples[0]["A_path"]}
    distinct = {tensor(s, "A").numpy().tobytes() for s in samples}
    assert len(distinct) > 1


def test_random_pairing_is_seeded_and_covers_b(tmp_path: Path) -> None:
    root = make_root(tmp_path, n_a=2, n_b=5)
    ds = UnalignedFolderDataset(root, transform=SMALL, pairing="random", seed=1)
    picks = [ds[k]["B_path"] for k in range(40)]
    assert len(set(picks)) >= 4
    other = UnalignedFolderDataset(root, transform=SMALL, pairing="random", seed=2)
    assert picks != [other[k]["B_path"] for k in range(40)]
    expected = int(np.random.default_rng([1, 17, 0]).integers(5))
    assert name(ds[17], "B_path") == f"b{expected}.png"


def test_sample_shapes_and_range(tmp_path: Path) -> None:
    ds = UnalignedFolderDataset(make_root(tmp_path, phase="test"), phase="test", transform=SMALL)
    sample = ds[0]
    for domain in ("A", "B"):
        t = sample[domain]
        assert isinstance(t, torch.Tensor)
        assert t.shape == (3, 8, 8) and t.dtype == torch.float32
        assert t.min() >= -1.0 and t.max() <= 1.0


def test_default_collate_batches_samples(tmp_path: Path) -> None:
    ds = UnalignedFolderDataset(make_root(tmp_path), transform=SMALL)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["A"].shape == (2, 3, 8, 8) and len(batch["B_path"]) == 2


def test_negative_key_rejected(tmp_path: Path) -> None:
    ds = UnalignedFolderDataset(make_root(tmp_path), transform=SMALL)
    with pytest.raises(IndexError):
        ds[-1]


# --- unreadable files ---------------------------------------------------------------------


def test_corrupt_file_is_skipped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_root(tmp_path, n_a=3, n_b=1)
    corrupt(root / "trainA" / "a1.png")
    ds = UnalignedFolderDataset(root, transform=SMALL, pairing="serial")
    with caplog.at_level(logging.WARNING):
        first = ds[1]
        second = ds[1 + len(ds)]
    assert name(first, "A_path") == "a2.png"
    assert name(second, "A_path") == "a2.png"
    assert tensor(first, "A").shape == (3, 8, 8)
    warnings = [r for r in caplog.records if "a1.png" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def test_truncated_file_substitution_wraps(tmp_path: Path) -> None:
    root = make_root(tmp_path, n_a=3, n_b=1)
    last = root / "trainA" / "a2.png"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    ds = UnalignedFolderDataset(root, transform=SMALL, pairing="serial")
    assert name(ds[2], "A_path") == "a0.png"


def test_all_files_corrupt_raises(tmp_path: Path) -> None:
    root = make_root(tmp_path, n_a=2, n_b=1)
    for p in (root / "trainA").iterdir():
        corrupt(p)
    ds = UnalignedFolderDataset(root, transform=SMALL)
    with pytest.raises(DatasetError, match=r"no readable images left in .*trainA"):
        ds[0]


def test_validate_drops_bad_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_root(tmp_path, n_a=3, n_b=2)
    corrupt(root / "trainA" / "a0.png")
    corrupt(root / "trainB" / "b1.png")
    ds = UnalignedFolderDataset(root, transform=SMALL, pairing="serial")
    with caplog.at_level(logging.WARNING):
        dropped = ds.validate()
    assert sorted(p.name for p, _ in dropped) == ["a0.png", "b1.png"]
    assert all(reason for _, reason in dropped)
    assert [p.name for p in ds.files_A] == ["a1.png", "a2.png"]
    assert [p.name for p in ds.files_B] == ["b0.png"]
    assert len(ds) == 2
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
    assert ds.validate() == []  # nothing left to drop, no new warnings needed


def test_validate_raises_when_domain_empties(tmp_path: Path) -> None:
    root = make_root(tmp_path, n_a=1, n_b=2)
    corrupt(root / "trainA" / "a0.png")
    ds = UnalignedFolderDataset(root, transform=SMALL)
    with pytest.raises(DatasetError, match="trainA"):
        ds.validate()


# --- transforms ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        (Transform(size=16, load_size=20, preprocess="resize_and_crop"), (16, 16)),
        (Transform(size=16, preprocess="resize_and_crop"), (16, 16)),
        (Transform(size=16, preprocess="resize"), (16, 16)),
        (Transform(size=16, preprocess="crop"), (16, 16)),
        (Transform(size=16, preprocess="none"), (256, 380)),
    ],
)
@pytest.mark.parametrize("flip", [False, True])
def test_transform_shapes_on_odd_image(
    transform: Transform, expected: tuple[int, int], flip: bool
) -> None:
    img = Image.new("RGB", (383, 257), (200, 10, 10))  # width 383, height 257
    t = Transform(
        size=transform.size,
        load_size=transform.load_size,
        preprocess=transform.preprocess,
        flip=flip,
    )(img, np.random.default_rng(0))
    assert t.shape == (3, *expected)
    assert t.shape[1] % 4 == 0 and t.shape[2] % 4 == 0


def test_crop_upscales_small_images() -> None:
    t = Transform(size=16, preprocess="crop")(Image.new("RGB", (10, 30)), np.random.default_rng(0))
    assert t.shape == (3, 16, 16)


def test_none_keeps_multiple_of_four_and_minimum() -> None:
    rng = np.random.default_rng(0)
    assert Transform(size=8, preprocess="none")(Image.new("RGB", (64, 32)), rng).shape == (
        3,
        32,
        64,
    )
    assert Transform(size=8, preprocess="none")(Image.new("RGB", (3, 2)), rng).shape == (3, 4, 4)


def test_flip_mirrors_and_is_rng_driven() -> None:
    img = Image.new("RGB", (8, 8), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 4, 8))  # left half white
    transform = Transform(size=8, preprocess="resize", flip=True)
    outs = [transform(img, np.random.default_rng(s))[0, 0, 0].item() for s in range(20)]
    assert set(outs) == {-1.0, 1.0}
    unflipped = Transform(size=8, preprocess="resize", flip=False)
    assert unflipped(img, np.random.default_rng(0))[0, 0, 0].item() == 1.0


def test_transform_validation() -> None:
    with pytest.raises(ValueError, match="load_size"):
        Transform(size=16, load_size=8, preprocess="resize_and_crop")
    with pytest.raises(ValueError, match="preprocess"):
        Transform(size=16, preprocess="scale_width")  # type: ignore[arg-type]


# --- evaluation pairs ---------------------------------------------------------------------


def test_unaligned_test_pairs_match_by_name(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for name in ["x.png", "y.jpg", "z.png"]:
        write_image(root / "testA" / name, size=(4, 4))
    write_image(root / "testA_to_B" / "x.png", size=(4, 4))
    write_image(root / "testA_to_B" / "y.png", size=(4, 4))  # same stem, different suffix
    pairs = unaligned_test_pairs(root, "AtoB")
    got = [(a.name, b.name if b else None) for a, b in pairs]
    assert got == [("x.png", "x.png"), ("y.jpg", "y.png"), ("z.png", None)]
    assert all(b is None or b.parent.name == "testA_to_B" for _, b in pairs)


def test_unaligned_test_pairs_btoa_without_truth_and_missing(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_image(root / "testB" / "q.png", size=(4, 4))
    assert unaligned_test_pairs(root, "BtoA") == [(root / "testB" / "q.png", None)]
    with pytest.raises(DatasetError, match="testA"):
        unaligned_test_pairs(root, "AtoB")
