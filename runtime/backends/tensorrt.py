"""TensorRT backend: runs an engine built by ``mfif build`` with buffers and a stream from
cuda-python. TensorRT and cuda-python are imported when a backend is made, never at module import.

Before anything is deserialized, the engine file is checked against its record (size and sha256,
so a truncated or corrupted file is an error, not a crash) and the record's cache key against this
TensorRT version and GPU. One execution context per backend (one backend per Fuser;
``for_another_thread`` adds a context on the same engine). Host buffers are pinned and sized, like
the device buffers, for the profiles' max: the Fuser preprocesses straight into the pinned input,
and reads the fused frame from the pinned output, so a frame moves three times (host to device,
device to host, and the weights when asked for) and nothing is allocated per frame. Copies are
asynchronous on one stream, and the context's profile, input shape and tensor addresses are re-set
only when they change. Every CUDA and TensorRT call's result is checked.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import numpy as np

from mfif.errors import (BackendUnavailableError, ConfigError, CudaError, EngineMismatchError, InferenceError,
                         InputError, ModelFileError)
from mfif.device import parse_device
from mfif.lazy import require
from mfif.runtime.backends.base import BACKEND_STAGES, Backend
from mfif.runtime.engine_cache import Profile, choose_profile, load_verified, runtime_problems

MIN_TENSORRT = 10


def import_tensorrt():
    trt = require("tensorrt", extra="tensorrt", purpose="TensorRT engines",
                  needs="Runtime")  # a 'tensorrt' folder of type stubs (tensorrt-stubs) is not TensorRT
    major = int(str(trt.__version__).split(".")[0])
    if major < MIN_TENSORRT:
        raise BackendUnavailableError(f"TensorRT {trt.__version__} is installed; mfif needs TensorRT {MIN_TENSORRT} "
                                      "or newer (on a Jetson: JetPack 6.1 or newer)")
    return trt


def make_logger(trt, verbose: bool = False):
    """A TensorRT logger that prints warnings (everything when ``verbose``) and keeps the errors,
    so an exception can say what TensorRT said. Thread-safe: the builder logs from many threads."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self._lock = threading.Lock()

        def log(self, severity, msg) -> None:
            with self._lock:
                level = int(severity)  # INTERNAL_ERROR 0, ERROR 1, WARNING 2, INFO 3, VERBOSE 4
                if level <= int(trt.ILogger.Severity.ERROR):
                    self.errors.append(str(msg))
                if verbose or level <= int(trt.ILogger.Severity.WARNING):
                    print(f"[TensorRT {str(severity).rsplit('.', 1)[-1]}] {msg}", flush=True)

        def take_errors(self) -> str:
            with self._lock:
                text, self.errors = "; ".join(self.errors[-5:]), []
            return text or "no message from TensorRT"

    return Logger()


class Bindings:
    """What the execution context was last told (active profile, input shape, tensor addresses),
    so each run re-sets only what changed. After a profile switch everything is set again."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything (after a failure), so the next run sets it all again."""
        self.profile: int | None = None
        self.shape: tuple[int, ...] | None = None
        self.addresses: dict[str, int] = {}

    def plan(self, profile: int, shape: tuple[int, ...], addresses: dict[str, int]) -> list[tuple]:
        """The calls needed: ("profile", index), ("shape", shape), ("address", name, pointer)."""
        actions: list[tuple] = []
        switched = profile != self.profile
        if switched:
            actions.append(("profile", profile))
        if switched or tuple(shape) != self.shape:
            actions.append(("shape", tuple(shape)))
        for name, ptr in addresses.items():
            if switched or self.addresses.get(name) != ptr:
                actions.append(("address", name, ptr))
        return actions

    def commit(self, profile: int, shape: tuple[int, ...], addresses: dict[str, int]) -> None:
        self.profile, self.shape = profile, tuple(shape)
        self.addresses.update(addresses)


