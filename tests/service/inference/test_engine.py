"""The inference engine: any size and mode in, same size out; backends agree; batching is exact."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from skimage import data

from models import build_generator
from models.manifest import ManifestError
from service.errors import EngineError
from service.inference import admission
from service.inference.engine import Engine, EngineOptions
from service.inference.image_io import DecodedImage, decode_image, from_network, to_network
from service.store.model_store import ModelStore, StoredModel


@pytest.fixture
def model(model_store: Path) -> StoredModel:
    return ModelStore(model_store).open("tiny")


def photo(height: int, width: int, offset: int = 0) -> DecodedImage:
    rgb = data.astronaut()[offset : offset + height, offset : offset + width]
    return DecodedImage(rgb=np.ascontiguousarray(rgb))


def reference(model: StoredModel, direction: str, rgb: np.ndarray) -> np.ndarray:
    """The PyTorch generator on the image padded by hand: what the engine must reproduce."""
    net = build_generator("resnet_6blocks", ngf=4)
    net.load_state_dict(load_file(model.path(model.direction(direction).weights)))
    h, w = rgb.shape[:2]
    H, W = max(-(-h // 4) * 4, 8), max(-(-w // 4) * 4, 8)
    x = np.pad(to_network([rgb]), ((0, 0), (0, 0), (0, H - h), (0, W - w)), mode="reflect")
    with torch.no_grad():
        y = net.eval()(torch.from_numpy(x)).numpy()
    return from_network(y[:, :, :h, :w])[0]


@pytest.mark.parametrize("size", [(257, 383), (64, 64), (5, 3), (1, 1), (31, 200)])
def test_output_keeps_the_input_size_and_matches_pytorch(model: StoredModel, size) -> None:  # type: ignore[no-untyped-def]
    image = photo(*size)
    (out,) = Engine(model, "AtoB").translate([image])
    assert out.rgb.shape == (*size, 3) and out.rgb.dtype == np.uint8
    if size == (1, 1):
        return  # a flat image: instance norm divides rounding noise by sqrt(eps); no reference
    assert np.abs(out.rgb.astype(int) - reference(model, "AtoB", image.rgb)).max() <= 1


def test_directions_are_different_networks(model: StoredModel) -> None:
    image = photo(48, 48)
    (a,) = Engine(model, "AtoB").translate([image])
    (b,) = Engine(model, "BtoA").translate([image])
    assert np.abs(a.rgb.astype(int) - b.rgb).mean() > 1
    assert np.abs(b.rgb.astype(int) - reference(model, "BtoA", image.rgb)).max() <= 1


def test_mixed_sizes_in_one_call_equal_one_at_a_time(model: StoredModel) -> None:
    engine = Engine(model, "AtoB", EngineOptions(max_batch=2))
    images = [photo(40, 52, 0), photo(37, 49, 5), photo(40, 52, 9), photo(64, 24, 3), photo(40, 52)]
    together = engine.translate(images)
    alone = [engine.translate([image])[0] for image in images]
    for a, b, image in zip(together, alone, images, strict=True):
        assert a.rgb.shape == image.rgb.shape
        assert np.array_equal(a.rgb, b.rgb)


def test_alpha_is_carried_through_untouched(model: StoredModel) -> None:
    rgba = np.dstack([photo(30, 34).rgb, np.arange(30 * 34, dtype=np.uint8).reshape(30, 34)])
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG")
    image = decode_image(buffer.getvalue())
    (out,) = Engine(model, "AtoB").translate([image])
    assert out.alpha is not None and np.array_equal(out.alpha, rgba[..., 3])
    assert np.abs(out.rgb.astype(int) - reference(model, "AtoB", rgba[..., :3])).max() <= 1


def test_torch_and_onnx_backends_agree(model: StoredModel) -> None:
    images = [photo(44, 60), photo(33, 33, 7)]
    onnx_out = Engine(model, "BtoA", EngineOptions(backend="onnx")).translate(images)
    torch_engine = Engine(model, "BtoA", EngineOptions(backend="torch"))
    assert torch_engine.describe()["backend"] == "torch"
    for a, b in zip(onnx_out, torch_engine.translate(images), strict=True):
        assert np.abs(a.rgb.astype(int) - b.rgb).max() <= 1


def test_fp16_graph_runs_close_to_fp32(model: StoredModel) -> None:
    image = photo(48, 64)
    fp16 = Engine(model, "AtoB", EngineOptions(device="cpu", precision="fp16"))
    assert fp16.describe()["precision"] == "fp16"
    (a,) = fp16.translate([image])
    (b,) = Engine(model, "AtoB", EngineOptions(device="cpu")).translate([image])
    assert np.abs(a.rgb.astype(int) - b.rgb).max() <= 3


def test_onnx_on_cpu_uses_the_cpu_provider_with_set_threads(model: StoredModel) -> None:
    engine = Engine(model, "AtoB", EngineOptions(device="cpu", threads=1))
    runner = engine.runner
    assert runner.device == "cpu" and runner.precision == "fp32"
    assert runner.session.get_providers() == ["CPUExecutionProvider"]  # type: ignore[attr-defined]
    assert runner.session.get_session_options().intra_op_num_threads == 1  # type: ignore[attr-defined]


@pytest.mark.skipif(
    torch.cuda.is_available() or "CUDAExecutionProvider" in ort.get_available_providers(),
    reason="checks the error on a machine without CUDA",
)
@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_cuda_without_a_gpu_is_a_clear_error(model: StoredModel, backend: str) -> None:
    with pytest.raises(EngineError, match="CUDA"):
        Engine(model, "AtoB", EngineOptions(backend=backend, device="cuda"))  # type: ignore[arg-type]


def test_run_checks_the_batch_shape(model: StoredModel) -> None:
    engine = Engine(model, "AtoB")
    with pytest.raises(EngineError, match="multiples of 4"):
        engine.run(np.zeros((1, 3, 30, 32), np.float32))
    with pytest.raises(EngineError, match=r"\(N, 3, H, W\)"):
        engine.run(np.zeros((3, 32, 32), np.float32))
    out = engine.run(np.zeros((19, 3, 8, 12), np.float32))  # more than max_batch: chunked
    assert out.shape == (19, 3, 8, 12)


def test_unknown_direction_is_a_clear_error(model: StoredModel) -> None:
    with pytest.raises(ManifestError, match="has no direction 'sideways'"):
        Engine(model, "sideways")


def test_tile_must_fit_the_model(model: StoredModel) -> None:
    with pytest.raises(EngineError, match="multiple of 4"):
        Engine(model, "AtoB", EngineOptions(tile=130))


# --- tiling ---------------------------------------------------------------------------------

TILED = {"max_untiled_pixels": 64 * 64, "tile": 128, "tile_overlap": 64}


def stationary_photo(height: int, width: int) -> DecodedImage:
    """A real texture (gravel) in three shifted channels: colour everywhere, no large regions."""
    g = data.gravel()[:height, :width]
    rgb = np.dstack([g, np.roll(g, 50, axis=0), np.roll(g, 70, axis=1)])
    return DecodedImage(rgb=np.ascontiguousarray(rgb))


def interior_diff(a: DecodedImage, b: DecodedImage, margin: int = 16) -> np.ndarray:
    return np.abs(a.rgb.astype(int) - b.rgb)[margin:-margin, margin:-margin]


@pytest.mark.parametrize("picture", [photo, stationary_photo])
def test_tiles_with_the_images_statistics_match_the_untiled_translation(
    model: StoredModel, picture
) -> None:  # type: ignore[no-untyped-def]
    """Seams: tiles share the whole image's statistics (thumbnail = the image itself here), so
    the tiled result differs from one untiled pass only through each tile's cut-off context,
    which the blended overlap hides. 16 px from the border: 99% of values within 2 levels (of
    255), none off by more than 6, mean <= 0.5 (measured: 2, 5, 0.23-0.25)."""
    image = picture(256, 320)
    (untiled,) = Engine(model, "AtoB").translate([image])
    tiled_engine = Engine(model, "AtoB", EngineOptions(**TILED, thumbnail_pixels=10**6))
    (tiled,) = tiled_engine.translate([image])
    diff = interior_diff(tiled, untiled)
    assert np.percentile(diff, 99) <= 2 and diff.max() <= 6 and diff.mean() <= 0.5


def test_thumbnail_statistics_beat_per_tile_statistics(
    model: StoredModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 512 px photo, tiled, its statistics from a 256 px thumbnail: measured mean difference
    to the untiled pass 4.8 levels, against 14.7 when each tile uses its own statistics (a
    random-init network is far more sensitive to them than a trained one)."""
    image = photo(512, 512)
    (untiled,) = Engine(model, "AtoB").translate([image])
    engine = Engine(model, "AtoB", EngineOptions(**TILED, thumbnail_pixels=256 * 256))
    (thumbnail_stats,) = engine.translate([image])
    monkeypatch.setattr(engine.runner, "shares_stats", False)
    (per_tile_stats,) = engine.translate([image])
    with_thumbnail = interior_diff(thumbnail_stats, untiled).mean()
    assert with_thumbnail <= 6
    assert interior_diff(per_tile_stats, untiled).mean() > 2 * with_thumbnail


