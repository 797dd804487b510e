"""Score a run's translations against ground truth: PSNR and SSIM of G(x) vs. the true y, next
to the identity baseline (x itself vs. the true y), for both directions.

Scores are taken on the 8-bit images a user would get, not on float tensors. Only pairs with a
known mapping (the synthetic ones, or a user's testA_to_B/ and testB_to_A/) can be scored;
unpaired learning is scored on what it can identify, so a direction whose target texture has
an arbitrary phase is capped below what its colour change alone would allow.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as nnf
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn

from models import input_multiple
from models.imaging import image_to_tensor, load_image, tensor_to_image
from models.manifest import Architecture
from models.registry import build_from_architecture

from . import checkpoint as ckpt
from .config import TrainConfig, load_config
from .ema import EMA_SUFFIX
from .folder_data import DatasetError, unaligned_test_pairs
from .synthetic import get_pair

DIRECTIONS = ("AtoB", "BtoA")
ImagePair = tuple[Image.Image, Image.Image]  # (input, ground truth)


@dataclass(frozen=True)
class DirectionScore:
    n: int
    psnr: float
    ssim: float
    baseline_psnr: float
    baseline_ssim: float

    @property
    def gain_db(self) -> float:
        return self.psnr - self.baseline_psnr


@dataclass(frozen=True)
class Evaluation:
    run_dir: str
    checkpoint: str
    step: int
    directions: dict[str, DirectionScore]
    weights: str = "raw"  # "ema": the generators' moving averages

    def to_dict(self) -> dict[str, object]:
        return {
            "run_dir": self.run_dir,
            "checkpoint": self.checkpoint,
            "step": self.step,
            "weights": self.weights,
            "directions": {
                d: {**asdict(s), "gain_db": round(s.gain_db, 4)} for d, s in self.directions.items()
            },
        }


def generator_architecture(cfg: TrainConfig) -> Architecture:
    """The generator a run trains, as the manifest of an exported model records it."""
    return Architecture(
        generator=cfg.generator, ngf=cfg.ngf, norm=cfg.norm, use_dropout=cfg.dropout
    )


_NET_OF = {"AtoB": "G", "BtoA": "F"}  # a run's checkpoint names its generators so


def load_run_generators(
    run_dir: Path, device: torch.device, *, ema: bool = True
) -> tuple[TrainConfig, Path, dict[str, nn.Module]]:
    """The run's config and its latest generators by direction (G: AtoB, F: BtoA; a one-sided
    run has one), in eval mode: their moving averages where the run kept them, unless `ema` is
    False."""
    checkpoint = ckpt.latest_checkpoint(run_dir)
    cfg = load_config(checkpoint / ckpt.CONFIG_FILE)
    architecture = generator_architecture(cfg)
    suffix = EMA_SUFFIX if generator_weights(checkpoint, ema=ema) == "ema" else ""
    nets = {d: build_from_architecture(architecture) for d in cfg.directions}
    ckpt.load_weights(checkpoint, {_NET_OF[d] + suffix: net for d, net in nets.items()})
    for net in nets.values():
        net.to(device).eval()
    return cfg, checkpoint, nets


def generator_weights(checkpoint: Path, *, ema: bool) -> Literal["ema", "raw"]:
    """Which generators a run's checkpoint is read with: the moving averages when asked for
    and kept, else the last step's weights."""
    return "ema" if ema and has_ema_weights(checkpoint) else "raw"


def has_ema_weights(checkpoint: Path) -> bool:
    """Whether the checkpoint holds the generators' moving averages (``G_ema.*``, ``F_ema.*``)."""
    from safetensors import safe_open

    with safe_open(str(checkpoint / ckpt.WEIGHTS_FILE), framework="pt") as weights:
        return any(key.split(".")[0].endswith(EMA_SUFFIX) for key in weights.keys())  # noqa: SIM118


@torch.inference_mode()
def translate(
    net: nn.Module, images: list[Image.Image], multiple: int, device: torch.device
) -> list[Image.Image]:
    """Translate same-sized images in one batch, padding (reflect) to the network's multiple."""
    batch = torch.stack([image_to_tensor(im) for im in images]).to(device)
    h, w = batch.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h or pad_w:
        # reflect needs the pad narrower than the image; tiny images fall back to replicate
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        batch = nnf.pad(batch, (0, pad_w, 0, pad_h), mode=mode)
    out = net(batch)[..., :h, :w].float().cpu()
    return [tensor_to_image(t) for t in out]


