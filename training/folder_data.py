"""The unaligned folder dataset: CycleGAN's ``trainA/ trainB/ testA/ testB/`` layout.

Samples are addressed by an integer *key* (``epoch * len + index``) and every random choice
(pairing, crop, flip) is drawn from generators seeded with ``(seed, key, stream)``, so a sample
is a pure function of its key: runs are reproducible, resumable, and identical across DataLoader
workers. Unreadable files are substituted deterministically instead of crashing a long run.
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from models.imaging import (
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    find_images,
    image_to_tensor,
    load_image,
)

__all__ = [
    "DatasetError",
    "Preprocess",
    "Sample",
    "Transform",
    "UnalignedFolderDataset",
    "scan_images",
    "unaligned_test_pairs",
]

logger = logging.getLogger(__name__)

Preprocess = Literal["resize_and_crop", "resize", "crop", "none"]
Phase = Literal["train", "test"]
Pairing = Literal["random", "serial"]
Sample = dict[str, torch.Tensor | str]

_LAYOUT_HINT = "expected DATAROOT/trainA, DATAROOT/trainB (and testA, testB for evaluation)"
_SUFFIXES = ", ".join(sorted(s.lstrip(".") for s in IMAGE_EXTENSIONS))


class DatasetError(ValueError):
    """A problem with the user's data folders; the message says what to fix."""


def scan_images(folder: Path, *, hint: str = "") -> list[Path]:
    """All image files under ``folder`` (:func:`models.imaging.find_images`: recursive,
    hidden skipped), sorted by relative path.

    ``hint`` is appended to error messages to say what layout was expected.
    """
    folder = Path(folder)
    suffix = f"; {hint}" if hint else ""
    if not folder.exists():
        raise DatasetError(f"dataset folder {folder} does not exist{suffix}")
    if not folder.is_dir():
        raise DatasetError(f"dataset path {folder} is not a folder{suffix}")
    files = find_images(folder)
    if not files:
        raise DatasetError(
            f"dataset folder {folder} contains no image files (looked recursively for "
            f"{_SUFFIXES}; hidden files are skipped){suffix}"
        )
    return files


def _resize(img: Image.Image, width: int, height: int) -> Image.Image:
    if img.size == (width, height):
        return img
    return img.resize((width, height), Image.Resampling.BICUBIC)


