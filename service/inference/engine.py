"""The one inference path: run a batch of images through one direction of a stored model.

The CLI, the API's batcher, the Celery workers and the benchmarks all call :class:`Engine`.
Two backends run the network on a float32 ``(N, 3, H, W)`` batch in [-1, 1]:

- ``onnx``: onnxruntime with the best installed provider (TensorRT → CUDA → CPU), IO binding
  on CUDA, thread count and graph optimisation set explicitly;
- ``torch``: the PyTorch generator rebuilt from the manifest and its safetensors weights, fp16
  and channels_last on CUDA, optionally compiled (with CUDA graphs), for GPUs where
  onnxruntime-gpu is not available.

:meth:`Engine.translate` wraps either with the shared pre/post-processing of
:mod:`service.inference.image_io`: sides padded (reflect) to what the network accepts and
cropped back, large images translated in overlapping tiles, images grouped by padded shape into
batches, alpha reattached untouched.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import onnxruntime as ort

from models.manifest import (
    INPUT_NAME,
    OUTPUT_NAME,
    STATS_IN,
    STATS_OUT,
    USE_STATS,
    ModelManifest,
)
from service.errors import BackendUnavailableError, EngineError
from service.inference import admission, image_io, tiling
from service.inference.image_io import DecodedImage
from service.inference.tiled_translation import TiledTranslation, TileGeometry
from service.settings import BackendName, DeviceName, PrecisionName, Settings
from service.store.model_store import StoredModel

__all__ = ["Engine", "EngineOptions", "Runner"]

#: Tiles per network call on a CPU unless set: onnxruntime gains nothing from larger batches
#: there, and a small request that arrives meanwhile waits for one call.
_CPU_TILE_BATCH: Final = 2

#: A call on more pixels than this (a 512x512 image) leaves the runtime's cache to be given back
#: once the engine is idle: what small images need stays cached.
_ARENA_KEEP_PIXELS: Final = 2**18

#: Side of the small runs that warm an engine and shrink its runtime's arena.
_SMALL_SIDE: Final = 64

#: Full-resolution channels assumed for an imported graph (no architecture): the paper's ngf.
_UNKNOWN_WIDTH: Final = 64

_COMPILED_SHAPES = 64  # torch.compile: graphs kept per generator (one per batch x side)
_ORT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


@dataclass(frozen=True, kw_only=True)
class EngineOptions:
    backend: BackendName = "auto"  # auto: onnx
    device: DeviceName = "auto"  # auto: CUDA when the backend can use it, else CPU
    precision: PrecisionName = "auto"  # auto: fp16 on CUDA, fp32 on CPU; int8 only if asked
    max_batch: int = 8  # images (or tiles) per network call
    threads: int | None = None  # CPU threads; None: the CPUs this process may use
    tile: int = 512  # side of the tiles large images are cut into
    tile_overlap: int = 64  # blended overlap between tiles
    max_untiled_pixels: int = 1024 * 1024  # larger images are tiled (bounded memory)
    tile_batch: int | None = None  # tiles per call; None: max_batch on a GPU, 2 on a CPU
    thumbnail_pixels: int | None = None  # tiles' shared statistics come from a thumbnail of
    # at most this many pixels (None: max_untiled_pixels)
    channels_last: bool = True  # torch on CUDA
    compile: bool = False  # torch: torch.compile the generator
    cuda_graphs: bool = False  # torch + compile on CUDA: CUDA graphs (reduce-overhead mode)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> EngineOptions:
        options = cls(
            backend=settings.backend,
            device=settings.device,
            precision=settings.precision,
            max_batch=settings.max_batch,
            threads=settings.threads,
            tile=settings.tile,
            tile_overlap=settings.tile_overlap,
            max_untiled_pixels=settings.max_untiled_pixels,
            tile_batch=settings.tile_batch,
            thumbnail_pixels=settings.thumbnail_pixels,
        )
        return replace(options, **overrides)  # type: ignore[arg-type]


class Runner(Protocol):
    """A backend: float32 (N, 3, H, W) in [-1, 1] -> the same shape, H and W valid sides."""

    backend: str
    device: str
    precision: str
    shares_stats: bool  # has a network whose instance norms can use given statistics

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...

    def run_shared(
        self, batch: np.ndarray, stats: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(output, statistics used): own statistics when `stats` is None, else `stats`."""
        ...

    def release_memory(self, probe: np.ndarray) -> None:
        """Give back working memory a large call left cached (``probe``: a small valid
        batch, for runtimes that only shrink at the end of a run)."""
        ...