def score(
    pairs: Iterable[ImagePair],
    net: nn.Module,
    multiple: int,
    device: torch.device,
    batch_size: int = 16,
) -> DirectionScore:
    psnr, ssim, base_psnr, base_ssim = [], [], [], []
    for chunk in _same_size_chunks(pairs, batch_size):
        inputs = [x for x, _ in chunk]
        outputs = translate(net, inputs, multiple, device)
        for (x, truth), y in zip(chunk, outputs, strict=True):
            t = np.asarray(truth)
            psnr.append(_psnr(np.asarray(y), t))
            ssim.append(_ssim(np.asarray(y), t))
            base_psnr.append(_psnr(np.asarray(x), t))
            base_ssim.append(_ssim(np.asarray(x), t))
    if not psnr:
        raise DatasetError("no test images with ground truth to score")
    return DirectionScore(
        n=len(psnr),
        psnr=float(np.mean(psnr)),
        ssim=float(np.mean(ssim)),
        baseline_psnr=float(np.mean(base_psnr)),
        baseline_ssim=float(np.mean(base_ssim)),
    )


def _psnr(image: np.ndarray, truth: np.ndarray) -> float:
    if np.array_equal(image, truth):
        return 100.0  # identical images: cap instead of infinity so means stay finite
    return float(peak_signal_noise_ratio(truth, image, data_range=255))


def _ssim(image: np.ndarray, truth: np.ndarray) -> float:
    return float(structural_similarity(truth, image, channel_axis=2, data_range=255))


def _same_size_chunks(pairs: Iterable[ImagePair], size: int) -> Iterator[list[ImagePair]]:
    chunk: list[ImagePair] = []
    for pair in pairs:
        if chunk and (len(chunk) == size or chunk[0][0].size != pair[0].size):
            yield chunk
            chunk = []
        if pair[0].size != pair[1].size:
            raise DatasetError(
                f"ground truth size {pair[1].size} differs from input {pair[0].size}"
            )
        chunk.append(pair)
    if chunk:
        yield chunk


def folder_pairs(root: Path, direction: str) -> Iterator[ImagePair]:
    for source, truth in unaligned_test_pairs(root, direction):  # type: ignore[arg-type]
        if truth is not None:
            yield load_image(source), load_image(truth)


def synthetic_pairs(
    name: str, direction: str, *, n: int, size: int, seed: int
) -> Iterator[ImagePair]:
    pair = get_pair(name)
    src, dst = ("A", "B") if direction == "AtoB" else ("B", "A")
    for i in range(n):
        scene = pair.scene(seed=seed, split="test", domain=src, index=i, size=size)
        yield Image.fromarray(pair.render(scene, src)), Image.fromarray(pair.render(scene, dst))


def evaluate_run(
    run_dir: Path,
    *,
    dataroot: Path | None = None,
    dataset: str | None = None,
    n_test: int = 200,
    size: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    ema: bool = True,
) -> Evaluation:
    """Score the directions of the run's latest checkpoint on a folder or a synthetic pair
    (with its generators' moving averages where it kept them, unless `ema` is False)."""
    if (dataroot is None) == (dataset is None):
        raise DatasetError(
            "give exactly one of --dataroot (a folder) or --dataset (a built-in pair)"
        )
    dev = torch.device(device)
    cfg, checkpoint, nets = load_run_generators(run_dir, dev, ema=ema)
    weights = generator_weights(checkpoint, ema=ema)
    multiple = input_multiple(cfg.generator)
    scores = {}
    for direction in nets:
        if dataroot is not None:
            pairs = folder_pairs(dataroot, direction)
        else:
            assert dataset is not None
            pairs = synthetic_pairs(dataset, direction, n=n_test, size=size or cfg.size, seed=seed)
        scores[direction] = score(pairs, nets[direction], multiple, dev)
    step = ckpt.checkpoint_step(checkpoint)
    return Evaluation(str(run_dir), str(checkpoint), step, scores, weights)
