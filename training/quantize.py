"""int8 graphs for CPU serving: static quantization calibrated on images of the model's domain.

On a CPU an fp32 ResNet generator runs near the arithmetic peak, so onnxruntime and PyTorch
are equally fast at 256x256; int8 (VNNI/AMX) is how a CPU serves faster. Weights are quantized
per channel and activations per tensor (QDQ format, MinMax calibration on real images of the
source domain), instance norm stays in float. Quantization is lossy, so the exporter measures
its fidelity (PSNR against the fp32 PyTorch output on held-out images) and refuses a graph
below a floor: on the trained day2night model it is ~40 dB, and the int8 graph scores the same
PSNR against ground truth as fp32.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from models.imaging import array_to_tensor, load_image
from models.manifest import INPUT_NAME
from models.sample_photos import load_photo

from .config import TrainConfig
from .folder_data import scan_images
from .synthetic import get_pair

__all__ = ["DomainSamples", "natural_photos", "psnr_db", "quantize_int8", "run_samples"]


@dataclass(frozen=True)
class DomainSamples:
    """uint8 (H, W, 3) images of a direction's source domain: to calibrate, and to measure."""

    calibration: list[np.ndarray]
    holdout: list[np.ndarray]


def _fit(image: Image.Image, size: int) -> np.ndarray:
    return np.asarray(ImageOps.fit(image, (size, size), Image.Resampling.BICUBIC))


def natural_photos(size: int = 256) -> DomainSamples:
    """Photos shipped with scikit-image: for models whose training images are not at hand."""
    from skimage import data

    names = ("astronaut", "chelsea", "coffee", "rocket", "tissue", "camera")
    photos = [load_photo(name) for name in names]
    photos += [np.ascontiguousarray(data.colorwheel()[..., :3]), load_photo("retina")]
    fitted = [_fit(Image.fromarray(p), size) for p in photos]
    return DomainSamples(calibration=fitted[:6], holdout=fitted[6:])


def run_samples(
    cfg: TrainConfig, direction: str, *, n_calibration: int = 16, n_holdout: int = 8
) -> DomainSamples:
    """The run's own source-domain images at its training size (train split to calibrate, test
    split, when there is one, to measure)."""
    domain = "A" if direction == "AtoB" else "B"
    if cfg.dataset is not None:
        pair = get_pair(cfg.dataset)

        def render(split: str, n: int) -> list[np.ndarray]:
            scenes = (
                pair.scene(seed=cfg.seed, split=split, domain=domain, index=i, size=cfg.size)
                for i in range(n)
            )
            return [pair.render(scene, domain) for scene in scenes]

        return DomainSamples(render("train", n_calibration), render("test", n_holdout))
    assert cfg.dataroot is not None
    train = scan_images(cfg.dataroot / f"train{domain}")
    test_dir = cfg.dataroot / f"test{domain}"
    test = scan_images(test_dir) if test_dir.is_dir() else train[n_calibration:]
    load = [_fit(load_image(p), cfg.size) for p in (*train[:n_calibration], *test[:n_holdout])]
    holdout = load[n_calibration:] or load[:n_holdout]
    return DomainSamples(load[: min(n_calibration, len(train))], holdout)


def to_batch(images: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 images of one size -> float32 (N, 3, H, W) in [-1, 1] (the shared convention)."""
    return array_to_tensor(np.stack(images)).numpy()


def psnr_db(actual: np.ndarray, expected: np.ndarray) -> float:
    """PSNR of network outputs in [-1, 1] (peak-to-peak 2)."""
    mse = float(np.mean((actual.astype(np.float64) - expected) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)


def quantize_int8(fp32_path: Path, out_path: Path, calibration: Sequence[np.ndarray]) -> None:
    """Write the int8 (QDQ) version of the graph at `fp32_path`, calibrated on `calibration`."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = (to_batch([image]) for image in calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    root = logging.getLogger()  # the quantizer logs advice through the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        _quantize(fp32_path, out_path, Reader())
    finally:
        root.setLevel(level)


def _quantize(fp32_path: Path, out_path: Path, reader: object) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(  # calibrates in its own temporary folder
        str(fp32_path),
        str(out_path),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        calibration_providers=["CPUExecutionProvider"],
    )