def _cpu_threads(threads: int | None) -> int:
    return threads or len(os.sched_getaffinity(0))


def _precision(requested: PrecisionName, device: str) -> str:
    if requested == "auto":
        return "fp16" if device == "cuda" else "fp32"
    return requested


# --- onnxruntime ----------------------------------------------------------------------------


class OnnxRunner:
    backend = "onnx"

    def __init__(self, model: StoredModel, direction: str, options: EngineOptions) -> None:
        available = set(ort.get_available_providers())
        if options.device == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            providers = [p for p in _ORT_PROVIDERS if p in available]
            if options.device == "cuda" and providers == ["CPUExecutionProvider"]:
                raise BackendUnavailableError(
                    "onnxruntime has no CUDA or TensorRT provider here (install onnxruntime-gpu, "
                    "or use --backend torch on a GPU)"
                )
        self.device = "cpu" if providers[0] == "CPUExecutionProvider" else "cuda"
        files = model.direction(direction)
        self.precision = _precision(options.precision, self.device)
        if options.precision == "auto" and files.onnx_fp16 is None:
            self.precision = "fp32"  # fp16 on CUDA only when the model was exported with it
        graphs = {"fp32": files.onnx, "fp16": files.onnx_fp16, "int8": files.onnx_int8}
        path = graphs[self.precision]
        if path is None:
            raise EngineError(
                f"model {model.manifest.name!r} has no {self.precision} graph; export it with "
                f"--{self.precision} or ask for fp32"
            )
        self._threads = _cpu_threads(options.threads)
        self._providers = providers
        # TensorRT engines are built per GPU; cache them outside the (maybe read-only) store
        digest = model.manifest.files[path].sha256[:16]
        self._trt_cache = Path.home() / ".cache" / "unpaired" / "tensorrt" / digest
        self.session = self._new_session(model.path(path))
        self.providers = self.session.get_providers()
        self._tiled_path = model.path(files.onnx_tiled) if files.onnx_tiled else None
        self._tiled_session: ort.InferenceSession | None = None
        self.shares_stats = self._tiled_path is not None
        # an imported graph may fix its batch at 1: such a graph sees one image per call
        batch_dim = {i.name: i.shape for i in self.session.get_inputs()}[INPUT_NAME][0]
        self.one_at_a_time = batch_dim == 1

    def _new_session(self, path: Path) -> ort.InferenceSession:
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session_options.intra_op_num_threads = self._threads
        session_options.inter_op_num_threads = 1
        session_options.log_severity_level = 3
        provider_options: list[dict[str, object]] = []
        for provider in self._providers:
            if provider == "TensorrtExecutionProvider":
                provider_options.append(
                    {
                        "trt_fp16_enable": self.precision == "fp16",
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(self._trt_cache),
                    }
                )
            else:
                provider_options.append({})
        return ort.InferenceSession(
            str(path),
            session_options,
            providers=self._providers,
            provider_options=provider_options,
        )

    def run_shared(
        self, batch: np.ndarray, stats: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self._tiled_path is None:
            raise EngineError("this model was exported without the tiled graph")
        if self._tiled_session is None:  # built on first use: most requests never tile
            self._tiled_session = self._new_session(self._tiled_path)
        session = self._tiled_session
        size = {i.name: i.shape for i in session.get_inputs()}[STATS_IN][1]
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        feeds = {
            INPUT_NAME: batch,
            STATS_IN: np.zeros((len(batch), size), np.float32) if stats is None else stats,
            USE_STATS: np.array(stats is not None),
        }
        output, used = session.run([OUTPUT_NAME, STATS_OUT], feeds)
        return np.asarray(output), np.asarray(used)

    def release_memory(self, probe: np.ndarray) -> None:
        """onnxruntime's CPU arena keeps the largest call's memory for the session's life
        (hundreds of MB after a batch of large tiles); a small run with arena shrinkage gives
        back every chunk beyond the first. Only after large work: shrinking each call would
        cost the next one its allocations."""
        if self.device != "cpu":
            return
        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        probe = np.ascontiguousarray(probe[:1], dtype=np.float32)
        self.session.run([OUTPUT_NAME], {INPUT_NAME: probe}, options)
        if self._tiled_session is not None:
            size = {i.name: i.shape for i in self._tiled_session.get_inputs()}[STATS_IN][1]
            feeds = {
                INPUT_NAME: probe,
                STATS_IN: np.zeros((1, size), np.float32),
                USE_STATS: np.array(False),
            }
            self._tiled_session.run([OUTPUT_NAME], feeds, options)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.one_at_a_time and len(batch) > 1:
            return np.concatenate([self._run(batch[i : i + 1]) for i in range(len(batch))])
        return self._run(batch)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.device == "cpu":
            (out,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})
            return np.asarray(out)
        # IO binding: one host->device copy in, the output allocated on the device
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(INPUT_NAME, ort.OrtValue.ortvalue_from_numpy(batch, "cuda", 0))
        binding.bind_output(OUTPUT_NAME, "cuda")
        self.session.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0])


