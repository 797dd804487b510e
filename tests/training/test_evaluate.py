from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from training.evaluate import evaluate_run, score, synthetic_pairs, translate
from training.runner import train


def test_identity_network_scores_exactly_the_baseline() -> None:
    pairs = list(synthetic_pairs("day2night", "AtoB", n=4, size=32, seed=0))
    s = score(pairs, nn.Identity(), 4, torch.device("cpu"))
    assert s.n == 4 and s.psnr == pytest.approx(s.baseline_psnr) and s.gain_db == pytest.approx(0)


def test_psnr_of_a_known_error() -> None:
    """Every pixel off by 16 levels: PSNR = 20 log10(255 / 16)."""
    truth = Image.fromarray(np.full((8, 8, 3), 100, np.uint8))
    source = Image.fromarray(np.full((8, 8, 3), 116, np.uint8))
    s = score([(source, truth)], nn.Identity(), 4, torch.device("cpu"))
    assert s.psnr == pytest.approx(20 * np.log10(255 / 16), abs=1e-6)


def test_odd_sizes_are_padded_and_cropped_back() -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 23, 3), np.uint8))
    seen: list[tuple[int, ...]] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(tuple(x.shape))
            return x

    (out,) = translate(Probe(), [image], 16, torch.device("cpu"))
    assert seen == [(1, 3, 48, 32)]
    assert out.size == image.size and np.array_equal(np.asarray(out), np.asarray(image))


def test_evaluate_a_trained_run(tiny_config) -> None:  # type: ignore[no-untyped-def]
    cfg = tiny_config(max_steps=2)
    train(cfg, progress=False)
    report = evaluate_run(Path(cfg.out), dataset="flat2relief", n_test=3).to_dict()
    assert report["step"] == 2
    assert set(report["directions"]) == {"AtoB", "BtoA"}  # type: ignore[arg-type]


def test_images_smaller_than_the_padding_still_translate() -> None:
    image = Image.fromarray(np.full((5, 6, 3), 7, np.uint8))
    (out,) = translate(nn.Identity(), [image], 16, torch.device("cpu"))
    assert out.size == (6, 5) and np.array_equal(np.asarray(out), np.asarray(image))
