"""Importing a foreign ONNX graph: what is refused (and how it is said), and what is served.

The graphs are written with onnx.helper: each is the smallest one that shows the behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from skimage import data

from models.manifest import INPUT_NAME, OUTPUT_NAME, ModelManifest, sha256_file
from service.errors import EngineError
from service.inference.engine import Engine, EngineOptions
from service.inference.image_io import DecodedImage
from service.store.model_store import ModelStore, StoredModel
from training.export import ExportError, ModelAbout
from training.onnx_import import OnnxImportOptions, import_onnx

# --- graphs -----------------------------------------------------------------------------------

Dim = int | str


def image(
    name: str, channels: Dim = 3, batch: Dim = "N", height: Dim = "H", width: Dim = "W"
) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, channels, height, width])


def graph(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto] = (),
) -> onnx.ModelProto:
    model = helper.make_model(
        helper.make_graph(list(nodes), "g", list(inputs), list(outputs), list(initializers)),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    return model


def negate(batch: Dim = "N", height: Dim = "H", width: Dim = "W") -> onnx.ModelProto:
    """y = -x: in [-1, 1], the photographic negative."""
    node = helper.make_node("Neg", ["x"], ["y"])
    return graph([node], [image("x", 3, batch, height, width)], [image("y", 3, batch)])


def pointwise(op: str) -> onnx.ModelProto:
    """`Identity` or `Mul` (x * x), a graph whose mapping can be checked exactly."""
    node = helper.make_node(op, ["x", "x"] if op == "Mul" else ["x"], ["y"])
    return graph([node], [image("x")], [image("y")])


def two_inputs() -> onnx.ModelProto:
    node = helper.make_node("Add", ["x", "mask"], ["y"])
    return graph([node], [image("x"), image("mask")], [image("y")])


def four_channels() -> onnx.ModelProto:
    weights = numpy_helper.from_array(np.full((3, 4, 1, 1), 0.25, np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"])
    return graph([node], [image("x", channels=4)], [image("y")], [weights])


def halving() -> onnx.ModelProto:
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    return graph([node], [image("x")], [image("y", height="h", width="w")])


def needs_multiple_of_four() -> onnx.ModelProto:
    """Two poolings down, one resize up, and a skip: sides must be multiples of 4."""
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    scales = numpy_helper.from_array(np.array([1, 1, 4, 4], np.float32), "scales")
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p1"], **pool),
        helper.make_node("MaxPool", ["p1"], ["p2"], **pool),
        helper.make_node("Resize", ["p2", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Add", ["x", "up"], ["y"]),
    ]
    return graph(nodes, [image("x")], [image("y")], [scales])


def grey_invert() -> onnx.ModelProto:
    """One grey channel in [0, 1]: y = 1 - x."""
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    node = helper.make_node("Sub", ["one", "x"], ["y"])
    return graph([node], [image("x", channels=1)], [image("y", channels=1)], [one])


def smooth() -> onnx.ModelProto:
    """A 3x3 convolution and a sigmoid: each output pixel sees its neighbours."""
    weights = np.random.default_rng(0).normal(0, 0.3, (3, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c"], ["y"]),
    ]
    return graph(nodes, [image("x")], [image("y")], [numpy_helper.from_array(weights, "w")])


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, path)
    return path


def do_import(tmp_path: Path, model: onnx.ModelProto, **options: Any) -> ModelManifest:
    source = save(model, tmp_path / "graph.onnx")
    return import_onnx(
        {"AtoB": source},
        tmp_path / "staging" / "m",
        onnx_options=OnnxImportOptions(**options),
        name="m",
        about=ModelAbout(description="a test graph", license="MIT"),
    )


def stored(tmp_path: Path, model: onnx.ModelProto, **options: Any) -> StoredModel:
    do_import(tmp_path, model, **options)
    store = ModelStore(tmp_path / "store")
    store.publish(tmp_path / "staging" / "m")
    return store.open("m")


def photo(height: int = 48, width: int = 64) -> DecodedImage:
    return DecodedImage(rgb=np.ascontiguousarray(data.astronaut()[:height, :width]))


def run_graph(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: x})[0])


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        (two_inputs(), {}, "the graph has 2 inputs (x, mask); an image-to-image graph takes one"),
        (four_channels(), {}, "input has 4 channels, expected 3 (or --channels 1)"),
        (
            halving(),
            {},
            "output is 128x128 for a 256x256 input: the graph must keep the input's size",
        ),
        (negate(height=64, width=64), {}, "must have dynamic height and width"),
        (negate(batch=4), {}, "batch is fixed at 4"),
        (negate(), {"channels": 1}, "input has 3 channels, expected 1"),
        (
            needs_multiple_of_four(),
            {"multiple": 2},
            "--multiple 2 does not work (a 64x66 input fails",
        ),
        (negate(), {"multiple": 12}, "--multiple 12: give a power of two up to 256"),
    ],
    ids=[
        "two inputs",
        "4 channels",
        "halves",
        "fixed size",
        "batch 4",
        "not grey",
        "multiple",
        "not a power of two",
    ],
)
def test_graphs_that_are_not_image_to_image_are_refused_with_what_was_found(
    tmp_path: Path, model: onnx.ModelProto, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ExportError) as refused:
        do_import(tmp_path, model, **options)
    assert message in str(refused.value)
    assert str(refused.value).startswith("AtoB (graph.onnx): ")


def test_a_wrong_multiple_names_the_probed_one(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"the probed multiple is 4$"):
        do_import(tmp_path, needs_multiple_of_four(), multiple=2)


def test_side_rules_are_probed_or_verified(tmp_path: Path) -> None:
    probed = do_import(tmp_path / "p", needs_multiple_of_four())
    assert (probed.input.multiple, probed.input.min_side) == (4, 4)
    found = probed.source.mapping["AtoB"] if probed.source else {}
    assert found["multiple_from"] == "probed" and found["min_side_from"] == "probed"
    declared = do_import(tmp_path / "d", needs_multiple_of_four(), multiple=8, min_side=16)
    assert (declared.input.multiple, declared.input.min_side) == (8, 16)
    mapping = declared.source.mapping["AtoB"] if declared.source else {}
    assert mapping["multiple_from"] == mapping["min_side_from"] == "declared"


# --- what is served ---------------------------------------------------------------------------


def test_the_manifest_records_the_source_file_and_the_mapping(tmp_path: Path) -> None:
    manifest = do_import(tmp_path, negate())
    assert manifest.architecture is None and manifest.training == {}
    files = manifest.directions["AtoB"]
    assert files.weights is None and files.onnx_tiled is None and files.onnx_int8 is None
    assert manifest.description == "a test graph" and manifest.license == "MIT"
    assert manifest.source is not None and manifest.source.format == "onnx"
    source = manifest.source.files["AtoB"]
    assert source.name == "graph.onnx" and source.sha256 == sha256_file(tmp_path / "graph.onnx")
    assert source.bytes == (tmp_path / "graph.onnx").stat().st_size
    assert source.sha256 != manifest.files["AtoB.onnx"].sha256  # the stored graph is wrapped
    mapping = manifest.source.mapping["AtoB"]
    assert mapping["input"] == "x" and mapping["output"] == "y" and mapping["batch"] == "dynamic"
    assert mapping["value_range"] == "-1,1" and mapping["tiling"].startswith("plain")
    assert manifest.parity["AtoB"]["fp32_max_abs"] <= 1e-4
    served = onnx.load(tmp_path / "staging" / "m" / "AtoB.onnx")
    assert [i.name for i in served.graph.input] == [INPUT_NAME]
    assert [o.name for o in served.graph.output] == [OUTPUT_NAME]


def test_value_range_0_1_is_mapped_exactly(tmp_path: Path) -> None:
    model = stored(tmp_path / "id", pointwise("Identity"), value_range=(0.0, 1.0))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 8, 12)).astype(np.float32)
    assert np.abs(run_graph(model.path("AtoB.onnx"), x) - x).max() <= 1e-6
    (out,) = Engine(model, "AtoB").translate([photo()])
    assert np.array_equal(out.rgb, photo().rgb)  # [-1, 1] -> [0, 1] -> [-1, 1] loses nothing
    squared = do_import(tmp_path / "sq", pointwise("Mul"), value_range=(0.0, 1.0))
    expected = 2 * ((x + 1) / 2) ** 2 - 1
    got = run_graph(tmp_path / "sq" / "staging" / "m" / "AtoB.onnx", x)
    assert squared.parity["AtoB"]["fp32_max_abs"] <= 1e-6
    assert np.abs(got - expected).max() <= 1e-6


def test_a_grey_graph_sees_pil_luma_and_gives_three_equal_channels(tmp_path: Path) -> None:
    model = stored(tmp_path, grey_invert(), channels=1, value_range=(0.0, 1.0))
    assert model.manifest.source is not None
    assert model.manifest.source.mapping["AtoB"]["channels"] == 1
    image = photo(40, 56)
    (out,) = Engine(model, "AtoB").translate([image])
    luma = np.asarray(Image.fromarray(image.rgb).convert("L"), np.int16)
    assert out.rgb.shape == (40, 56, 3)
    assert (out.rgb[..., 0] == out.rgb[..., 1]).all() and (out.rgb[..., 1] == out.rgb[..., 2]).all()
    assert np.abs(out.rgb[..., 0].astype(np.int16) - (255 - luma)).max() <= 1


def test_a_graph_with_batch_fixed_at_1_serves_batches_one_image_at_a_time(
    tmp_path: Path,
) -> None:
    model = stored(tmp_path, negate(batch=1))
    assert model.manifest.source is not None
    assert model.manifest.source.mapping["AtoB"]["batch"] == 1
    engine = Engine(model, "AtoB", EngineOptions(max_batch=4))
    images = [photo(32, 40), DecodedImage(rgb=np.ascontiguousarray(data.chelsea()[:32, :40]))]
    images.append(photo(32, 40))
    outputs = engine.translate(images)  # one padded shape: one batch of three
    for image, out in zip(images, outputs, strict=True):
        assert np.array_equal(out.rgb, 255 - image.rgb)


def test_large_images_are_tiled_plainly_with_overlap_blending(tmp_path: Path) -> None:
    model = stored(tmp_path, smooth(), value_range=(0.0, 1.0))
    image = photo(200, 260)
    tiled = Engine(
        model, "AtoB", EngineOptions(max_untiled_pixels=64 * 64, tile=64, tile_overlap=16)
    )
    assert tiled.batch_shape(200, 260) is None and not tiled.runner.shares_stats
    whole = Engine(model, "AtoB")
    (a,), (b,) = tiled.translate([image]), whole.translate([image])
    assert a.rgb.shape == b.rgb.shape == (200, 260, 3)
    assert np.abs(a.rgb.astype(int) - b.rgb).max() <= 1


def test_an_imported_graph_runs_on_onnx_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = stored(tmp_path, negate())
    with pytest.raises(EngineError, match="is an imported ONNX graph; it runs on the onnx backend"):
        Engine(model, "AtoB", EngineOptions(backend="torch"))
    # where only torch reaches the GPU, `auto` would choose torch: never for this model
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert Engine(model, "AtoB").runner.backend == "onnx"


def test_an_fp16_variant_keeps_fp32_io_and_is_measured(tmp_path: Path) -> None:
    from onnxconverter_common import float16

    half = float16.convert_float_to_float16(smooth(), keep_io_types=False)  # fp16 IO
    fp16_path = save(half, tmp_path / "half.onnx")
    manifest = do_import(
        tmp_path, smooth(), value_range=(0.0, 1.0), fp16_graphs={"AtoB": fp16_path}
    )
    assert manifest.directions["AtoB"].onnx_fp16 == "AtoB.fp16.onnx"
    assert 0 < manifest.parity["AtoB"]["fp16_max_abs"] <= 2e-2
    served = onnx.load(tmp_path / "staging" / "m" / "AtoB.fp16.onnx")
    assert served.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert served.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert manifest.source is not None
    assert manifest.source.mapping["AtoB"]["fp16_sha256"] == sha256_file(fp16_path)