# --- torch ----------------------------------------------------------------------------------


class TorchRunner:
    """torch is imported here, not with the engine: an onnxruntime-only process (the API image)
    has no torch installed."""

    backend = "torch"

    def __init__(self, model: StoredModel, direction: str, options: EngineOptions) -> None:
        architecture = model.manifest.architecture
        weights_file = model.direction(direction).weights
        if architecture is None or weights_file is None:
            raise EngineError(
                f"model {model.manifest.name!r} is an imported ONNX graph; it runs on the onnx "
                "backend only (--backend onnx)"
            )
        import torch

        from models.norm_stats import has_instance_norm
        from models.registry import load_generator

        if options.device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError("--device cuda: torch sees no CUDA device here")
        use_cuda = options.device != "cpu" and torch.cuda.is_available()
        self.device = "cuda" if use_cuda else "cpu"
        self.precision = _precision(options.precision, self.device)
        if self.precision == "fp16" and not use_cuda:
            raise EngineError("fp16 with the torch backend needs CUDA; use fp32 on the CPU")
        if self.precision == "int8":
            raise EngineError("int8 graphs run on the onnx backend; use --backend onnx")
        if not use_cuda and options.threads:
            torch.set_num_threads(options.threads)

        net = load_generator(architecture, model.path(weights_file))
        self._dtype = torch.float16 if self.precision == "fp16" else torch.float32
        self._memory_format = (
            torch.channels_last if use_cuda and options.channels_last else torch.contiguous_format
        )
        net = net.eval().to(self.device, self._dtype).to(memory_format=self._memory_format)
        self._torch = torch
        self._base = net
        self._net: Callable[[torch.Tensor], torch.Tensor] = net
        self._shared: Any = None  # models.norm_stats.SharedStatsGenerator, built on first use
        self.shares_stats = has_instance_norm(net)
        if options.compile:
            self._net = _compiled(net, cuda_graphs=use_cuda and options.cuda_graphs)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            x = x.to(self.device, non_blocking=True).to(
                self._dtype, memory_format=self._memory_format
            )
            y = self._net(x)
            # note: .cpu() is the sync point with the GPU
            return y.float().cpu().numpy()

    def release_memory(self, probe: np.ndarray) -> None:
        """torch frees CPU tensors to malloc at once (see admission.return_freed_memory); on
        CUDA the caching allocator keeps blocks for the next batch, which is what a GPU
        worker wants."""

    def run_shared(
        self, batch: np.ndarray, stats: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        if self._shared is None:  # fp32: variances overflow fp16
            from models.norm_stats import SharedStatsGenerator

            self._shared = SharedStatsGenerator(self._base).float().eval()
        shared = self._shared
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            given = (
                torch.zeros(len(batch), shared.size)
                if stats is None
                else torch.from_numpy(np.ascontiguousarray(stats, dtype=np.float32))
            )
            use = torch.tensor(stats is not None, device=self.device)
            y, used = shared(x, given.to(self.device), use)
            return y.cpu().numpy(), used.cpu().numpy()


def _compiled(net: Any, *, cuda_graphs: bool) -> Any:
    """torch.compile's default mode (max-autotune spends minutes per shape: too long for a
    server's start), or reduce-overhead for CUDA graphs. Each (batch, side) is its own graph
    (dynamic=False keeps the fastest kernels); the engine's shapes are bounded by max_batch and
    the sides requests bring, so dynamo may keep more than its default 8 before falling back
    to eager."""
    import torch
    import torch._dynamo.config as dynamo_config

    limit = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    setattr(dynamo_config, limit, max(getattr(dynamo_config, limit), _COMPILED_SHAPES))
    mode = "reduce-overhead" if cuda_graphs else None
    return torch.compile(net, mode=mode, dynamic=False)


# --- engine ---------------------------------------------------------------------------------


def _onnx_has_gpu() -> bool:
    return bool(
        {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers())
    )


def _torch_has_cuda() -> bool:
    try:
        import torch
    except ImportError:  # an onnxruntime-only install (the API image)
        return False
    return bool(torch.cuda.is_available())


def _make_runner(model: StoredModel, direction: str, options: EngineOptions) -> Runner:
    """`auto`: onnxruntime, unless only torch can reach the GPU (no onnxruntime-gpu here) and
    the model has weights for torch (an imported ONNX graph has none)."""
    backend = options.backend
    if backend == "auto":
        backend = "onnx"
        has_weights = model.direction(direction).weights is not None
        if has_weights and options.device != "cpu" and not _onnx_has_gpu() and _torch_has_cuda():
            backend = "torch"
    if backend == "torch":
        return TorchRunner(model, direction, options)
    return OnnxRunner(model, direction, options)


class Engine:
    """One direction of one model, ready to translate batches of images."""

    def __init__(
        self, model: StoredModel, direction: str, options: EngineOptions = EngineOptions()
    ) -> None:
        model.direction(direction)  # a clear error for a direction the model lacks
        if options.max_batch < 1:
            raise EngineError("max_batch must be at least 1")
        rules = model.manifest.input
        if options.tile % rules.multiple or options.tile < rules.min_side:
            raise EngineError(
                f"tile {options.tile} must be a multiple of {rules.multiple} and "
                f">= {rules.min_side} for model {model.manifest.name!r}"
            )
        self.model = model
        self.direction = direction
        self.options = options
        self.runner = _make_runner(model, direction, options)
        self._large_cached = False  # a call since the last release_memory left a large cache

    @property
    def manifest(self) -> ModelManifest:
        return self.model.manifest

    def describe(self) -> dict[str, object]:
        return {
            "model": self.manifest.name,
            "direction": self.direction,
            "backend": self.runner.backend,
            "device": self.runner.device,
            "precision": self.runner.precision,
        }

    # --- network level ------------------------------------------------------------------

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The network on a float32 (N, 3, H, W) batch whose sides it accepts, in chunks."""
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise EngineError(f"expected a (N, 3, H, W) batch, got shape {batch.shape}")
        rules = self.manifest.input
        height, width = batch.shape[2:]
        if height % rules.multiple or width % rules.multiple or min(height, width) < rules.min_side:
            raise EngineError(
                f"sides must be multiples of {rules.multiple} and >= {rules.min_side}, "
                f"got {height}x{width}; use translate() to pad automatically"
            )
        size = self.options.max_batch
        chunks = [self.runner(batch[i : i + size]) for i in range(0, len(batch), size)]
        return np.concatenate(chunks)

    # --- image level --------------------------------------------------------------------

    def translate(self, images: Sequence[DecodedImage]) -> list[DecodedImage]:
        """Translate images of any size; each output has its input's size and alpha."""
        rgb: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            shape = self.batch_shape(image.height, image.width)
            if shape is None:
                rgb[index] = self.start_tiled(image).run_to_end().rgb
            else:
                groups[shape].append(index)
        size = self.options.max_batch
        largest_call = 0  # pixels
        for (height, width), members in groups.items():
            for start in range(0, len(members), size):  # one batch in memory at a time
                chunk = members[start : start + size]
                largest_call = max(largest_call, len(chunk) * height * width)
                batch = np.concatenate(
                    [
                        tiling.pad_to(image_io.to_network([images[i].rgb]), height, width)
                        for i in chunk
                    ]
                )
                for i, out in zip(chunk, self.runner(batch), strict=True):
                    h, w = images[i].rgb.shape[:2]
                    rgb[i] = image_io.from_network(tiling.crop_to(out[None], h, w))[0]
        outputs = []
        for out, image in zip(rgb, images, strict=True):
            assert out is not None
            outputs.append(DecodedImage(rgb=np.ascontiguousarray(out), alpha=image.alpha))
        if largest_call > _ARENA_KEEP_PIXELS:
            self._large_cached = True  # given back when the engine goes idle
        return outputs

    def release_if_large(self) -> bool:
        """After large calls, give back what the runtime cached for them (the batcher calls
        this when it goes idle: under steady load the cache is reused, idle it is returned)."""
        if not self._large_cached:
            return False
        self._large_cached = False
        self.release_memory()
        return True

    def release_memory(self) -> None:
        """Give back what the runtime cached for a large call (see Runner.release_memory)."""
        self.runner.release_memory(np.zeros((1, 3, *self.small_shape), np.float32))

    @property
    def small_shape(self) -> tuple[int, int]:
        """A small (height, width) the network accepts: warm-up and arena-shrinking runs."""
        rules = self.manifest.input
        return tiling.padded_shape(
            _SMALL_SIDE, _SMALL_SIDE, multiple=rules.multiple, min_side=rules.min_side
        )

    def translate_each(self, images: Sequence[DecodedImage]) -> list[DecodedImage | Exception]:
        """:meth:`translate`, but an image that fails costs only its own result.

        The batch runs in one call; if that raises, each image is retried alone so the error
        lands on the image that caused it. Every caller that serves many people at once (the
        CLI, the micro-batcher, the workers) goes through here.
        """
        try:
            return list(self.translate(images))
        except Exception:  # narrowed to the failing image below
            results: list[DecodedImage | Exception] = []
            for image in images:
                try:
                    results.append(self.translate([image])[0])
                except Exception as exc:
                    results.append(exc)
            return results

    def working_bytes(self, height: int, width: int) -> int:
        """Peak memory translating one image of this size costs (see admission)."""
        architecture = self.manifest.architecture
        tiled = self.batch_shape(height, width) is None
        return admission.working_bytes(
            height,
            width,
            padded=self._padded(height, width),
            tile=self.options.tile if tiled else None,
            tile_batch=self.tile_batch,
            widest_channels=architecture.ngf if architecture else _UNKNOWN_WIDTH,
        )

    def batch_shape(self, height: int, width: int) -> tuple[int, int] | None:
        """The padded shape an image of this size is batched at; None when it is tiled alone.

        Images with the same batch shape run in one network call: it is the grouping key of
        the micro-batcher.
        """
        if height * width > self.options.max_untiled_pixels:
            return None
        return self._padded(height, width)

    def _padded(self, height: int, width: int) -> tuple[int, int]:
        rules = self.manifest.input
        return tiling.padded_shape(height, width, multiple=rules.multiple, min_side=rules.min_side)

    def start_tiled(self, image: DecodedImage) -> TiledTranslation:
        """A large image's translation as steps (a statistics pass, then tile batches), for a
        scheduler that interleaves other work between them or drops the rest; with instance
        norm every tile is normalised with the statistics of a thumbnail of the whole image, so
        tiles agree in tone (see :mod:`models.norm_stats`)."""
        height, width = image.size
        padded = self._padded(height, width)
        return TiledTranslation(
            image,
            self.runner,
            padded=padded,
            geometry=self.tile_geometry,
            thumbnail=self._thumbnail(image.rgb, padded) if self.runner.shares_stats else None,
            on_finish=self.release_memory,
        )

    @property
    def tile_geometry(self) -> TileGeometry:
        return TileGeometry(
            tile=self.options.tile,
            overlap=self.options.tile_overlap,
            multiple=self.manifest.input.multiple,
            batch=self.tile_batch,
        )

    @property
    def tile_batch(self) -> int:
        """Tiles per network call: ``max_batch`` on a GPU; on a CPU, where batching gains
        nothing and a request waiting behind a huge image waits for one call, ``tile_batch``."""
        if self.options.tile_batch is not None:
            return min(self.options.tile_batch, self.options.max_batch)
        return self.options.max_batch if self.runner.device != "cpu" else _CPU_TILE_BATCH

    def _thumbnail(self, rgb: np.ndarray, padded: tuple[int, int]) -> np.ndarray:
        """uint8: the whole (padded) image, downscaled to the thumbnail budget when larger."""
        budget = self.options.thumbnail_pixels or self.options.max_untiled_pixels
        if padded[0] * padded[1] <= budget:  # exact: the statistics an untiled pass would use
            rows = tiling.reflect_indices(rgb.shape[0], padded[0])
            cols = tiling.reflect_indices(rgb.shape[1], padded[1])
            return np.ascontiguousarray(rgb[rows[:, None], cols[None, :]])
        rules = self.manifest.input
        height, width = tiling.thumbnail_shape(
            *rgb.shape[:2], max_pixels=budget, multiple=rules.multiple, min_side=rules.min_side
        )
        return tiling.thumbnail(rgb, height, width)
