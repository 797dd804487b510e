"""Publish an image-to-image ONNX graph of any network (`unpaired export --from-onnx`).

The project's runtimes speak one contract (``models.manifest``): input ``input``, float32
``(N, 3, H, W)`` in [-1, 1], output ``output`` the same. A foreign graph rarely does: it may take
[0, 1], one grey channel, other names, fp16 IO. Rather than teach every runtime about it, the
user's graph is wrapped in-graph by a few adapter nodes, so the stored file speaks the contract
and the engine, the workers and the benchmarks run it like any exported model.

Nothing is assumed that was not checked: the graph's IO is read, the side rules are probed with
onnxruntime (or the declared ones verified), and the wrapped graph is compared with the original
run under the same mapping in numpy before anything is written.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from models.imaging import array_to_network
from models.manifest import (
    DIRECTIONS,
    INPUT_NAME,
    OUTPUT_NAME,
    DirectionFiles,
    ImportSource,
    InputRules,
    ModelManifest,
    SourceFile,
    sha256_file,
)
from models.sample_photos import load_photo

from .export import ExportError, ModelAbout, prepare_model_folder, write_manifest

__all__ = ["OnnxImportError", "OnnxImportOptions", "import_onnx"]

#: ITU-R 601 luma weights, what PIL's ``convert("L")`` uses for RGB -> grey.
GREY_WEIGHTS: Final = (0.299, 0.587, 0.114)
TILING: Final = "plain (overlap blending; no instance-norm statistics to share)"
MAX_MULTIPLE: Final = 256
PROBE_SIDE: Final = 64  # side rules are probed around this size (then rounded to a multiple)
SOURCE_PREFIX: Final = "source/"  # the user's names, so no adapter name can clash with them
_FLOAT_TYPES: Final[dict[int, type[np.floating[Any]]]] = {
    TensorProto.FLOAT: np.float32,
    TensorProto.FLOAT16: np.float16,
}


class OnnxImportError(ExportError):
    """The graph is not one the service can run as an image-to-image model."""


@dataclass(frozen=True, kw_only=True)
class OnnxImportOptions:
    value_range: tuple[float, float] = (-1.0, 1.0)  # what the graph takes and gives: or (0, 1)
    channels: int = 3  # 3 (RGB) or 1 (grey, ITU-R 601 luma in, three equal channels out)
    multiple: int | None = None  # sides must be multiples of this; None: probed
    min_side: int | None = None  # the smallest side the graph runs on; None: probed
    fp16_graphs: Mapping[str, Path] = field(default_factory=dict)  # direction -> fp16 variant
    fp32_tolerance: float = 1e-4  # max |wrapped - original| on [-1, 1] outputs
    fp16_tolerance: float = 2e-2  # max |fp16 - fp32| on [-1, 1] outputs


@dataclass(frozen=True)
class GraphIO:
    """What a graph declares about its one input and one output."""

    input: str
    output: str
    input_type: int  # TensorProto.FLOAT or FLOAT16
    output_type: int
    batch: int | None  # 1 when the batch dimension is fixed at 1; None: dynamic
    opset: int


@dataclass(frozen=True)
class SideRules:
    multiple: int
    min_side: int
    multiple_from: str  # "probed" or "declared"
    min_side_from: str


# --- the graph's declared IO ------------------------------------------------------------------


def _load(path: Path, label: str) -> onnx.ModelProto:
    try:
        model = onnx.load(path)
    except Exception as exc:  # protobuf's DecodeError, OSError, external-data errors
        raise OnnxImportError(f"{label}: {path} is not a readable ONNX model: {exc}") from exc
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise OnnxImportError(f"{label}: onnx.checker refuses {path.name}: {exc}") from exc
    return model


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    """The declared shape: an int for a fixed dimension, None for a dynamic one."""
    shape = value.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]


def _shape_text(dims: Sequence[int | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _image_tensor(value: onnx.ValueInfoProto, what: str, channels: int, fp16: bool) -> int:
    """Refuse what is not a float (N, C, H, W) tensor of `channels`; returns its element type."""
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type" or not value.type.tensor_type.HasField("shape"):
        raise OnnxImportError(f"{what} {value.name!r} is not a tensor of known rank")
    elem = value.type.tensor_type.elem_type
    allowed = (TensorProto.FLOAT, TensorProto.FLOAT16) if fp16 else (TensorProto.FLOAT,)
    if elem not in allowed:
        wanted = "float32 or float16" if fp16 else "float32 (give an fp16 graph with --fp16-onnx)"
        got = TensorProto.DataType.Name(elem).lower()
        raise OnnxImportError(f"{what} {value.name!r} is {got}; expected {wanted}")
    dims = _dims(value)
    if len(dims) != 4:
        raise OnnxImportError(
            f"{what} {value.name!r} is {len(dims)}-D {_shape_text(dims)}; an image-to-image "
            "graph takes and gives a 4-D (N, C, H, W) batch"
        )
    if dims[1] is not None and dims[1] != channels:
        if dims[3] == channels:
            raise OnnxImportError(
                f"{what} {value.name!r} looks channels-last {_shape_text(dims)}; "
                "the graph must be NCHW"
            )
        hint = "(or --channels 1)" if channels == 3 else "(as --channels 1 says)"
        raise OnnxImportError(f"{what} has {dims[1]} channels, expected {channels} {hint}")
    return elem


def read_io(model: onnx.ModelProto, channels: int, *, fp16: bool = False) -> GraphIO:
    """The one input and one output of an image-to-image graph, or a refusal naming what is."""
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]  # old IR lists weights too
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise OnnxImportError(
            f"the graph has {len(inputs)} inputs ({names}); an image-to-image graph takes one"
        )
    if len(graph.output) != 1:
        names = ", ".join(o.name for o in graph.output)
        raise OnnxImportError(
            f"the graph has {len(graph.output)} outputs ({names}); an image-to-image graph "
            "gives one"
        )
    (source,), (result,) = inputs, graph.output
    input_type = _image_tensor(source, "input", channels, fp16)
    output_type = _image_tensor(result, "output", channels, fp16)
    batch, _, height, width = _dims(source)
    if height is not None or width is not None:
        size = f"{height or '?'}x{width or '?'}"
        raise OnnxImportError(
            f"the graph has a fixed input size {size}; it must have dynamic height and width "
            "(re-export with dynamic axes, e.g. torch.onnx.export(..., dynamic_axes=...))"
        )
    if batch is not None and batch != 1:
        raise OnnxImportError(
            f"the graph's batch is fixed at {batch}; re-export it with a dynamic batch (or 1)"
        )
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return GraphIO(source.name, result.name, input_type, output_type, batch, opset)


# --- probing the side rules ---------------------------------------------------------------------


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise OnnxImportError(f"onnxruntime cannot load the graph: {exc}") from exc


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class Probe:
    """The user's graph on random inputs in its own value range and channels; says what breaks."""

    def __init__(self, model: onnx.ModelProto, io: GraphIO, options: OnnxImportOptions) -> None:
        self.session = _session(model)
        self.io = io
        self.options = options
        self.random = np.random.default_rng(0)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 in the graph's own range and channels -> its float32 output."""
        dtype = _FLOAT_TYPES[self.io.input_type]
        parts = [batch[i : i + 1] for i in range(len(batch))] if self.io.batch else [batch]
        outputs = [
            self.session.run([self.io.output], {self.io.input: part.astype(dtype)})[0]
            for part in parts
        ]
        return np.concatenate(outputs).astype(np.float32)

    def problem(self, height: int, width: int, batch: int = 1) -> str | None:
        """None when a random (batch, C, height, width) input keeps its size and stays finite."""
        low, high = self.options.value_range
        shape = (batch, self.options.channels, height, width)
        x = self.random.uniform(low, high, shape).astype(np.float32)
        try:
            y = self.run(x)
        except Exception as exc:  # onnxruntime's errors carry no useful type
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return f"a {height}x{width} input fails: {first}"
        if y.ndim != 4 or y.shape[2:] != (height, width):
            got = "x".join(map(str, y.shape[2:])) if y.ndim == 4 else f"shape {y.shape}"
            return (
                f"output is {got} for a {height}x{width} input: the graph must keep the "
                "input's size"
            )
        if y.shape[:2] != shape[:2]:
            return f"output is {y.shape} for a {shape} input: it must keep (N, C, H, W)"
        if not np.isfinite(y).all():
            return f"output has NaN or infinite values for a random {height}x{width} input"
        return None


