"""ONNX Runtime backend: the CPU provider tuned for latency, the CUDA (or TensorRT) provider when
present, and I/O binding so that no run allocates or copies more than it must.

ONNX Runtime quietly drops a provider it cannot load (a CPU-only wheel, missing CUDA or cuDNN
libraries) and runs on the CPU. This backend compares the providers the session really uses with
the ones asked for: an explicit request (``device='cuda'`` or ``providers=[...]``) that did not
take effect is an error; with ``device='auto'`` a CUDA provider that failed to load is a loud
RuntimeWarning, and ``device`` always names what runs.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
import warnings
from pathlib import Path

import numpy as np

from mfif.errors import BackendUnavailableError, ConfigError, InferenceError, MfifError, ModelFileError
from mfif.device import parse_device
from mfif.lazy import require
from mfif.platform import install_hint
from mfif.runtime.backends import DEFAULT_MODEL
from mfif.runtime.backends.base import Backend
from mfif.runtime.model_info import ModelInfo, verify_graph

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)


def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads share a core's arithmetic units, so more
    intra-op threads than cores only adds contention)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    logical, cores = 0, set()
    try:
        physical_id = "0"
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "processor":
                    logical += 1
                elif key == "physical id":
                    physical_id = value
                elif key == "core id":
                    cores.add((physical_id, value))
    except OSError:
        pass
    if cores and logical > len(cores):  # SMT: scale the usable logical CPUs down to cores
        usable = max(1, usable * len(cores) // logical)
    return max(1, usable)


# ONNX Runtime graph optimization levels. 'extended' is the default: 'all' adds the CPU's NCHWc
# layout, which pays for wide convolutions (xu2018: 375 vs 467 ms per 320x240 pair) but costs the
# narrow focusmap more in layout reorders than it saves (1080p pair: 160 vs 144 ms, 640x480: 18.5
# vs 15.2 ms; 2-core Xeon, onnxruntime 1.31).
GRAPH_OPTIMIZATION = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def requested_providers(device: str, providers: list | None, available: list[str]) -> tuple[list, bool]:
    """The provider list to ask ONNX Runtime for, and whether the first one is required (strict).

    ``providers`` (names or (name, options) pairs, passed through unchanged) replaces ``device``:
    'auto' takes CUDA when this onnxruntime build has it; 'cpu'; 'cuda' or 'cuda:N'."""
    wanted = parse_device(device)
    if providers is not None:
        if wanted.kind != "auto":
            raise ConfigError(f"pass either device={device!r} or providers={providers!r}, not both")
        if not providers:
            raise ConfigError("providers=[] names no execution provider; leave it out for the default")
        return list(providers), True
    if wanted.kind == "auto":
        return ([CUDA, CPU] if CUDA in available else [CPU]), False
    if wanted.kind == "cpu":
        return [CPU], True
    return [(CUDA, {"device_id": wanted.index or 0}), CPU], True


def provider_name(entry) -> str:
    return entry[0] if isinstance(entry, (tuple, list)) else entry


def preload_gpu_libraries(ort, requested: list) -> None:
    """Load the libraries a GPU provider needs before the session asks for them: the CUDA and
    cuDNN wheels of onnxruntime-gpu's ``cuda``/``cudnn`` extras (which are not on the loader's
    path; ``onnxruntime.preload_dlls``, 1.21 and newer) and, for the TensorRT provider, TensorRT's
    libraries (importing ``tensorrt`` loads them from its wheel). Best effort: what is missing
    shows up as a provider that did not load, which check_providers reports."""
    names = {provider_name(entry) for entry in requested}
    if not names & set(GPU_PROVIDERS):
        return
    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception:  # noqa: BLE001 - e.g. no nvidia wheels: the system's libraries may serve
            pass
    if TENSORRT in names:
        try:
            import tensorrt  # noqa: F401 - loads libnvinfer into the process for ONNX Runtime's provider
        except ImportError:
            pass


def check_providers(requested: list, active: list[str], available: list[str], strict: bool) -> str | None:
    """Compare what was asked with what the session runs. Raises when a strict request did not take
    effect; returns a warning text when an automatic choice fell back; None when all is well."""
    wanted = provider_name(requested[0])
    if wanted in active[:1]:
        return None
    if wanted not in available:
        why = (f"this onnxruntime build has no {wanted} (available: {', '.join(available)}); "
               f"install the GPU build: {install_hint('gpu', 'onnxruntime-gpu')}")
    else:
        why = (f"{wanted} is in this onnxruntime build but failed to load, most often because the CUDA, "
               "cuDNN or TensorRT libraries it was built for are missing or of another version "
               "(see ONNX Runtime's log above)")
    message = f"asked for {wanted} but ONNX Runtime runs on {', '.join(active)}: {why}"
    if strict:
        raise BackendUnavailableError(message + "; or pass device='cpu' to run on the CPU on purpose")
    return message + ". Running on the CPU."


class OnnxRuntimeBackend(Backend):
    """``OnnxRuntimeBackend(path=None, device='auto', providers=None, threads=None,
    graph_optimization='extended')``: an ONNX file (None: the shipped default model) in an ONNX
    Runtime session. ``providers``: execution providers passed through as given (names or
    ``(name, options)`` pairs) instead of ``device``. ``threads``: intra-op threads (default: the
    physical cores). ``graph_optimization``: 'basic', 'extended' or 'all'."""

    name = "onnxruntime"
    _use_copy_tensors = True  # False once ort.copy_tensors failed here (see _copy_without_copy_tensors)

    def __init__(self, path: str | Path | None = None, device: str = "auto", providers: list | None = None,
                 threads: int | None = None, graph_optimization: str = "extended") -> None:
        super().__init__()
        ort = require("onnxruntime", extra="cpu", purpose="the ONNX Runtime backend")
        self._ort = ort
        self.path = DEFAULT_MODEL if path is None else Path(path)
        if not self.path.is_file():
            hint = "; reinstall mfif, or pass the path of an ONNX file" if path is None else ""
            raise ModelFileError(f"model file not found: {self.path}{hint}")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"threads must be a positive integer, not {threads!r}")
        if graph_optimization not in GRAPH_OPTIMIZATION:
            raise ConfigError(f"graph_optimization must be one of {', '.join(GRAPH_OPTIMIZATION)}, not {graph_optimization!r}")
        available = ort.get_available_providers()
        requested, strict = requested_providers(device, providers, available)
        preload_gpu_libraries(ort, requested)

        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION[graph_optimization])
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.threads = threads or physical_cores()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # Idle pool threads sleep instead of spinning: capture, decode and display threads share the
        # cores (measured on the 2-core box under load: 63 ms instead of 86 ms per 640x480 pair).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=requested)
        except MfifError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
            raise ModelFileError(f"ONNX Runtime cannot load {self.path} ({self.path.stat().st_size} bytes): {exc}. "
                                 "The file may be truncated or not an ONNX model: re-export it with 'mfif export'") from exc

        active = self.session.get_providers()
        warning = check_providers(requested, active, available, strict)
        if warning:
            warnings.warn(warning, RuntimeWarning, stacklevel=4)
        self.provider = active[0]
        options_used = self.session.get_provider_options().get(self.provider, {})
        self.device_id = int(options_used.get("device_id", 0) or 0)
        self.on_gpu = self.provider in GPU_PROVIDERS
        self.info = self._read_info()
        self._input: np.ndarray | None = None
        self._binding = None
        self._key = None

    @property
    def device(self) -> str:
        if self.on_gpu:
            return f"{self.provider} (GPU {self.device_id})"
        return f"{self.provider} ({self.threads} threads)"

    def _read_info(self) -> ModelInfo:
        """ModelInfo from the file's metadata, checked against (and completed by) its real I/O."""
        info = ModelInfo.from_metadata(self.session.get_modelmeta().custom_metadata_map, source=str(self.path))
        verify_graph(self.path, info)
        inputs = {node.name: node for node in self.session.get_inputs()}
        outputs = [node.name for node in self.session.get_outputs()]
        source = inputs.get(info.input_name)
        if source is None or len(source.shape) != 5:
            raise ModelFileError(f"{self.path}: metadata names input {info.input_name!r} (B,K,C,H,W) but the graph "
                                 f"has inputs {[(n.name, n.shape) for n in inputs.values()]}")
        if source.type != "tensor(float)":
            raise ModelFileError(f"{self.path}: input {info.input_name!r} is {source.type}; the runtime feeds float32 "
                                 "(FP16 models keep float32 inputs and outputs: re-export with 'mfif export')")
        missing = [name for name in info.output_names if name not in outputs]
        if missing:
            raise ModelFileError(f"{self.path}: metadata names outputs {list(info.output_names)} but the graph has {outputs}")
        fixed = {}
        count, channels = source.shape[1], source.shape[2]
        if isinstance(count, int) and info.sources != count:
            fixed["sources"] = count
        if isinstance(channels, int) and info.channels != channels:
            fixed["channels"] = channels
        return dataclasses.replace(info, **fixed) if fixed else info

    def for_another_thread(self) -> "OnnxRuntimeBackend":
        """The same session (ONNX Runtime takes concurrent runs on one session; no second load and
        graph optimization, one memory arena) with a binding and buffers of its own."""
        twin = copy.copy(self)
        twin.last_timings = {}
        twin._input = twin._binding = twin._key = None
        return twin

    def input_buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        """Host memory that ONNX Runtime reads in place on the CPU (bound once); on a GPU provider
        the one host-to-device copy reads it."""
        if self._input is None or self._input.shape != tuple(shape):
            self._input = np.empty(shape, np.float32)
            self._key = None
        return self._input

    def _bind(self, sources: np.ndarray, want_weights: bool) -> None:
        """(Re)bind inputs and outputs; done only when the shape or the wanted outputs change."""
        ort = self._ort
        batch, count, channels, height, width = sources.shape
        shapes = {"fused": (batch, channels, height, width), "weights": (batch, count, height, width)}
        names = ["fused", "weights"] if want_weights else ["fused"]
        binding = self.session.io_binding()
        self._host = {name: np.empty(shapes[name], np.float32) for name in names}
        self._device_out = {}
        if self.on_gpu:
            self._device_input = ort.OrtValue.ortvalue_from_shape_and_type(sources.shape, np.float32, "cuda", self.device_id)
            binding.bind_ortvalue_input(self.info.input_name, self._device_input)
        else:
            binding.bind_input(self.info.input_name, "cpu", 0, np.float32, list(sources.shape), sources.ctypes.data)
        for name in names:
            if self.on_gpu and self._use_copy_tensors and hasattr(ort, "copy_tensors"):  # >= 1.23: d2h timed alone
                value = ort.OrtValue.ortvalue_from_shape_and_type(shapes[name], np.float32, "cuda", self.device_id)
                binding.bind_ortvalue_output(name, value)
                self._device_out[name] = value
            else:  # ONNX Runtime writes the output straight into the host array
                binding.bind_output(name, "cpu", 0, np.float32, list(shapes[name]), self._host[name].ctypes.data)
        self._copies = ([ort.OrtValue.ortvalue_from_numpy(self._host[name]) for name in self._device_out],
                        list(self._device_out.values()))
        self._binding = binding
        self._key = (sources.shape, want_weights)

    def _copy_without_copy_tensors(self) -> None:
        """ort.copy_tensors needs the provider's data transfer registered, which not every
        onnxruntime-gpu build does for its own CUDA provider: copy this run's outputs through
        OrtValue.numpy() and from the next run on let ONNX Runtime write the outputs to the host."""
        for name, value in self._device_out.items():
            np.copyto(self._host[name], value.numpy())
        self._use_copy_tensors = False
        self._key = None  # rebind with host outputs

    def _run(self, sources: np.ndarray, want_weights: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if self._key != (sources.shape, want_weights):
            self._bind(sources, want_weights)
        start = time.perf_counter()
        if self.on_gpu:
            self._device_input.update_inplace(sources)
        uploaded = time.perf_counter()
        try:
            self.session.run_with_iobinding(self._binding)
        except Exception as exc:
            raise InferenceError(f"ONNX Runtime failed to run {self.path.name} on sources of shape {sources.shape}: "
                                 f"{exc}") from exc
        computed = time.perf_counter()
        if self._device_out:
            host, device = self._copies
            try:
                self._ort.copy_tensors(device, host)
            except Exception:  # noqa: BLE001 - no data transfer registered for this provider in this build
                self._copy_without_copy_tensors()
        done = time.perf_counter()
        self.last_timings = {"h2d": (uploaded - start) * 1e3, "compute": (computed - uploaded) * 1e3,
                             "d2h": (done - computed) * 1e3}
        return self._host["fused"], self._host.get("weights")