def device_index(device: str) -> int:
    """The GPU index that TensorRT uses for ``device``: 'auto' and 'cuda' are GPU 0, 'cuda:N' GPU N."""
    wanted = parse_device(device)
    if wanted.kind == "cpu":
        raise ConfigError("TensorRT runs on an NVIDIA GPU, not device='cpu'; on the CPU run the ONNX file with "
                          "backend='onnxruntime'")
    return wanted.index or 0


class TensorRTBackend(Backend):
    """``TensorRTBackend(engine_path, device='auto', profile=None, verbose=False)``.

    ``device``: 'auto' or 'cuda' (GPU 0), or 'cuda:N'. ``profile`` pins one optimization profile by
    index (default: per frame, the profile whose range holds the frame and whose opt size is
    nearest). ``run`` takes host arrays (best: the pinned :meth:`input_buffer`); ``run_device``
    takes device memory the caller already has (zero-copy input).
    """

    name = "tensorrt"

    def __init__(self, path: str | Path, device: str = "auto", profile: int | None = None, verbose: bool = False) -> None:
        super().__init__()
        self._closed = True
        self.path = str(path)
        device_id = device_index(device)
        data, record = load_verified(path)  # file and record checked before any import or deserialization
        self.record = record
        self.info = record.model_info
        trt = import_tensorrt()
        from mfif.runtime import cuda_buffers as cb

        self._cb = cb
        gpu = cb.gpu_info(device_id)
        problems = runtime_problems(record.key, trt.__version__, gpu.name, gpu.compute_capability)
        if problems:
            onnx = record.onnx_path or "MODEL.onnx"
            raise EngineMismatchError(f"engine {path} cannot run here: " + "; ".join(problems) + ". Engines are not "
                                      "portable across GPUs or TensorRT versions: rebuild it on this machine with "
                                      f"'mfif build {onnx}' (a Jetson builds on the device itself)")
        self.gpu = gpu
        self._trt = trt
        self._tensorrt_version = trt.__version__
        cb.set_device(device_id)
        self._logger = make_logger(trt, verbose)
        self._runtime = trt.Runtime(self._logger)
        if record.key.version_compatible:
            self._runtime.engine_host_code_allowed = True  # the plan carries its lean runtime (host code)
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise ModelFileError(f"TensorRT could not deserialize {path}: {self._logger.take_errors()}; rebuild it "
                                 "with 'mfif build'")
        self._inspect_tensors(trt)
        if profile is not None and not 0 <= int(profile) < len(self.profiles):
            raise ConfigError(f"profile {profile} does not exist: engine {path} has {len(self.profiles)} "
                             f"profile(s), indices 0..{len(self.profiles) - 1}")
        self._pinned_profile = None if profile is None else int(profile)
        self._allocated: list = []
        self._closed = False
        try:
            self._allocate()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------------- setup

    def _inspect_tensors(self, trt) -> None:
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if inputs != [self.info.input_name] or sorted(outputs) != sorted(self.info.output_names):
            raise ModelFileError(f"engine {self.path} has inputs {inputs} and outputs {outputs}; its record says input "
                                 f"{self.info.input_name!r} and outputs {list(self.info.output_names)}; rebuild it")
        self.input_name, self.output_names = inputs[0], outputs
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        other = {n: str(dtype) for n, dtype in self._dtypes.items() if dtype != np.float32}
        if other:
            raise ModelFileError(f"engine {self.path} has tensors {other}; the runtime feeds and reads float32 (FP16 and "
                                 "INT8 models keep float32 inputs and outputs): rebuild it from the ONNX with 'mfif build'")
        count = engine.num_optimization_profiles
        self.profiles = [Profile.from_shapes(*(tuple(d) for d in engine.get_tensor_profile_shape(self.input_name, i)))
                         for i in range(count)]
        if list(self.record.key.profiles) != self.profiles:
            raise ModelFileError(f"engine {self.path} reports profiles {[p.describe() for p in self.profiles]} but "
                                 f"its record says {[p.describe() for p in self.record.key.profiles]}; rebuild it")

    def _allocate(self) -> None:
        cb = self._cb
        cb.use_device(self.gpu.index)
        self._stream = cb.Stream()
        self._allocated.append(self._stream)
        self._timer = cb.Timer(self._stream, BACKEND_STAGES)
        self._allocated.append(self._timer)
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise CudaError(f"TensorRT could not create an execution context for {self.path} (out of GPU "
                               f"memory?): {self._logger.take_errors()}")
        # Size every buffer for the largest shape any profile allows.
        largest = dict.fromkeys([self.input_name, *self.output_names], 0)
        for index, profile in enumerate(self.profiles):
            self._check(self._context.set_optimization_profile_async(index, self._stream.ptr),
                        f"set_optimization_profile_async({index})")
            max_shape = profile.shapes()[2]
            self._check(self._context.set_input_shape(self.input_name, max_shape), f"set_input_shape({max_shape})")
            largest[self.input_name] = max(largest[self.input_name], int(np.prod(max_shape)))
            for name in self.output_names:
                out_shape = tuple(self._context.get_tensor_shape(name))
                if min(out_shape) < 0:
                    raise ModelFileError(f"engine {self.path}: output {name} has unresolved shape {out_shape} at "
                                         f"input {max_shape}")
                largest[name] = max(largest[name], int(np.prod(out_shape)))
        self._stream.synchronize()
        self._host, self._device = {}, {}
        for name, count in largest.items():
            self._host[name] = cb.PinnedBuffer(count, self._dtypes[name])
            self._allocated.append(self._host[name])
            self._device[name] = cb.DeviceBuffer(count * self._dtypes[name].itemsize)
            self._allocated.append(self._device[name])
        self._bindings = Bindings()
        self._out_shapes: dict[str, tuple[int, ...]] = {}
        self._input: np.ndarray | None = None

    def _check(self, ok, what: str) -> None:
        if not ok:
            raise InferenceError(f"TensorRT {what} failed for {self.path}: {self._logger.take_errors()}")

    # ------------------------------------------------------------------------------------ running

    @property
    def device(self) -> str:
        gpu = self.gpu
        return f"TensorRT {self._tensorrt_version} on {gpu.name} (GPU {gpu.index}, compute {gpu.compute_capability})"

    def _choose(self, shape: tuple[int, ...]) -> int:
        if self._pinned_profile is None:
            return choose_profile(self.profiles, shape)
        profile = self.profiles[self._pinned_profile]
        if not profile.contains(shape):
            raise InputError(f"a frame of shape {tuple(shape)} is outside the pinned profile {self._pinned_profile}: "
                             f"{profile.describe()}; pass profile=None to choose among all "
                             f"{len(self.profiles)} profile(s), or rebuild the engine with a wider range")
        return self._pinned_profile

    def for_another_thread(self) -> "TensorRTBackend":
        """A new execution context on the same deserialized engine, with its own stream and
        buffers (TensorRT runs several contexts of one engine at once)."""
        self._check_open()
        twin = copy.copy(self)
        twin.last_timings = {}
        twin._allocated = []
        try:
            twin._allocate()
        except BaseException:
            twin.close()
            raise
        return twin

    def input_buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        """A view of the pinned input buffer; a frame outside the engine's profiles is an
        InputError that names their ranges."""
        self._check_open()
        shape = tuple(int(s) for s in shape)
        if self._input is None or self._input.shape != shape:
            self._choose(shape)
            self._input = self._host[self.input_name].view(shape)
        return self._input

    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailableError(f"TensorRT backend for {self.path} is closed; make a new one")

    def _bind(self, shape: tuple[int, ...], input_ptr: int) -> None:
        self._check_open()
        self._cb.use_device(self.gpu.index)  # CUDA's current device is per thread: a stream fuses in its own
        profile = self._choose(shape)
        addresses = {self.input_name: input_ptr, **{n: self._device[n].ptr for n in self.output_names}}
        actions = self._bindings.plan(profile, shape, addresses)
        if not actions:
            return
        try:
            for action in actions:
                if action[0] == "profile":
                    self._check(self._context.set_optimization_profile_async(profile, self._stream.ptr),
                                f"set_optimization_profile_async({profile})")
                elif action[0] == "shape":
                    if not self._context.set_input_shape(self.input_name, shape):
                        raise InputError(f"TensorRT refused input shape {shape} for profile {profile} "
                                         f"({self.profiles[profile].describe()}): {self._logger.take_errors()}")
                    self._out_shapes = {n: tuple(self._context.get_tensor_shape(n)) for n in self.output_names}
                else:
                    _, name, ptr = action
                    self._check(self._context.set_tensor_address(name, ptr), f"set_tensor_address({name})")
        except BaseException:
            self._bindings.reset()
            raise
        self._bindings.commit(profile, shape, addresses)

    def _execute(self) -> None:
        self._check(self._context.execute_async_v3(self._stream.ptr), "execute_async_v3")

    def _fetch(self, want_weights: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Queue the device-to-host copies into the pinned outputs, wait for the stream, return
        views of them (valid until the next run)."""
        names = ["fused", "weights"] if want_weights else ["fused"]
        views = {}
        for name in names:
            view = self._host[name].view(self._out_shapes[name])
            self._stream.to_host(self._host[name], self._device[name], view.nbytes)
            views[name] = view
        self._timer.mark(3)
        self._stream.synchronize()
        self.last_timings = self._timer.elapsed()
        return views["fused"], views.get("weights")

    def _run(self, sources: np.ndarray, want_weights: bool) -> tuple[np.ndarray, np.ndarray | None]:
        self._bind(sources.shape, self._device[self.input_name].ptr)
        self._timer.mark(0)
        self._stream.to_device(self._device[self.input_name], self._host[self.input_name], sources.nbytes)
        self._timer.mark(1)
        self._execute()
        self._timer.mark(2)
        return self._fetch(want_weights)

    def run_device(self, sources, shape: tuple[int, ...] | None = None, want_weights: bool = False,
                   copy_to_host: bool = True):
        """Zero-copy input: ``sources`` is an object with ``__cuda_array_interface__`` (CuPy, a CUDA
        torch tensor) or an int device pointer with ``shape``; (1, K, C, H, W) contiguous, of the
        engine input's dtype (float32). Returns host arrays like ``run``, or with
        ``copy_to_host=False`` DeviceViews of the backend's output buffers (valid until the next run;
        ``cupy.asarray(view)`` wraps one without a copy)."""
        assert self.info.has_weight_map or not want_weights, "the caller checks that weights exist"
        ptr, shape, producer = self._cb.device_pointer(sources, shape, self._dtypes[self.input_name])
        if len(shape) != 5:
            raise InputError(f"TensorRT backend takes sources of shape (1, K, C, H, W), got {shape}")
        self._bind(shape, ptr)
        if producer is not None:
            self._stream.wait_for(producer)
        self._timer.mark(0)
        self._timer.mark(1)  # no host-to-device copy
        self._execute()
        self._timer.mark(2)
        if copy_to_host:
            return self._fetch(want_weights)
        self._timer.mark(3)
        self._stream.synchronize()
        self.last_timings = self._timer.elapsed()
        views = {n: self._cb.DeviceView(self._device[n].ptr, self._out_shapes[n], self._dtypes[n])
                 for n in self.output_names}
        return views["fused"], (views.get("weights") if want_weights else None)

    def close(self) -> None:
        """Free the context, engine, buffers and stream; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._input = None  # a view of pinned memory freed below
        try:
            self._stream.synchronize()
        except Exception:  # a failed device: free what can be freed anyway
            pass
        self._context = None
        self._engine = None
        errors = []
        for item in reversed(self._allocated):
            try:
                if hasattr(item, "free"):
                    item.free()
                else:
                    item.destroy()
            except Exception as exc:  # keep freeing the rest, report the first failure
                errors.append(exc)
        self._allocated = []
        if errors:
            raise errors[0]
