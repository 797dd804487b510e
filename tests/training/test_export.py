"""ONNX export: parity with PyTorch, dynamic shapes, fp16 rules, manifest, .pth import."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from models import IncompatibleCheckpointError, build_generator
from models.imaging import array_to_tensor, tensor_to_array
from models.manifest import MANIFEST_FILE, Architecture, parse_manifest, sha256_file
from models.weight_import import ImportChoices
from tests.conftest import TINY_ARCH, export_tiny_model
from training import export as export_module
from training.export import ExportOptions, ParityError, export_generators, export_pth, export_run

REFERENCE = Path(__file__).parents[1] / "models" / "reference"


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _torch_out(net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def test_exported_graph_matches_pytorch_on_any_batch_and_size(exported_model: Path) -> None:
    manifest = parse_manifest((exported_model / MANIFEST_FILE).read_text(), source="test")
    net = build_generator("resnet_6blocks", ngf=4)
    net.load_state_dict(load_file(exported_model / "AtoB.safetensors"))
    net.eval()
    session = _session(exported_model / "AtoB.onnx")
    rng = np.random.default_rng(0)
    for shape in [(1, 3, 8, 8), (3, 3, 36, 44), (2, 3, 260, 384)]:  # min side, odd, large
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        (y,) = session.run(None, {"input": x})
        assert y.shape == shape
        assert np.abs(y - _torch_out(net, x)).max() <= 1e-4
    assert manifest.parity["AtoB"]["fp32_max_abs"] <= 1e-4


def test_graph_io_has_named_dynamic_axes_and_opset(exported_model: Path) -> None:
    model = onnx.load(exported_model / "BtoA.onnx")
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    for value in (*model.graph.input, *model.graph.output):
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        assert dims == ["batch", 3, "height", "width"]
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    onnx.checker.check_model(model, full_check=True)


def test_tiled_graph_shares_statistics_and_matches_the_plain_graph(exported_model: Path) -> None:
    manifest = parse_manifest((exported_model / MANIFEST_FILE).read_text(), source="test")
    assert manifest.directions["AtoB"].onnx_tiled == "AtoB.tiled.onnx"
    assert manifest.parity["AtoB"]["tiled_max_abs"] <= 1e-4
    model = onnx.load(exported_model / "AtoB.tiled.onnx")
    onnx.checker.check_model(model, full_check=True)
    io_dims = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in (*model.graph.input, *model.graph.output)
    }
    size = io_dims["stats_in"][1]
    assert io_dims == {
        "input": ["batch", 3, "height", "width"],
        "stats_in": ["batch", size],
        "use_stats": [],
        "output": ["batch", 3, "height", "width"],
        "stats": ["batch", size],
    }
    x = np.random.default_rng(3).uniform(-1, 1, (2, 3, 36, 40)).astype(np.float32)
    tiled, plain = (
        _session(exported_model / "AtoB.tiled.onnx"),
        _session(exported_model / "AtoB.onnx"),
    )
    zeros = np.zeros((2, size), np.float32)
    y, stats = tiled.run(None, {"input": x, "stats_in": zeros, "use_stats": np.array(False)})
    assert np.abs(y - plain.run(None, {"input": x})[0]).max() <= 1e-4
    # the first image's statistics given to both: the first output is unchanged
    shared = np.repeat(stats[:1], 2, axis=0)
    y2, _ = tiled.run(None, {"input": x, "stats_in": shared, "use_stats": np.array(True)})
    assert np.abs(y2[0] - y[0]).max() <= 1e-4
    assert np.abs(y2[1] - y[1]).max() > 1e-2


def test_fp16_graph_keeps_instance_norm_and_io_in_fp32(exported_model: Path) -> None:
    model = onnx.load(exported_model / "AtoB.fp16.onnx")
    onnx.checker.check_model(model, full_check=True)
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    types |= {i.name: i.data_type for i in model.graph.initializer}
    types |= {v.name: v.type.tensor_type.elem_type for v in model.graph.input}
    norms = [n for n in model.graph.node if n.op_type == "InstanceNormalization"]
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert norms and convs
    for node in norms:
        assert {types[name] for name in node.input} == {onnx.TensorProto.FLOAT}
    assert {types[c.input[1]] for c in convs} == {onnx.TensorProto.FLOAT16}
    # and the fp16 graph still reproduces the network
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 40, 48)).astype(np.float32)
    (y16,) = _session(exported_model / "AtoB.fp16.onnx").run(None, {"input": x})
    (y32,) = _session(exported_model / "AtoB.onnx").run(None, {"input": x})
    assert y16.dtype == np.float32
    assert np.abs(y16 - y32).max() <= 2e-2


def test_manifest_records_every_file_and_the_rules(exported_model: Path) -> None:
    raw = json.loads((exported_model / MANIFEST_FILE).read_text())
    manifest = parse_manifest(json.dumps(raw), source="test")
    on_disk = {p.name for p in exported_model.iterdir()} - {MANIFEST_FILE}
    assert set(manifest.files) == on_disk
    for name, record in manifest.files.items():
        assert record.sha256 == sha256_file(exported_model / name)
        assert record.bytes == (exported_model / name).stat().st_size
    assert manifest.architecture.model_dump(include=set(TINY_ARCH)) == TINY_ARCH
    assert (manifest.input.multiple, manifest.input.min_side) == (4, 8)
    assert manifest.aliases == ("day2night",)
    assert manifest.domains == {"A": "day", "B": "night"}
    assert manifest.directions["AtoB"].onnx_fp16 == "AtoB.fp16.onnx"
    assert {"torch", "onnx", "onnxruntime", "opset"} <= set(manifest.exporter)
    assert re.match(r"\d{4}-\d\d-\d\dT", raw["created"])


def test_export_refuses_a_graph_that_does_not_reproduce_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_export = export_module.export_graph

    def export_a_different_network(net, architecture, opset):  # type: ignore[no-untyped-def]
        torch.manual_seed(123)
        return real_export(build_generator("resnet_6blocks", ngf=4).eval(), architecture, opset)

    monkeypatch.setattr(export_module, "export_graph", export_a_different_network)
    with pytest.raises(ParityError, match="differs from PyTorch"):
        export_tiny_model(tmp_path)
    assert not (tmp_path / "tiny" / MANIFEST_FILE).exists()


def test_a_graph_the_torchscript_exporter_cannot_make_comes_from_the_dynamo_exporter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TorchScript first (a fraction of a second per graph), dynamo where it fails: an operator
    it lacks, or a torch that no longer has it."""
    real_export = torch.onnx.export
    used: list[bool] = []

    def no_torchscript(*args, dynamo=True, **kwargs):  # type: ignore[no-untyped-def]
        used.append(dynamo)
        if not dynamo:
            raise RuntimeError("no TorchScript exporter here")
        return real_export(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_torchscript)
    folder = export_tiny_model(tmp_path, options=ExportOptions(tiled=False))
    manifest = parse_manifest((folder / MANIFEST_FILE).read_text(), source="test")
    assert set(manifest.directions) == {"AtoB", "BtoA"}
    assert used == [False, True, False, True]  # each graph: TorchScript refused, then dynamo
    inputs = {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim]
              for i in onnx.load(folder / "AtoB.onnx").graph.input}  # fmt: skip
    assert inputs == {"input": ["batch", "", "height", "width"]}  # the names users read