def _probe_multiple(probe: Probe) -> int:
    """The smallest power of two m such that sides s and s + m both run and keep size."""
    problems = []
    multiple = 1
    while multiple <= MAX_MULTIPLE:
        side = _round_up(PROBE_SIDE, multiple)
        problem = probe.problem(side, side + multiple)
        if problem is None:
            return multiple
        problems.append(problem)
        multiple *= 2
    sized = [p for p in problems if p.startswith("output is")]
    raise OnnxImportError(f"no side multiple up to {MAX_MULTIPLE} works: {(sized or problems)[-1]}")


def _probe_min_side(probe: Probe, multiple: int) -> int:
    """The smallest multiple of `multiple` that runs (with one more multiple beside it)."""
    for side in range(multiple, _round_up(PROBE_SIDE, multiple), multiple):
        if probe.problem(side, side + multiple) is None:
            return side
    return _round_up(PROBE_SIDE, multiple)


def _side_rules(probe: Probe) -> SideRules:
    """Probed where not declared; declared rules are verified, and a wrong one is refused with
    the value probing finds."""
    if (problem := probe.problem(MAX_MULTIPLE, MAX_MULTIPLE)) is not None:  # any multiple
        raise OnnxImportError(problem)
    declared = probe.options
    if declared.multiple is None:
        multiple, multiple_from = _probe_multiple(probe), "probed"
    else:
        multiple, multiple_from = declared.multiple, "declared"
        if multiple < 1 or multiple & (multiple - 1) or multiple > MAX_MULTIPLE:
            raise OnnxImportError(
                f"--multiple {multiple}: give a power of two up to {MAX_MULTIPLE} (large images "
                "are cut into tiles whose side, 512 by default, must be a multiple of it)"
            )
        side = _round_up(PROBE_SIDE, multiple)
        if (problem := probe.problem(side, side + multiple)) is not None:
            raise OnnxImportError(
                f"--multiple {multiple} does not work ({problem}); the probed multiple is "
                f"{_probe_multiple(probe)}"
            )
    if declared.min_side is None:
        return SideRules(multiple, _probe_min_side(probe, multiple), multiple_from, "probed")
    side = _round_up(declared.min_side, multiple)
    if (problem := probe.problem(side, side + multiple)) is not None:
        raise OnnxImportError(
            f"--min-side {declared.min_side} does not work ({problem}); the probed smallest "
            f"side is {_probe_min_side(probe, multiple)}"
        )
    return SideRules(multiple, declared.min_side, multiple_from, "declared")


