"""Export generators to ONNX with a parity check, and write the model folder with its manifest.

A model folder holds, per direction, the fp32 ONNX graph (dynamic batch, height and width),
optionally an fp16 variant, and the PyTorch weights as safetensors (for the torch backend),
plus ``manifest.json`` with a sha256 of every file. Every graph is compared with the PyTorch
generator on random and real images through onnxruntime before anything is written out; an
export that does not reproduce the network fails instead of publishing a wrong model.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from models import input_multiple, min_input_side
from models.imaging import array_to_tensor
from models.manifest import (
    DIRECTIONS,
    INPUT_NAME,
    MANIFEST_FILE,
    OUTPUT_NAME,
    STATS_IN,
    STATS_OUT,
    USE_STATS,
    Architecture,
    DirectionFiles,
    Distillation,
    FileRecord,
    ImportSource,
    InputRules,
    ModelManifest,
    SourceFile,
    sha256_file,
)
from models.norm_stats import SharedStatsGenerator, has_instance_norm
from models.sample_photos import load_photo
from models.weight_import import ImportChoices, ImportedGenerator, import_generators

from .evaluate import generator_architecture, generator_weights, load_run_generators
from .quantize import DomainSamples, natural_photos, psnr_db, quantize_int8, run_samples, to_batch

__all__ = [
    "ExportError",
    "ExportOptions",
    "ModelAbout",
    "ParityError",
    "export_generators",
    "export_pth",
    "export_run",
    "prepare_model_folder",
    "write_manifest",
]


class ExportError(RuntimeError):
    """The model could not be exported (bad source, or the graph failed a check)."""


class ParityError(ExportError):
    """The exported graph does not reproduce the PyTorch generator within tolerance."""


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    fp16: bool = False
    tiled: bool = True  # the graph tiles of large images use to share statistics
    opset: int = 18
    fp32_tolerance: float = 1e-4  # max |onnx - torch| on [-1, 1] outputs
    fp16_tolerance: float = 2e-2
    int8: bool = False  # also a statically quantized graph for CPU serving
    int8_min_psnr: float = 30.0  # dB against the fp32 PyTorch output on held-out images
    ema: bool = True  # a run's generators' moving average, where the run kept one


# --- ONNX graphs ----------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporters print progress to stdout and warn freely; keep stdout for --json."""
    with (
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        previous = logging.getLogger("torch").level
        logging.getLogger("torch").setLevel(logging.ERROR)
        try:
            yield
        finally:
            logging.getLogger("torch").setLevel(previous)


_IMAGE_DIMS = {0: "batch", 2: "height", 3: "width"}
_STATS_DIMS = {0: "batch"}


def _name_dynamic_dims(model: onnx.ModelProto, names: Mapping[str, Mapping[int, str]]) -> None:
    """torch.export names dims s0, s53, ...; give the graph's IO the names users read."""
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        for index, name in names.get(value.name, {}).items():
            dims[index].ClearField("dim_value")
            dims[index].dim_param = name


def _example_input(architecture: Architecture) -> torch.Tensor:
    """Batch 2 and sides of at least two multiples: torch.export specialises sizes of 1."""
    multiple = input_multiple(architecture.generator)
    side = max(2 * multiple, min_input_side(architecture.generator), 32)
    side = -(-side // multiple) * multiple
    return torch.rand(2, architecture.input_nc, side, side + multiple) * 2 - 1


def _export(
    net: nn.Module,
    args: tuple[torch.Tensor, ...],
    *,
    inputs: Mapping[str, Mapping[int, str] | None],
    outputs: Mapping[str, Mapping[int, str]],
    opset: int,
) -> onnx.ModelProto:
    """torch.onnx with named inputs/outputs; the mapped axes are dynamic. The TorchScript
    exporter first: it exports a generator in a fraction of a second where the dynamo exporter
    takes 8 s for a tiny one and minutes for ResNet-9 (the same graphs pass the same parity
    checks); dynamo where TorchScript cannot (an operator it lacks, a torch without it)."""
    try:
        with _quiet_exporter():
            return _torchscript_export(net, args, inputs=inputs, outputs=outputs, opset=opset)
    except Exception as first:  # the exporter raises many unrelated types
        try:
            with _quiet_exporter():
                return _dynamo_export(net, args, inputs=inputs, outputs=outputs, opset=opset)
        except Exception as exc:
            raise ExportError(
                f"torch.onnx.export failed: {type(exc).__name__}: {exc} (TorchScript "
                f"exporter: {type(first).__name__}: {first})"
            ) from exc


def _torchscript_export(
    net: nn.Module,
    args: tuple[torch.Tensor, ...],
    *,
    inputs: Mapping[str, Mapping[int, str] | None],
    outputs: Mapping[str, Mapping[int, str]],
    opset: int,
) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory(prefix="unpaired-export-") as scratch:
        graph = Path(scratch) / "graph.onnx"
        torch.onnx.export(
            net,
            args,
            graph,
            dynamo=False,
            opset_version=opset,
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes={name: dict(dims) for name, dims in {**inputs, **outputs}.items() if dims},
        )
        return onnx.load(graph)


def _dynamo_export(
    net: nn.Module,
    args: tuple[torch.Tensor, ...],
    *,
    inputs: Mapping[str, Mapping[int, str] | None],
    outputs: Mapping[str, Mapping[int, str]],
    opset: int,
) -> onnx.ModelProto:
    dynamic = tuple(
        {i: torch.export.Dim.DYNAMIC for i in dims} if dims else None for dims in inputs.values()
    )
    program = torch.onnx.export(
        net,
        args,
        dynamo=True,
        opset_version=opset,
        input_names=list(inputs),
        output_names=list(outputs),
        dynamic_shapes=dynamic,
        external_data=False,
    )
    assert program is not None
    model = program.model_proto
    _name_dynamic_dims(model, {k: v for k, v in {**inputs, **outputs}.items() if v})
    return model


def export_graph(net: nn.Module, architecture: Architecture, opset: int) -> onnx.ModelProto:
    """The generator as users expect it: input (N, 3, H, W) -> output (N, 3, H, W)."""
    return _export(
        net,
        (_example_input(architecture),),
        inputs={INPUT_NAME: _IMAGE_DIMS},
        outputs={OUTPUT_NAME: _IMAGE_DIMS},
        opset=opset,
    )


def _export_tiled_graph(
    net: SharedStatsGenerator, architecture: Architecture, opset: int
) -> onnx.ModelProto:
    """The generator with shareable instance-norm statistics (see models.norm_stats)."""
    return _export(
        net,
        net.example_inputs(_example_input(architecture)),
        inputs={INPUT_NAME: _IMAGE_DIMS, STATS_IN: _STATS_DIMS, USE_STATS: None},
        outputs={OUTPUT_NAME: _IMAGE_DIMS, STATS_OUT: _STATS_DIMS},
        opset=opset,
    )


def _to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and activations, but InstanceNormalization and the graph IO stay fp32:
    instance-norm variance overflows and loses accuracy in fp16, and callers send fp32."""
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "values truncated to fp16 range" for tiny weights
        block = [*float16.DEFAULT_OP_BLOCK_LIST, "InstanceNormalization"]
        return float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=block)


def _check(model: onnx.ModelProto, label: str) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"{label}: onnx.checker failed: {exc}") from exc


# --- parity ---------------------------------------------------------------------------------


def _real_images(height: int, width: int) -> np.ndarray:
    """Photos shipped with scikit-image, resized to (height, width): uint8 (2, H, W, 3)."""
    photos = [load_photo("chelsea"), load_photo("astronaut")]
    resized = [
        np.asarray(Image.fromarray(p).resize((width, height), Image.Resampling.BICUBIC))
        for p in photos
    ]
    return np.stack(resized)


def _parity_inputs(architecture: Architecture) -> dict[str, torch.Tensor]:
    """Random noise (batch 2, non-square) and two real photos at a second, different size."""
    multiple = input_multiple(architecture.generator)
    base = max(min_input_side(architecture.generator), 64)
    height = -(-base // multiple) * multiple
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(2, 3, height, height + multiple, generator=generator) * 2 - 1
    photos = array_to_tensor(_real_images(height + multiple, height + 2 * multiple))
    return {"random": noise, "photos": photos}


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _worst(actual: Sequence[np.ndarray], expected: Sequence[torch.Tensor]) -> float:
    worst = 0.0
    for a, e in zip(actual, expected, strict=True):
        if a.shape != tuple(e.shape):
            raise ParityError(f"ONNX output shape {a.shape} != PyTorch {tuple(e.shape)}")
        if not np.isfinite(a).all():
            return float("inf")
        worst = max(worst, float(np.abs(a - e.numpy()).max()))
    return worst


def _max_abs_diff(
    model: onnx.ModelProto, net: nn.Module, inputs: Mapping[str, torch.Tensor]
) -> float:
    session, worst = _session(model), 0.0
    for batch in inputs.values():
        with torch.no_grad():
            expected = net(batch)
        actual = session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})
        worst = max(worst, _worst(actual, [expected]))
    return worst


def _tiled_parity(
    model: onnx.ModelProto, net: SharedStatsGenerator, inputs: Mapping[str, torch.Tensor]
) -> dict[str, float]:
    """The tiled graph against its PyTorch wrapper, as tiled translation uses it: its outputs
    with their own statistics and with the first image's shared by all, then fed the
    statistics the graph itself measured (a thumbnail's, in service) against PyTorch fed its
    own. Outputs are compared on [-1, 1]; the statistics in the units the norms divide by
    (`tiled_stats_error`): a trained network's run to thousands, where float32 steps are 1e-4
    and an absolute comparison fails on rounding that no output shows."""
    session, outputs, stats = _session(model), 0.0, 0.0
    for batch in inputs.values():
        with torch.no_grad():
            own = net(*net.example_inputs(batch))
            shared_stats = own[1][:1].expand(len(batch), -1).contiguous()
            shared = net(batch, shared_stats, torch.tensor(True))
        feeds = {INPUT_NAME: batch.numpy(), STATS_IN: np.zeros(own[1].shape, np.float32)}
        y, measured = session.run([OUTPUT_NAME, STATS_OUT], {**feeds, USE_STATS: np.array(False)})
        outputs = max(outputs, _worst([y], own[:1]))
        stats = max(stats, net.stats_error(torch.from_numpy(measured), own[1]))
        for given in (shared_stats.numpy()[:1], measured[:1]):  # PyTorch's, then its own
            feeds = {INPUT_NAME: batch.numpy(), STATS_IN: np.repeat(given, len(batch), 0)}
            (y,) = session.run([OUTPUT_NAME], {**feeds, USE_STATS: np.array(True)})
            outputs = max(outputs, _worst([y], shared[:1]))
    return {"tiled_max_abs": outputs, "tiled_stats_error": stats}


def _levels(value: float) -> str:
    """`value` on [-1, 1] in 8-bit output levels (one level is 2/255)."""
    return f"{value * 127.5:.3g} of an 8-bit output level"


def _require(
    parity: Mapping[str, float], key: str, tolerance: float, what: str, *, output: bool = True
) -> None:
    if not parity[key] <= tolerance:
        unit = f" = {_levels(parity[key])}, tolerance {_levels(tolerance)}" if output else ""
        raise ParityError(
            f"{what} differs from PyTorch by {parity[key]:.3g} (tolerance {tolerance:g}{unit}); "
            "refusing to export"
        )


@dataclass(frozen=True, kw_only=True)
class ModelAbout:
    """What people read about a model: where it came from, what it does, its terms of use."""

    source: ImportSource | None = None
    description: str | None = None
    license: str | None = None


# --- model folder ---------------------------------------------------------------------------


def _versions(opset: int) -> dict[str, str]:
    versions = {"opset": str(opset)}
    for package in ("unpaired", "torch", "onnx", "onnxruntime", "onnxconverter-common"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return versions


def _export_int8(
    direction: str,
    net: nn.Module,
    folder: Path,
    files: dict[str, str],
    samples: DomainSamples,
    options: ExportOptions,
) -> float:
    """Quantize the saved fp32 graph; returns its PSNR against PyTorch on held-out images."""
    files["onnx_int8"] = f"{direction}.int8.onnx"
    quantize_int8(folder / files["onnx"], folder / files["onnx_int8"], samples.calibration)
    session = _session(onnx.load(folder / files["onnx_int8"]))
    worst = float("inf")
    for image in samples.holdout:  # one at a time: held-out images may differ in size
        batch = to_batch([image])
        with torch.no_grad():
            expected = net(torch.from_numpy(batch)).numpy()
        (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        worst = min(worst, psnr_db(actual, expected))
    if not worst >= options.int8_min_psnr:
        raise ParityError(
            f"{direction}: the int8 graph reaches only {worst:.1f} dB PSNR against PyTorch fp32 "
            f"(floor {options.int8_min_psnr:g} dB); export without --int8"
        )
    return round(worst, 3)


def _export_direction(
    direction: str,
    net: nn.Module,
    architecture: Architecture,
    folder: Path,
    options: ExportOptions,
    samples: DomainSamples | None,
) -> tuple[DirectionFiles, dict[str, float]]:
    net = net.to("cpu").eval()
    inputs = _parity_inputs(architecture)
    model = export_graph(net, architecture, options.opset)
    _check(model, f"{direction} fp32")
    parity = {"fp32_max_abs": _max_abs_diff(model, net, inputs)}
    _require(parity, "fp32_max_abs", options.fp32_tolerance, f"{direction}: ONNX fp32 output")
    files = {"onnx": f"{direction}.onnx", "weights": f"{direction}.safetensors"}
    onnx.save_model(model, folder / files["onnx"])
    if options.fp16:
        half = _to_fp16(model)
        _check(half, f"{direction} fp16")
        parity["fp16_max_abs"] = _max_abs_diff(half, net, inputs)
        what = f"{direction}: ONNX fp16 output (export without --fp16?)"
        _require(parity, "fp16_max_abs", options.fp16_tolerance, what)
        files["onnx_fp16"] = f"{direction}.fp16.onnx"
        onnx.save_model(half, folder / files["onnx_fp16"])
    if options.tiled and has_instance_norm(net):  # tiles share a thumbnail's statistics
        shared = SharedStatsGenerator(net).eval()
        tiled = _export_tiled_graph(shared, architecture, options.opset)
        _check(tiled, f"{direction} tiled")
        parity.update(_tiled_parity(tiled, shared, inputs))
        what = f"{direction}: ONNX graph with shared statistics"
        _require(parity, "tiled_max_abs", options.fp32_tolerance, what)
        what += ", its statistics (in standard deviations)"
        _require(parity, "tiled_stats_error", options.fp32_tolerance, what, output=False)
        files["onnx_tiled"] = f"{direction}.tiled.onnx"
        onnx.save_model(tiled, folder / files["onnx_tiled"])
    if options.int8:
        domain = samples or natural_photos()
        parity["int8_psnr_db"] = _export_int8(direction, net, folder, files, domain, options)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(state, folder / files["weights"])
    return DirectionFiles(**files), parity


def export_generators(
    generators: Mapping[str, nn.Module],
    out_dir: Path,
    *,
    name: str,
    architecture: Architecture,
    aliases: Sequence[str] = (),
    domains: Mapping[str, str] | None = None,
    training: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    samples: Mapping[str, DomainSamples] | None = None,
    options: ExportOptions = ExportOptions(),
    about: ModelAbout = ModelAbout(),
    distillation: Distillation | None = None,
) -> ModelManifest:
    """Write a complete model folder into the empty (or new) `out_dir`; returns its manifest.

    `samples` (per direction) calibrate and measure the int8 graph; default: natural photos.
    """
    unknown = set(generators) - set(DIRECTIONS)
    if unknown or not generators:
        raise ExportError(f"directions must be among {DIRECTIONS}, got {sorted(generators)}")
    prepare_model_folder(out_dir)
    directions: dict[str, DirectionFiles] = {}
    parity: dict[str, dict[str, float]] = {}
    for direction, net in generators.items():
        directions[direction], parity[direction] = _export_direction(
            direction, net, architecture, out_dir, options, (samples or {}).get(direction)
        )
    return write_manifest(
        out_dir,
        {
            "name": name,
            "aliases": tuple(aliases),
            "domains": dict(domains or {"A": "A", "B": "B"}),
            "directions": directions,
            "architecture": architecture,
            "input": InputRules(
                multiple=input_multiple(architecture.generator),
                min_side=min_input_side(architecture.generator),
            ),
            "training": dict(training or {}),
            "metrics": dict(metrics) if metrics is not None else None,
            "parity": parity,
            "distillation": distillation,
        },
        opset=options.opset,
        about=about,
    )


def prepare_model_folder(out_dir: Path) -> None:
    """Create `out_dir`, which must be new or empty: a model folder holds only its own files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        raise ExportError(f"{out_dir} is not empty")


def write_manifest(
    out_dir: Path, fields: Mapping[str, Any], *, opset: int, about: ModelAbout = ModelAbout()
) -> ModelManifest:
    """Checksum every file in the model folder and write its manifest (the one place that does).

    `fields` are the manifest's own (name, directions, architecture, input, parity, ...); the
    exporter's versions, the creation time and the file records are added here.
    """
    files = {
        path.name: FileRecord(sha256=sha256_file(path), bytes=path.stat().st_size)
        for path in sorted(out_dir.iterdir())
    }
    manifest = ModelManifest.model_validate(
        {
            **fields,
            "source": about.source,
            "description": about.description,
            "license": about.license,
            "exporter": _versions(opset),
            "created": datetime.now(UTC),
            "files": files,
        }
    )
    (out_dir / MANIFEST_FILE).write_text(manifest.to_json())
    return manifest


def export_run(
    run_dir: Path,
    out_dir: Path,
    *,
    name: str,
    aliases: Sequence[str] = (),
    domains: Mapping[str, str] | None = None,
    metrics: Mapping[str, Any] | None = None,
    options: ExportOptions = ExportOptions(),
    about: ModelAbout = ModelAbout(),
) -> ModelManifest:
    """Export the directions of a training run's latest checkpoint."""
    cfg, checkpoint, nets = load_run_generators(run_dir, torch.device("cpu"), ema=options.ema)
    training = {
        "source": "run",
        "run_dir": str(run_dir),
        "checkpoint": checkpoint.name,
        "weights": generator_weights(checkpoint, ema=options.ema),
        "model": cfg.model,
        "dataset": cfg.dataset or (str(cfg.dataroot) if cfg.dataroot else None),
        "size": cfg.size,
        "config_digest": cfg.digest(),
    }
    distillation = None
    if cfg.model == "distill":
        distillation = _distillation(run_dir, generator_architecture(cfg), nets)
        training["teacher"] = distillation.teacher["name"]
    return export_generators(
        nets,
        out_dir,
        name=name,
        architecture=generator_architecture(cfg),
        aliases=aliases,
        domains=domains,
        training=training,
        metrics=metrics,
        samples={d: run_samples(cfg, d) for d in nets} if options.int8 else None,
        options=options,
        about=about,
        distillation=distillation,
    )


def _distillation(
    run_dir: Path, student: Architecture, nets: Mapping[str, nn.Module]
) -> Distillation:
    """A student's teacher, its MACs next to the teacher's, and its fidelity to the teacher on
    the held-out images the distillation cached."""
    from models.complexity import architecture_complexity

    from .distill import fidelity, teacher_info

    teacher = teacher_info(run_dir)["teacher"]
    recorded = teacher.get("architecture")
    teacher_arch = Architecture.model_validate(recorded) if recorded else None
    return Distillation(
        teacher={k: teacher[k] for k in ("name", "kind", "sha256")},
        student=student,
        macs=architecture_complexity(student).macs,
        teacher_macs=architecture_complexity(teacher_arch).macs if teacher_arch else None,
        fidelity=fidelity(run_dir, nets, student.generator),
    )


def export_pth(
    pth_files: Mapping[str, Path],
    out_dir: Path,
    *,
    name: str,
    aliases: Sequence[str] = (),
    domains: Mapping[str, str] | None = None,
    choices: ImportChoices = ImportChoices(),
    options: ExportOptions = ExportOptions(),
    about: ModelAbout = ModelAbout(),
) -> ModelManifest:
    """Export generators trained by other code (any key names; see models.weight_import).

    `pth_files` maps AtoB (and optionally BtoA) to a file; a single file that holds both
    generators gives both directions. The file names, their sha256 and what the importer found
    are recorded in the manifest's `source`.
    """
    found = {
        d: import_generators(path, choices if d == "AtoB" else replace(choices, key=None))
        for d, path in pth_files.items()
    }
    if "BtoA" in pth_files:
        nets = {d: _pick(found[d], d, pth_files[d]) for d in ("AtoB", "BtoA")}
    else:
        nets = _directions(found["AtoB"], pth_files["AtoB"])
    architectures = {g.architecture for g in nets.values()}
    if len(architectures) > 1:
        raise ExportError(
            "the two generators differ ("
            + " vs ".join(a.generator + f" ngf {a.ngf} norm {a.norm}" for a in architectures)
            + "); a model has one architecture: export each direction as its own model"
        )
    files = {d: pth_files.get(d, pth_files["AtoB"]) for d in nets}
    source = ImportSource(
        format="safetensors" if pth_files["AtoB"].suffix == ".safetensors" else "pth",
        files={d: _source_file(files[d], nets[d].name) for d in nets},
        mapping={d: g.mapping() for d, g in nets.items()},
    )
    return export_generators(
        {d: g.net for d, g in nets.items()},
        out_dir,
        name=name,
        architecture=architectures.pop(),
        aliases=aliases,
        domains=domains,
        options=options,
        about=replace(about, source=source),
    )


def _source_file(path: Path, key: str) -> SourceFile:
    return SourceFile(
        name=path.name, sha256=sha256_file(path), bytes=path.stat().st_size, key=key or None
    )


def _names(generators: Sequence[ImportedGenerator]) -> str:
    return ", ".join(g.name or "<root>" for g in generators)


def _pick(generators: Sequence[ImportedGenerator], direction: str, path: Path) -> ImportedGenerator:
    """The generator of `direction` in a file given for that direction."""
    if len(generators) == 1:
        return generators[0]
    named = [g for g in generators if g.direction == direction]
    if len(named) == 1:
        return named[0]
    raise ExportError(
        f"{path} holds {len(generators)} generators ({_names(generators)}) and their names do "
        f"not say which maps {direction}; pick one with --key NAME"
    )


def _directions(
    generators: Sequence[ImportedGenerator], path: Path
) -> dict[str, ImportedGenerator]:
    """One generator: AtoB. Two whose names say their directions (G_A2B/G_B2A, netG_A/netG_B):
    both. Anything else needs --key."""
    if len(generators) == 1:
        return {"AtoB": generators[0]}
    by_direction = {g.direction: g for g in generators if g.direction}
    if len(generators) == 2 and set(by_direction) == set(DIRECTIONS):
        return {d: by_direction[d] for d in DIRECTIONS}
    raise ExportError(
        f"{path} holds {len(generators)} generators ({_names(generators)}); their names do not "
        "say which way each maps: pick one with --key NAME (and --reverse-pth for the other)"
    )


def staging_dir() -> tempfile.TemporaryDirectory[str]:
    """A scratch folder for a model before the store publishes it."""
    return tempfile.TemporaryDirectory(prefix="unpaired-export-")