def _random_crop(img: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    width, height = img.size
    left = int(rng.integers(0, width - size + 1))
    top = int(rng.integers(0, height - size + 1))
    return img.crop((left, top, left + size, top + size))


@dataclass(frozen=True, kw_only=True)
class Transform:
    """Image -> training tensor, as upstream CycleGAN's ``--preprocess`` options.

    - ``resize_and_crop``: resize to ``load_size`` x ``load_size``, random crop ``size``.
    - ``resize``: resize to ``size`` x ``size`` (no crop).
    - ``crop``: random ``size`` crop of the original; an image with a side shorter than
      ``size`` is first scaled up (aspect kept, bicubic) so its short side is ``size``. We scale
      rather than reflect-pad because padding invents mirrored content the model would learn.
    - ``none``: keep the image, but resize each side down to a multiple of 4 (at least 4),
      since the networks downsample by 4; the output is then not ``size`` x ``size``.

    Then a horizontal flip with probability 1/2 when ``flip``. All randomness comes from the
    ``rng`` argument.
    """

    size: int
    load_size: int | None = None
    preprocess: Preprocess = "resize_and_crop"
    flip: bool = True

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be positive, got {self.size}")
        if self.preprocess not in ("resize_and_crop", "resize", "crop", "none"):
            raise ValueError(
                f"preprocess must be resize_and_crop, resize, crop or none, got {self.preprocess!r}"
            )
        if self.preprocess == "resize_and_crop" and self.resolved_load_size < self.size:
            raise ValueError(
                f"load_size ({self.load_size}) must be >= size ({self.size}) for resize_and_crop"
            )

    @property
    def resolved_load_size(self) -> int:
        """The resize side used before cropping (``size`` when ``load_size`` is None)."""
        return self.size if self.load_size is None else self.load_size

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        """Return a float32 ``(3, H, W)`` tensor in [-1, 1] (``H = W = size`` unless ``none``)."""
        img = self.geometry(img, rng)
        if self.flip and rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image_to_tensor(img)

    def geometry(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        """The resize / crop step alone (no flip), for callers that want a PIL image."""
        size = self.size
        if self.preprocess == "resize_and_crop":
            load = self.resolved_load_size
            return _random_crop(_resize(img, load, load), size, rng)
        if self.preprocess == "resize":
            return _resize(img, size, size)
        if self.preprocess == "crop":
            width, height = img.size
            if min(width, height) < size:
                scale = size / min(width, height)
                img = _resize(
                    img, max(size, round(width * scale)), max(size, round(height * scale))
                )
            return _random_crop(img, size, rng)
        width, height = img.size  # "none"
        return _resize(img, max(4, width - width % 4), max(4, height - height % 4))


class UnalignedFolderDataset(Dataset[Sample]):
    """Unpaired samples from ``root/{phase}A`` and ``root/{phase}B``.

    ``len`` is ``max(nA, nB)``; any non-negative key is accepted and wraps, so a trainer can
    pass ``epoch * len + i``. With ``i = key % len``: A is ``files_A[i % nA]``; B is
    ``files_B[i % nB]`` (serial) or a uniform draw from ``default_rng([seed, key, 0])``
    (random). The A and B transforms use ``default_rng([seed, key, 1])`` and ``[seed, key, 2]``.

    Files that fail to decode are logged once and replaced by the next readable file of the
    same domain (wrapping); lengths never change after construction except via
    :meth:`validate`, so keys keep their meaning across workers and resumes.
    """

    def __init__(
        self,
        root: Path,
        *,
        phase: Phase = "train",
        transform: Transform,
        pairing: Pairing = "random",
        seed: int = 0,
    ) -> None:
        if phase not in ("train", "test"):
            raise ValueError(f"phase must be 'train' or 'test', got {phase!r}")
        if pairing not in ("random", "serial"):
            raise ValueError(f"pairing must be 'random' or 'serial', got {pairing!r}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.root = Path(root)
        self.phase: Phase = phase
        self.transform = transform
        self.pairing: Pairing = pairing
        self.seed = seed
        self.dir_A = self.root / f"{phase}A"
        self.dir_B = self.root / f"{phase}B"
        self._files: dict[str, list[Path]] = {
            "A": scan_images(self.dir_A, hint=_LAYOUT_HINT),
            "B": scan_images(self.dir_B, hint=_LAYOUT_HINT),
        }
        self._bad: dict[str, dict[Path, str]] = {"A": {}, "B": {}}  # path -> why

    @property
    def files_A(self) -> tuple[Path, ...]:
        return tuple(self._files["A"])

    @property
    def files_B(self) -> tuple[Path, ...]:
        return tuple(self._files["B"])

    def __len__(self) -> int:
        return max(len(self._files["A"]), len(self._files["B"]))

    def __getitem__(self, key: int) -> Sample:
        key = operator.index(key)
        if key < 0:
            raise IndexError(f"dataset keys are non-negative, got {key}")
        i = key % len(self)
        n_b = len(self._files["B"])
        if self.pairing == "serial":
            index_b = i % n_b
        else:
            index_b = int(np.random.default_rng([self.seed, key, 0]).integers(n_b))
        path_a, img_a = self._load("A", i % len(self._files["A"]))
        path_b, img_b = self._load("B", index_b)
        return {
            "A": self.transform(img_a, np.random.default_rng([self.seed, key, 1])),
            "B": self.transform(img_b, np.random.default_rng([self.seed, key, 2])),
            "A_path": str(path_a),
            "B_path": str(path_b),
        }

    def _folder(self, domain: str) -> Path:
        return self.dir_A if domain == "A" else self.dir_B

    def _mark_bad(self, domain: str, path: Path, reason: str) -> None:
        self._bad[domain][path] = reason
        logger.warning("skipping unreadable image %s: %s", path, reason)

    def _load(self, domain: str, index: int) -> tuple[Path, Image.Image]:
        """Decode ``files[index]``, or the next readable file after it (wrapping)."""
        files, bad = self._files[domain], self._bad[domain]
        for offset in range(len(files)):
            path = files[(index + offset) % len(files)]
            if path in bad:
                continue
            try:
                return path, load_image(path)
            except ImageDecodeError as exc:
                self._mark_bad(domain, path, exc.reason)
        raise DatasetError(
            f"no readable images left in {self._folder(domain)}: all {len(files)} files failed "
            "to decode (see the warnings above)"
        )

    def validate(self) -> list[tuple[Path, str]]:
        """Check every file's header, drop the unreadable ones, and return ``(path, reason)``.

        Cheaper than decoding (``Image.verify``), so truncated pixel data may still slip
        through; :meth:`__getitem__` handles those. Call once, before training, since it
        changes ``len`` and therefore what each key means.
        """
        dropped: list[tuple[Path, str]] = []
        for domain in ("A", "B"):
            kept: list[Path] = []
            for path in self._files[domain]:
                reason = self._bad[domain].get(path)
                if reason is None:
                    reason = _verify(path)
                    if reason is None:
                        kept.append(path)
                        continue
                    self._mark_bad(domain, path, reason)
                dropped.append((path, reason))
            if not kept:
                raise DatasetError(
                    f"no readable images left in {self._folder(domain)}: all "
                    f"{len(self._files[domain])} files failed to open (see the warnings above)"
                )
            self._files[domain] = kept
        return dropped


def _verify(path: Path) -> str | None:
    """None if the file's header looks like a valid image, else why not."""
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as exc:  # verify() raises whatever the format plugin hits
        return f"{str(exc) or 'invalid image'} ({type(exc).__name__})"
    return None


def _ground_truth(truth_dir: Path, relative: Path) -> Path | None:
    """``truth_dir/relative`` if present, else the one image with the same stem, else None."""
    exact = truth_dir / relative
    if exact.is_file():
        return exact
    parent = exact.parent
    if not parent.is_dir():
        return None
    matches = sorted(
        p
        for p in parent.iterdir()
        if p.stem == exact.stem and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )
    return matches[0] if len(matches) == 1 else None


def unaligned_test_pairs(
    root: Path, direction: Literal["AtoB", "BtoA"]
) -> list[tuple[Path, Path | None]]:
    """Pair each test input with its ground-truth translation, matched by name.

    AtoB pairs ``testA/<name>`` with ``testA_to_B/<name>``; BtoA pairs ``testB/<name>`` with
    ``testB_to_A/<name>``. A different image suffix with the same stem also matches (inputs
    as .jpg, references as .png) when exactly one such file exists. None where there is no
    ground truth (including a missing ground-truth folder).
    """
    if direction not in ("AtoB", "BtoA"):
        raise ValueError(f"direction must be 'AtoB' or 'BtoA', got {direction!r}")
    source = "A" if direction == "AtoB" else "B"
    target = "B" if source == "A" else "A"
    root = Path(root)
    inputs = root / f"test{source}"
    truth = root / f"test{source}_to_{target}"
    files = scan_images(inputs, hint=f"expected DATAROOT/test{source} for evaluating {direction}")
    return [(path, _ground_truth(truth, path.relative_to(inputs))) for path in files]