def _check_sizes(probe: Probe, rules: SideRules) -> None:
    """Two more sizes, non-square, with a batch of two where the batch is dynamic."""
    batch = 1 if probe.io.batch else 2
    first = _round_up(max(rules.min_side, 48), rules.multiple)
    second = _round_up(max(rules.min_side, 80), rules.multiple)
    for height, width in ((first, second + rules.multiple), (second + rules.multiple, first)):
        if (problem := probe.problem(height, width, batch)) is not None:
            raise OnnxImportError(problem)


# --- the wrapped graph ------------------------------------------------------------------------


class Adapter:
    """Nodes and constants around the user's graph; their names start with 'adapter/', the
    user's with SOURCE_PREFIX, so none clash."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []

    def constant(self, values: Any) -> str:
        name = f"adapter/const_{len(self.constants)}"
        array = np.asarray(values, dtype=np.float32)
        self.constants.append(numpy_helper.from_array(array, name))
        return name

    def add(self, op: str, inputs: Sequence[str], output: str | None = None, **attrs: Any) -> str:
        name = f"adapter/{op.lower()}_{len(self.nodes)}"
        output = output or f"{name}:0"
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=name, **attrs))
        return output

    def to_source(self, io: GraphIO, options: OnnxImportOptions) -> None:
        """input ([-1, 1], RGB, float32) -> what the user's graph takes."""
        x = INPUT_NAME
        if options.channels == 1:  # a 1x1 convolution with the luma weights
            x = self.add("Conv", [x, self.constant(np.reshape(GREY_WEIGHTS, (1, 3, 1, 1)))])
        if options.value_range == (0.0, 1.0):
            x = self.add("Add", [self.add("Mul", [x, self.constant(0.5)]), self.constant(0.5)])
        if io.input_type != TensorProto.FLOAT:
            x = self.add("Cast", [x], to=io.input_type)
        self.add("Identity", [x], SOURCE_PREFIX + io.input)

    def from_source(self, io: GraphIO, options: OnnxImportOptions) -> None:
        """What the user's graph gives -> output ([-1, 1], RGB, float32)."""
        y = SOURCE_PREFIX + io.output
        if io.output_type != TensorProto.FLOAT:
            y = self.add("Cast", [y], to=TensorProto.FLOAT)
        if options.value_range == (0.0, 1.0):
            y = self.add("Add", [self.add("Mul", [y, self.constant(2.0)]), self.constant(-1.0)])
        if options.channels == 1:
            y = self.add("Concat", [y, y, y], axis=1)
        self.add("Identity", [y], OUTPUT_NAME)


