"""The backends an :class:`~service.inference.engine.Engine` runs a network with, behind one
:class:`Runner` interface: onnxruntime (TensorRT → CUDA → CPU providers) and PyTorch (weights
from the manifest, fp16 and channels_last on CUDA, optionally compiled).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from models.manifest import INPUT_NAME, OUTPUT_NAME, STATS_IN, STATS_OUT, USE_STATS
from service.errors import BackendUnavailableError, EngineError
from service.inference.engine_options import EngineOptions
from service.settings import PrecisionName
from service.store.model_store import StoredModel

__all__ = ["OnnxRunner", "Runner", "TorchRunner", "make_runner"]

_COMPILED_SHAPES = 64  # torch.compile: graphs kept per generator (one per batch x side)
_ORT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


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


def make_runner(model: StoredModel, direction: str, options: EngineOptions) -> Runner:
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