def test_a_4000x3000_photo_is_translated_in_bounded_tiles(model: StoredModel) -> None:
    rgb = np.asarray(Image.fromarray(data.astronaut()).resize((4000, 3000)))
    engine = Engine(model, "AtoB", EngineOptions(max_batch=4))  # defaults: 1 MP, 512 px tiles
    calls: list[tuple[int, ...]] = []
    run_shared = engine.runner.run_shared

    def spy(batch: np.ndarray, stats: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        calls.append(batch.shape)
        return run_shared(batch, stats)

    engine.runner.run_shared = spy  # type: ignore[method-assign]
    (out,) = engine.translate([DecodedImage(rgb=np.ascontiguousarray(rgb))])
    assert out.rgb.shape == (3000, 4000, 3)
    thumbnail, *tiles = calls
    assert thumbnail[0] == 1 and thumbnail[2] * thumbnail[3] <= 1024 * 1024
    assert tiles and all(n <= 4 and h <= 512 and w <= 512 for n, _, h, w in tiles)


def test_the_memory_a_tiled_image_reserves_covers_its_statistics_pass(model: StoredModel) -> None:
    """The statistics pass runs the network on a thumbnail of up to 1 Mpx, twice the pixels of
    a CPU's batch of two 512x512 tiles: the reservation was sized by the tile batch alone (an
    under-reservation of ~0.7 GB for a real ResNet-9 at width 64)."""
    engine = Engine(model, "AtoB", EngineOptions(device="cpu"))  # 1 Mpx thumbnail, 2 tiles
    architecture = model.manifest.architecture
    assert architecture is not None and engine.runner.shares_stats
    per_network_pixel = 24 + admission.ACTIVATION_BYTES_PER_CHANNEL * architecture.ngf
    thumbnail = 1000 * 1000  # the largest 4:3 view of 4000x3000 within 1 Mpx
    assert engine.working_bytes(3000, 4000) >= 4000 * 3000 * 16 + thumbnail * per_network_pixel
    smaller = Engine(model, "AtoB", EngineOptions(device="cpu", thumbnail_pixels=256 * 256))
    assert smaller.working_bytes(3000, 4000) < engine.working_bytes(3000, 4000)


def test_precision_the_model_lacks_is_a_clear_error(model: StoredModel) -> None:
    with pytest.raises(EngineError, match="has no int8 graph; export it with --int8"):
        Engine(model, "AtoB", EngineOptions(precision="int8"))
    with pytest.raises(EngineError, match="onnx backend"):
        Engine(model, "AtoB", EngineOptions(backend="torch", precision="int8"))