def wrap(model: onnx.ModelProto, io: GraphIO, options: OnnxImportOptions) -> onnx.ModelProto:
    """The user's graph behind the project's contract, keeping its opset, IR version and
    functions; checked by onnx.checker."""
    graph = onnx.compose.add_prefix_graph(model.graph, SOURCE_PREFIX)
    adapter = Adapter()
    adapter.to_source(io, options)
    cut = len(adapter.nodes)
    adapter.from_source(io, options)
    initializers = {i.name for i in graph.initializer}
    weights_as_inputs = [i for i in graph.input if i.name in initializers]  # IR < 4
    image = ["batch" if io.batch is None else io.batch, 3, "height", "width"]
    wrapped = helper.make_graph(
        [*adapter.nodes[:cut], *graph.node, *adapter.nodes[cut:]],
        graph.name or "imported",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, image), *weights_as_inputs],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, image)],
        initializer=[*graph.initializer, *adapter.constants],
        value_info=list(graph.value_info),
        sparse_initializer=list(graph.sparse_initializer),
    )
    result = helper.make_model(
        wrapped,
        opset_imports=list(model.opset_import),
        functions=list(model.functions),
        producer_name="unpaired onnx_import",
        doc_string=f"{model.producer_name} graph wrapped to input/output in [-1, 1] RGB",
    )
    result.ir_version = model.ir_version
    result.metadata_props.extend(model.metadata_props)
    try:
        onnx.checker.check_model(result, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise OnnxImportError(f"the wrapped graph fails onnx.checker: {exc}") from exc
    return result


# --- parity -----------------------------------------------------------------------------------


def parity_inputs(rules: SideRules, batch: int | None) -> list[np.ndarray]:
    """Random noise (non-square, batch 2 unless fixed at 1) and a real photo, in [-1, 1]."""
    side = _round_up(max(rules.min_side, PROBE_SIDE), rules.multiple)
    noise = np.random.default_rng(1).uniform(-1, 1, (batch or 2, 3, side, side + rules.multiple))
    height, width = side + rules.multiple, side + 2 * rules.multiple
    photo = Image.fromarray(load_photo("astronaut"))
    photo = photo.resize((width, height), Image.Resampling.BICUBIC)
    return [noise.astype(np.float32), array_to_network(np.asarray(photo)[None])]


def reference(probe: Probe, batch: np.ndarray) -> np.ndarray:
    """The user's graph with the mapping applied in numpy: what the wrapped graph must give."""
    x = batch
    if probe.options.channels == 1:
        weights = np.asarray(GREY_WEIGHTS, np.float32).reshape(1, 3, 1, 1)
        x = (x * weights).sum(axis=1, keepdims=True, dtype=np.float32)
    if probe.options.value_range == (0.0, 1.0):
        x = (x + 1) / 2
    y = probe.run(x.astype(np.float32))
    if probe.options.value_range == (0.0, 1.0):
        y = y * 2 - 1
    if probe.options.channels == 1:
        y = np.repeat(y, 3, axis=1)
    return y


def run_served(session: ort.InferenceSession, batch: int | None, x: np.ndarray) -> np.ndarray:
    """A wrapped graph on `x`, one image at a time when its batch is fixed at 1."""
    parts = [x[i : i + 1] for i in range(len(x))] if batch else [x]
    outputs = [session.run([OUTPUT_NAME], {INPUT_NAME: p})[0] for p in parts]
    return np.concatenate(outputs).astype(np.float32)


def _max_abs(
    session: ort.InferenceSession,
    batch: int | None,
    inputs: Sequence[np.ndarray],
    expected: Sequence[np.ndarray],
) -> float:
    worst = 0.0
    for x, want in zip(inputs, expected, strict=True):
        got = run_served(session, batch, x)
        if got.shape != want.shape or not np.isfinite(got).all():
            return float("inf")
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def _require(value: float, tolerance: float, what: str) -> None:
    if not value <= tolerance:
        raise OnnxImportError(
            f"{what} differs by {value:.3g} (tolerance {tolerance:g}); refusing to import"
        )


# --- one direction, the model folder ----------------------------------------------------------


def _source_file(path: Path) -> SourceFile:
    return SourceFile(name=path.name, sha256=sha256_file(path), bytes=path.stat().st_size)


def _fp16_graph(
    direction: str, path: Path, rules: SideRules, options: OnnxImportOptions
) -> tuple[onnx.ModelProto, GraphIO]:
    """The user's fp16 variant, checked like the fp32 graph against the fp32 side rules."""
    label = f"{direction} fp16"
    model = _load(path, label)
    try:
        io = read_io(model, options.channels, fp16=True)
        probe = Probe(model, io, options)
        base = _round_up(max(rules.min_side, PROBE_SIDE), rules.multiple)
        small = _round_up(rules.min_side, rules.multiple)
        for height, width in ((base, base + rules.multiple), (small, small + rules.multiple)):
            if (problem := probe.problem(height, width)) is not None:
                raise OnnxImportError(problem)
        return wrap(model, io, options), io
    except OnnxImportError as exc:
        raise OnnxImportError(f"{label} ({path.name}): {exc}") from exc


def _check_graph(
    direction: str, path: Path, options: OnnxImportOptions
) -> tuple[onnx.ModelProto, GraphIO, SideRules, Probe]:
    """Load, read the IO, probe the side rules and wrap one direction's fp32 graph."""
    model = _load(path, direction)
    try:
        io = read_io(model, options.channels)
        probe = Probe(model, io, options)
        rules = _side_rules(probe)
        _check_sizes(probe, rules)
        return wrap(model, io, options), io, rules, probe
    except OnnxImportError as exc:
        raise OnnxImportError(f"{direction} ({path.name}): {exc}") from exc


def _import_direction(
    direction: str, path: Path, folder: Path, options: OnnxImportOptions
) -> tuple[DirectionFiles, dict[str, float], dict[str, Any], SideRules, int]:
    """Check, wrap, compare and save one direction; returns its files, parity and mapping."""
    wrapped, io, rules, probe = _check_graph(direction, path, options)
    inputs = parity_inputs(rules, io.batch)
    expected = [reference(probe, x) for x in inputs]
    parity = {"fp32_max_abs": _max_abs(_session(wrapped), io.batch, inputs, expected)}
    what = f"{direction}: the wrapped graph's output"
    _require(parity["fp32_max_abs"], options.fp32_tolerance, f"{what} vs the original graph")
    files = {"onnx": f"{direction}.onnx"}
    onnx.save_model(wrapped, folder / files["onnx"])
    low, high = options.value_range
    mapping: dict[str, Any] = {
        "value_range": f"{low:g},{high:g}",
        "channels": options.channels,
        "input": io.input,
        "output": io.output,
        "multiple": rules.multiple,
        "multiple_from": rules.multiple_from,
        "min_side": rules.min_side,
        "min_side_from": rules.min_side_from,
        "batch": "dynamic" if io.batch is None else io.batch,
        "opset": io.opset,
        "tiling": TILING,
    }
    if direction in options.fp16_graphs:
        fp16_path = Path(options.fp16_graphs[direction])
        half, half_io = _fp16_graph(direction, fp16_path, rules, options)
        served = _session(wrapped)
        fp32_out = [run_served(served, io.batch, x) for x in inputs]
        parity["fp16_max_abs"] = _max_abs(_session(half), half_io.batch, inputs, fp32_out)
        _require(parity["fp16_max_abs"], options.fp16_tolerance, f"{direction}: the fp16 graph")
        files["onnx_fp16"] = f"{direction}.fp16.onnx"
        onnx.save_model(half, folder / files["onnx_fp16"])
        mapping |= {"fp16_file": fp16_path.name, "fp16_sha256": sha256_file(fp16_path)}
    return DirectionFiles(**files), parity, mapping, rules, io.opset


def _check_request(graphs: Mapping[str, Path], options: OnnxImportOptions) -> None:
    if not graphs or set(graphs) - set(DIRECTIONS):
        raise OnnxImportError(f"directions must be among {DIRECTIONS}, got {sorted(graphs)}")
    if extra := sorted(set(options.fp16_graphs) - set(graphs)):
        raise OnnxImportError(f"an fp16 graph for {', '.join(extra)} needs its fp32 graph too")
    if options.channels not in (1, 3):
        raise OnnxImportError(f"channels must be 3 or 1, got {options.channels}")
    if options.value_range not in ((-1.0, 1.0), (0.0, 1.0)):
        raise OnnxImportError(f"value range must be (-1, 1) or (0, 1), got {options.value_range}")
    for flag, value in (("--multiple", options.multiple), ("--min-side", options.min_side)):
        if value is not None and not 1 <= value <= 4096:
            raise OnnxImportError(f"{flag} must be between 1 and 4096, got {value}")
    for path in (*graphs.values(), *options.fp16_graphs.values()):
        if not Path(path).is_file():
            raise OnnxImportError(f"{path}: no such file")


def import_onnx(
    graphs: Mapping[str, Path],
    out_dir: Path,
    *,
    onnx_options: OnnxImportOptions = OnnxImportOptions(),
    name: str,
    aliases: Sequence[str] = (),
    domains: Mapping[str, str] | None = None,
    about: ModelAbout | None = None,
) -> ModelManifest:
    """Write a model folder serving the given graphs (one per direction) into `out_dir`.

    The manifest has no architecture and no weights: only the onnx backend can run it.
    """
    _check_request(graphs, onnx_options)
    prepare_model_folder(out_dir)
    directions: dict[str, DirectionFiles] = {}
    parity: dict[str, dict[str, float]] = {}
    mapping: dict[str, Any] = {}
    rules: list[SideRules] = []
    opsets: list[int] = []
    for direction, path in graphs.items():
        files, checks, found, side_rules, opset = _import_direction(
            direction, Path(path), out_dir, onnx_options
        )
        directions[direction], parity[direction], mapping[direction] = files, checks, found
        rules.append(side_rules)
        opsets.append(opset)
    multiple = math.lcm(*(r.multiple for r in rules))
    source = ImportSource(
        format="onnx",
        files={d: _source_file(Path(p)) for d, p in graphs.items()},
        mapping=mapping,
    )
    fields = {
        "name": name,
        "aliases": tuple(aliases),
        "domains": dict(domains or {"A": "A", "B": "B"}),
        "directions": directions,
        "architecture": None,
        "input": InputRules(
            multiple=multiple,
            min_side=_round_up(max(r.min_side for r in rules), multiple),
        ),
        "training": {},
        "parity": parity,
    }
    return write_manifest(
        out_dir,
        fields,
        opset=opsets[0],
        about=dataclasses.replace(about or ModelAbout(), source=source),
    )
