"""Training data: one dataset interface over user folders and synthetic pairs, and a sampler
that makes every batch a pure function of (seed, step, rank).

Datasets take an integer *key* = epoch * len + index, and derive all their randomness (pairing,
crops, flips) from (seed, key). The sampler maps a step to keys. So a run resumed at step s
sees exactly the batches the uninterrupted run saw, with no iterator state to save.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from models.imaging import image_to_tensor

from .config import TrainConfig
from .folder_data import Transform, UnalignedFolderDataset
from .synthetic import SyntheticPair, get_pair

Sample = dict[str, Tensor | str]


class SyntheticTrainDataset(Dataset[Sample]):
    """A built-in pair rendered on the fly: A and B come from independent scene streams."""

    def __init__(
        self, pair: SyntheticPair, *, size: int, n: int, seed: int, flip: bool, pairing: str
    ) -> None:
        self.pair, self.size, self.n, self.seed = pair, size, n, seed
        self.flip, self.pairing = flip, pairing

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: int) -> Sample:
        index = key % self.n
        index_b = index
        if self.pairing == "random":
            index_b = int(np.random.default_rng([self.seed, key, 0]).integers(self.n))
        return {
            "A": self._render("A", index, np.random.default_rng([self.seed, key, 1])),
            "B": self._render("B", index_b, np.random.default_rng([self.seed, key, 2])),
        }

    def _render(self, domain: str, index: int, rng: np.random.Generator) -> Tensor:
        scene = self.pair.scene(
            seed=self.seed, split="train", domain=domain, index=index, size=self.size
        )
        image = Image.fromarray(self.pair.render(scene, domain))
        if self.flip and rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image_to_tensor(image)


def build_train_dataset(cfg: TrainConfig) -> Dataset[Sample]:
    if cfg.dataset is not None:
        return SyntheticTrainDataset(
            get_pair(cfg.dataset),
            size=cfg.size,
            n=cfg.n_train,
            seed=cfg.seed,
            flip=cfg.flip,
            pairing=cfg.pairing,
        )
    assert cfg.dataroot is not None
    transform = Transform(
        size=cfg.size,
        load_size=cfg.resolved_load_size,
        preprocess=cfg.preprocess,
        flip=cfg.flip,
    )
    dataset = UnalignedFolderDataset(
        Path(cfg.dataroot), phase="train", transform=transform, pairing=cfg.pairing, seed=cfg.seed
    )
    dataset.validate()  # drop unreadable files up front, with one warning each
    return dataset


@dataclass(frozen=True)
class StepSampler(Sampler[list[int]]):
    """Yields, for steps start..stop-1, this rank's batch of dataset keys.

    Global sample number n = (step * world + rank) * batch + j walks through epochs of a
    seeded permutation, so ranks never overlap and any step can be produced directly.
    """

    length: int
    batch_size: int
    seed: int
    start_step: int
    stop_step: int
    rank: int = 0
    world_size: int = 1

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.stop_step):
            yield self.keys(step)

    def __len__(self) -> int:
        return max(0, self.stop_step - self.start_step)

    def keys(self, step: int) -> list[int]:
        first = (step * self.world_size + self.rank) * self.batch_size
        return [self._key(n) for n in range(first, first + self.batch_size)]

    def _key(self, n: int) -> int:
        epoch, position = divmod(n, self.length)
        return epoch * self.length + int(
            _epoch_permutation(self.length, self.seed, epoch)[position]
        )


@lru_cache(maxsize=4)
def _epoch_permutation(length: int, seed: int, epoch: int) -> Tensor:
    """The seeded sample order of one epoch (cached: every step of the epoch reads it)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(length, generator=generator)