def test_export_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "stray.txt").write_text("x")
    with pytest.raises(export_module.ExportError, match="not empty"):
        export_tiny_model(tmp_path)


def test_export_run_carries_the_training_config(tiny_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from training.runner import train

    cfg = tiny_config(max_steps=2, checkpoint_every=2)
    train(cfg)
    options = ExportOptions(tiled=False)
    manifest = export_run(cfg.out, tmp_path / "model", name="run-model", options=options)
    assert manifest.directions["AtoB"].onnx_tiled is None
    assert manifest.training["config_digest"] == cfg.digest()
    assert manifest.training["checkpoint"].endswith("2")
    assert set(manifest.directions) == {"AtoB", "BtoA"}
    assert manifest.architecture.generator == cfg.generator


def upstream_state_dict(listing: Path) -> dict[str, torch.Tensor]:
    """A state dict with exactly the keys and shapes of a public junyanz checkpoint."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for line in listing.read_text().splitlines():
        key, shape = line.split("\t")
        dims = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
        state[key] = torch.randn(dims, generator=generator) * 0.02
    return state


def test_export_from_public_pth_file(tmp_path: Path) -> None:
    """horse2zebra.pth-style files: upstream keys, old InstanceNorm stats, a DataParallel prefix."""
    state = upstream_state_dict(REFERENCE / "resnet_6blocks_G.keys.txt")
    saved = {f"module.{k}": v for k, v in state.items()}
    saved["module.model.2.running_mean"] = torch.zeros(64)  # pre-0.4 PyTorch checkpoints
    torch.save(saved, tmp_path / "horse2zebra.pth")
    manifest = export_pth(
        {"AtoB": tmp_path / "horse2zebra.pth"},
        tmp_path / "h2z",
        name="h2z",
        options=ExportOptions(tiled=False),
    )
    assert set(manifest.directions) == {"AtoB"}
    assert manifest.architecture == Architecture(
        generator="resnet_6blocks", ngf=64, norm="instance", conv_bias=True
    )
    assert manifest.source is not None and manifest.source.format == "pth"
    recorded = manifest.source.files["AtoB"]
    assert recorded.name == "horse2zebra.pth"
    assert recorded.sha256 == sha256_file(tmp_path / "horse2zebra.pth")
    assert manifest.source.mapping["AtoB"]["first"] == "module.model.1.weight -> model.1.weight"
    net = build_generator("resnet_6blocks")
    net.load_state_dict(state)
    net.eval()
    x = np.random.default_rng(2).uniform(-1, 1, (1, 3, 32, 36)).astype(np.float32)
    (y,) = _session(tmp_path / "h2z" / "AtoB.onnx").run(None, {"input": x})
    assert np.abs(y - _torch_out(net, x)).max() <= 1e-4


def test_export_from_pth_of_another_architecture_names_what_did_not_fit(tmp_path: Path) -> None:
    state = upstream_state_dict(REFERENCE / "resnet_6blocks_G.keys.txt")
    torch.save(state, tmp_path / "six.pth")
    choices = ImportChoices(arch="resnet_9blocks")
    with pytest.raises(IncompatibleCheckpointError, match=r"no generator .* fits") as raised:
        export_pth({"AtoB": tmp_path / "six.pth"}, tmp_path / "m", name="m", choices=choices)
    # the first transposed conv of the ResNet-6 sits where ResNet-9 has its 7th residual block
    assert "layer 16 (model.16) holds {'weight': (256, 128, 3, 3)" in str(raised.value)
    assert "where resnet_9blocks expects {'weight': (256, 256, 3, 3)" in str(raised.value)
    assert not (tmp_path / "m").exists()


def test_imported_details_survive_the_tiled_graph_and_the_torch_backend(tmp_path: Path) -> None:
    """Affine InstanceNorm, a resize-conv decoder and explicit conv bias: the ONNX graph, the
    tiled graph (shared statistics) and the torch backend all run the imported network."""
    from service.inference.engine import Engine, EngineOptions
    from service.inference.image_io import DecodedImage
    from service.store.model_store import ModelStore
    from tests.models.foreign_generators import SequentialResnet, randomised

    source = randomised(SequentialResnet(ngf=4, blocks=2, affine=True, resize="nearest"), 0)
    torch.save(source.state_dict(), tmp_path / "g.pth")
    manifest = export_pth({"AtoB": tmp_path / "g.pth"}, tmp_path / "store" / "m", name="m")
    assert manifest.architecture is not None
    assert (manifest.architecture.norm, manifest.architecture.upsample) == (
        "instance_affine", "nearest",
    )  # fmt: skip
    assert manifest.parity["AtoB"]["tiled_max_abs"] <= 1e-4
    model = ModelStore(tmp_path / "store").open("m")
    photo = np.asarray(Image.fromarray(data_photo()).resize((96, 80)))
    outputs = {}
    for backend, untiled in (("onnx", 10**6), ("torch", 10**6), ("onnx", 2000), ("torch", 2000)):
        options = EngineOptions(backend=backend, device="cpu", max_untiled_pixels=untiled, tile=32,
                                tile_overlap=8)  # fmt: skip
        (out,) = Engine(model, "AtoB", options).translate([DecodedImage(rgb=photo, alpha=None)])
        outputs[(backend, untiled)] = out.rgb.astype(int)
    with torch.no_grad():
        expected = tensor_to_array(source(array_to_tensor(photo[None])))[0].astype(int)
    assert np.abs(outputs[("onnx", 10**6)] - expected).max() <= 1
    assert np.abs(outputs[("torch", 10**6)] - expected).max() <= 1
    # tiled (statistics shared from a thumbnail): the ONNX graph and torch's wrapper agree
    assert np.abs(outputs[("onnx", 2000)] - outputs[("torch", 2000)]).max() <= 1


def test_weights_at_a_trained_models_scale_import_with_their_tiled_graph(tmp_path: Path) -> None:
    """A trained generator's feature maps reach variances in the thousands (vintagify 0.1.2's
    epoch-33 ResNet-9 was refused for it: its statistics, not its outputs, differed by 3.7e-4
    as raw numbers). Weights at that scale import with no flag, tiled graph included."""
    from models.norm_stats import SharedStatsGenerator
    from tests.models.foreign_generators import SequentialResnet, at_trained_scale, randomised

    photos = array_to_tensor(np.stack([data_photo()[:128, :160]] * 2))
    source = randomised(SequentialResnet(ngf=8, blocks=3, affine=True), 1)
    with torch.no_grad():
        before = source(photos)
    source = at_trained_scale(source, photos)
    shared = SharedStatsGenerator(source)
    with torch.no_grad():
        after, stats = shared(*shared.example_inputs(photos))
    assert float(stats.abs().max()) >= 1000  # the scale a trained model's statistics live at
    assert torch.allclose(before, after, atol=1e-2)  # the same network (but for eps)
    torch.save(source.state_dict(), tmp_path / "g.pth")
    manifest = export_pth({"AtoB": tmp_path / "g.pth"}, tmp_path / "m", name="m")
    assert manifest.directions["AtoB"].onnx_tiled == "AtoB.tiled.onnx"
    assert manifest.parity["AtoB"]["tiled_max_abs"] <= 1e-4
    assert manifest.parity["AtoB"]["tiled_stats_error"] <= 1e-4
    tiled = _session(tmp_path / "m" / "AtoB.tiled.onnx")
    x = photos.numpy()
    zeros = np.zeros(stats.shape, np.float32)
    y, measured = tiled.run(None, {"input": x, "stats_in": zeros, "use_stats": np.array(False)})
    assert np.abs(y - after.numpy()).max() <= 1e-4
    assert np.abs(measured - stats.numpy()).max() > 0  # rounding at this scale is visible ...
    assert shared.stats_error(torch.from_numpy(measured), stats) <= 1e-4  # ... and harmless


def data_photo() -> np.ndarray:
    from skimage import data

    return data.chelsea()


def test_export_generators_rejects_unknown_directions(tmp_path: Path) -> None:
    arch = Architecture(**TINY_ARCH)
    with pytest.raises(export_module.ExportError, match="directions"):
        export_generators(
            {"XtoY": build_generator("resnet_6blocks", ngf=4)},
            tmp_path / "m",
            name="m",
            architecture=arch,
            options=ExportOptions(),
        )


def test_int8_graph_is_quantized_measured_and_served(tmp_path: Path) -> None:
    from service.inference.engine import Engine, EngineOptions
    from service.inference.image_io import DecodedImage
    from service.store.model_store import ModelStore

    options = ExportOptions(int8=True, int8_min_psnr=10, tiled=False)
    folder = export_tiny_model(tmp_path, "q", options=options)
    manifest = parse_manifest((folder / MANIFEST_FILE).read_text(), source="test")
    assert manifest.directions["AtoB"].onnx_int8 == "AtoB.int8.onnx"
    assert manifest.parity["AtoB"]["int8_psnr_db"] >= 10
    ops = {n.op_type for n in onnx.load(folder / "AtoB.int8.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "InstanceNormalization"} <= ops
    ModelStore(tmp_path / "store").publish(folder)
    model = ModelStore(tmp_path / "store").open("q")
    image = DecodedImage(rgb=np.full((20, 28, 3), 90, np.uint8))
    engine = Engine(model, "AtoB", EngineOptions(device="cpu", precision="int8"))
    assert engine.describe()["precision"] == "int8"
    assert engine.translate([image])[0].rgb.shape == (20, 28, 3)


def test_int8_below_the_fidelity_floor_is_refused(tmp_path: Path) -> None:
    options = ExportOptions(int8=True, int8_min_psnr=200, tiled=False)
    with pytest.raises(ParityError, match=r"int8 graph reaches only .* dB"):
        export_tiny_model(tmp_path, "q", options=options)


def test_int8_calibrates_on_the_runs_own_source_domain(tiny_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from training.quantize import run_samples
    from training.synthetic import get_pair

    cfg = tiny_config(size=40)
    samples = run_samples(cfg, "BtoA", n_calibration=3, n_holdout=2)
    assert len(samples.calibration) == 3 and len(samples.holdout) == 2
    pair = get_pair("day2night")
    scene = pair.scene(seed=cfg.seed, split="train", domain="B", index=0, size=40)
    assert np.array_equal(samples.calibration[0], pair.render(scene, "B"))  # night images

    root = tmp_path / "data"
    for folder, value in (("trainA", 10), ("testA", 200)):
        (root / folder).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((50, 70, 3), value, np.uint8)).save(root / folder / f"{i}.png")
    (root / "trainB").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "trainB" / "0.png")
    cfg = tiny_config(dataset=None, dataroot=root, size=32)
    samples = run_samples(cfg, "AtoB", n_calibration=2, n_holdout=2)
    assert [s.shape for s in samples.calibration] == [(32, 32, 3)] * 2
    assert samples.calibration[0].max() == 10 and samples.holdout[0].min() == 200
