"""CUDA memory, streams and events through ``cuda-python`` (the CUDA runtime API): pinned host
buffers, device buffers, one stream, timing events, and device pointers taken from
``__cuda_array_interface__`` objects. Every call's status is checked; a failure is a CudaError
that names the call and CUDA's error. Imported lazily, so a box without cuda-python or a GPU gets
an actionable message instead of an import crash.
"""

from __future__ import annotations

import ctypes
import importlib
import re
import threading
from dataclasses import dataclass

import numpy as np

from mfif.errors import BackendUnavailableError, CudaError, InputError
from mfif.platform import install_hint

EXTRA = "tensorrt"
PURPOSE = "CUDA buffers for TensorRT engines and GPU-resident frames"


_CUDART = None


def cudart():
    """The CUDA runtime module of cuda-python: ``cuda.bindings.runtime`` (12.6 and newer) or the
    older ``cuda.cudart``."""
    global _CUDART
    if _CUDART is None:
        try:
            _CUDART = importlib.import_module("cuda.bindings.runtime")
        except ImportError:
            try:
                _CUDART = importlib.import_module("cuda.cudart")
            except ImportError as exc:
                raise BackendUnavailableError(
                    f"Python package 'cuda-python' is not installed (needed for {PURPOSE}): {exc}. "
                    f"Install it with: {install_hint(EXTRA, 'cuda-python')}") from exc
    return _CUDART


def error_text(rt, err) -> str:
    try:
        name = rt.cudaGetErrorName(err)[1].decode()
        text = rt.cudaGetErrorString(err)[1].decode()
        return f"{name}: {text}"
    except Exception:  # the error lookup itself failed; show the raw code
        return str(err)


def check(result, what: str):
    """Unpack a cuda-python result ``(status, *values)``; raise CudaError naming ``what`` if the
    status is not cudaSuccess. Returns None, the single value, or a tuple of values."""
    rt = cudart()
    status, *values = result if isinstance(result, tuple) else (result,)
    if status != rt.cudaError_t.cudaSuccess:
        raise CudaError(f"CUDA call {what} failed: {error_text(rt, status)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    compute_capability: str   # "8.7"
    integrated: bool          # True on a Jetson (the GPU shares the system memory)
    memory_bytes: int

    @property
    def slug(self) -> str:
        """The name as a file-name piece, e.g. 'nvidia-geforce-rtx-4090'."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


def gpu_info(index: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device ``index``; a clear BackendUnavailableError when
    there is no usable GPU (no driver, no device, or the index out of range)."""
    rt = cudart()
    try:
        status, count = rt.cudaGetDeviceCount()
    except RuntimeError as exc:  # cuda-python before 12.8 raises when it cannot dlopen libcuda (no driver)
        raise BackendUnavailableError(f"no CUDA GPU is usable here (cuda-python could not load the NVIDIA driver: "
                                      f"{exc}). TensorRT needs an NVIDIA GPU with its driver installed; on a machine "
                                      "without one use backend='onnxruntime' (CPU)") from exc
    if status != rt.cudaError_t.cudaSuccess or not count:
        why = error_text(rt, status) if status != rt.cudaError_t.cudaSuccess else "the driver reports 0 devices"
        if status == rt.cudaError_t.cudaErrorInsufficientDriver:
            driver, runtime = rt.cudaDriverGetVersion()[1], rt.cudaRuntimeGetVersion()[1]
            if driver:
                major = driver // 1000
                why += (f"; the driver supports CUDA {major}.{driver % 1000 // 10} but this cuda-python is built "
                        f"for CUDA {runtime // 1000}.{runtime % 1000 // 10}: "
                        f"pip install 'cuda-python>={major},<{major + 1}'")
            else:
                why += "; no NVIDIA driver is loaded"
        raise BackendUnavailableError(f"no CUDA GPU is usable here ({why}). TensorRT needs an NVIDIA GPU with its "
                                      "driver installed; on a machine without one use backend='onnxruntime' (CPU)")
    if not 0 <= index < count:
        raise BackendUnavailableError(f"CUDA device {index} does not exist: this machine has {count} GPU(s), "
                                      f"indices 0..{count - 1}")
    props = check(rt.cudaGetDeviceProperties(index), f"cudaGetDeviceProperties({index})")
    name = props.name.split(b"\0", 1)[0].decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(index, name.strip(), f"{props.major}.{props.minor}", bool(props.integrated),
                   int(props.totalGlobalMem))


_THREAD = threading.local()  # the device this thread last made current


def set_device(index: int) -> None:
    check(cudart().cudaSetDevice(index), f"cudaSetDevice({index})")
    _THREAD.device = index


def use_device(index: int) -> None:
    """Make GPU ``index`` current in the calling thread. CUDA's current device is per thread (a new
    thread starts on GPU 0), so every thread that runs work for a 'cuda:N' backend calls this; it
    calls cudaSetDevice only when this thread's device is another one."""
    if getattr(_THREAD, "device", None) != index:
        set_device(index)


class PinnedBuffer:
    """Page-locked host memory seen as a flat numpy array of ``dtype`` (fast, asynchronous copies)."""

    def __init__(self, count: int, dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.count = int(count)
        self.nbytes = self.count * self.dtype.itemsize
        if self.nbytes <= 0:
            raise InputError(f"a pinned buffer needs a positive size, not {count} x {self.dtype}")
        self.ptr = int(check(cudart().cudaMallocHost(self.nbytes), f"cudaMallocHost({self.nbytes} bytes)"))
        raw = (ctypes.c_byte * self.nbytes).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=self.dtype, count=self.count)

    def view(self, shape: tuple[int, ...]) -> np.ndarray:
        """The first prod(shape) elements, reshaped (no copy)."""
        size = int(np.prod(shape))
        if size > self.count:
            raise InputError(f"shape {tuple(shape)} needs {size} elements; this buffer holds {self.count}")
        return self.array[:size].reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self.array = None
            ptr, self.ptr = self.ptr, 0
            check(cudart().cudaFreeHost(ptr), "cudaFreeHost")


class DeviceBuffer:
    """GPU memory of ``nbytes`` bytes."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        if self.nbytes <= 0:
            raise InputError(f"a device buffer needs a positive size, not {nbytes} bytes")
        self.ptr = int(check(cudart().cudaMalloc(self.nbytes), f"cudaMalloc({self.nbytes} bytes)"))

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            check(cudart().cudaFree(ptr), "cudaFree")


class Stream:
    """One CUDA stream with the copies and timing events a backend needs."""

    def __init__(self) -> None:
        rt = cudart()
        self._rt = rt
        self.handle = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")
        self._producer_event = None  # made on the first wait_for

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def _copy(self, dst: int, src: int, nbytes: int, kind, what: str) -> None:
        if nbytes <= 0:
            raise InputError(f"{what}: nothing to copy ({nbytes} bytes)")
        check(self._rt.cudaMemcpyAsync(dst, src, nbytes, kind, self.handle), f"cudaMemcpyAsync {what} ({nbytes} bytes)")

    def to_device(self, device: DeviceBuffer, host: PinnedBuffer, nbytes: int) -> None:
        if nbytes > min(device.nbytes, host.nbytes):
            raise InputError(f"host-to-device copy of {nbytes} bytes exceeds the buffers ({host.nbytes} host, "
                             f"{device.nbytes} device bytes)")
        self._copy(device.ptr, host.ptr, nbytes, self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice, "host to device")

    def to_host(self, host: PinnedBuffer, device: DeviceBuffer | int, nbytes: int) -> None:
        src = device.ptr if isinstance(device, DeviceBuffer) else int(device)
        limit = min(host.nbytes, device.nbytes) if isinstance(device, DeviceBuffer) else host.nbytes
        if nbytes > limit:
            raise InputError(f"device-to-host copy of {nbytes} bytes exceeds the buffers ({limit} bytes)")
        self._copy(host.ptr, src, nbytes, self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, "device to host")

    def wait_for(self, producer: int) -> None:
        """Make the work queued next on this stream wait for what a producer queued so far on its
        stream, as ``__cuda_array_interface__`` names it: 1 the legacy default stream, 2 the
        calling thread's per-thread default stream, otherwise a stream handle (0 is not allowed:
        its meaning depends on how the producer was compiled). The wait happens on the GPU (an
        event), so the host does not block."""
        rt = self._rt
        producer = int(producer)
        if producer == 0:
            raise InputError("a device array names stream 0, which __cuda_array_interface__ v3 does not allow "
                             "(ambiguous); the producer should give 1 (legacy default stream), 2 (per-thread default "
                             "stream) or its stream's handle")
        special = {1: getattr(rt, "cudaStreamLegacy", None), 2: getattr(rt, "cudaStreamPerThread", None)}
        handle = special.get(producer) or rt.cudaStream_t(producer)
        if self._producer_event is None:
            self._producer_event = check(rt.cudaEventCreateWithFlags(rt.cudaEventDisableTiming),
                                         "cudaEventCreateWithFlags")
        check(rt.cudaEventRecord(self._producer_event, handle), f"cudaEventRecord on the producer's stream {producer}")
        check(rt.cudaStreamWaitEvent(self.handle, self._producer_event, 0), "cudaStreamWaitEvent (producer)")

    def synchronize(self) -> None:
        check(self._rt.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def destroy(self) -> None:
        if self._producer_event is not None:
            event, self._producer_event = self._producer_event, None
            check(self._rt.cudaEventDestroy(event), "cudaEventDestroy")
        if self.handle is not None:
            handle, self.handle = self.handle, None
            check(self._rt.cudaStreamDestroy(handle), "cudaStreamDestroy")


class Timer:
    """CUDA events recorded on a stream between stages; ``elapsed()`` after a synchronize gives
    each stage's milliseconds as measured on the GPU."""

    def __init__(self, stream: Stream, stages: tuple[str, ...]) -> None:
        rt = cudart()
        self._rt = rt
        self.stream = stream
        self.stages = stages
        self.events = [check(rt.cudaEventCreate(), "cudaEventCreate") for _ in range(len(stages) + 1)]

    def mark(self, index: int) -> None:
        check(self._rt.cudaEventRecord(self.events[index], self.stream.handle), "cudaEventRecord")

    def elapsed(self) -> dict[str, float]:
        out = {}
        for i, stage in enumerate(self.stages):
            out[stage] = float(check(self._rt.cudaEventElapsedTime(self.events[i], self.events[i + 1]),
                                     "cudaEventElapsedTime"))
        return out

    def destroy(self) -> None:
        events, self.events = self.events, []
        for event in events:
            check(self._rt.cudaEventDestroy(event), "cudaEventDestroy")


def round_trip(frame: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Copy a float32 host frame to the device and back through pinned memory, timed with CUDA
    events: a check of the copy path and its speed. Returns the copy and the h2d/d2h milliseconds."""
    host_in, host_out = PinnedBuffer(frame.size, np.float32), PinnedBuffer(frame.size, np.float32)
    device, stream = DeviceBuffer(frame.nbytes), Stream()
    timer = Timer(stream, ("h2d", "d2h"))
    try:
        host_in.view(frame.shape)[...] = frame
        timer.mark(0)
        stream.to_device(device, host_in, frame.nbytes)
        timer.mark(1)
        stream.to_host(host_out, device, frame.nbytes)
        timer.mark(2)
        stream.synchronize()
        return host_out.view(frame.shape).copy(), timer.elapsed()
    finally:
        timer.destroy()
        stream.destroy()
        device.free()
        host_in.free()
        host_out.free()


def device_pointer(obj, expected_shape: tuple[int, ...] | None = None,
                   dtype="float32") -> tuple[int, tuple[int, ...], int | None]:
    """``(pointer, shape, stream)`` of device memory the caller already has: an object with
    ``__cuda_array_interface__`` (CuPy, PyTorch CUDA tensors, Numba) that is C-contiguous and of
    ``dtype``, or a plain integer pointer together with ``expected_shape``. ``stream`` is the
    producer's stream from the interface (None when it gives none)."""
    want = np.dtype(dtype)
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, bool):
        if expected_shape is None:
            raise InputError("a raw device pointer needs its shape: pass shape=(1, K, C, H, W)")
        if int(obj) == 0:
            raise InputError("device pointer is 0 (null)")
        return int(obj), tuple(int(s) for s in expected_shape), None
    cai = getattr(obj, "__cuda_array_interface__", None)
    if not isinstance(cai, dict):
        raise InputError(f"expected an int device pointer or an object with __cuda_array_interface__, got "
                         f"{type(obj).__name__}")
    try:
        shape = tuple(int(s) for s in cai["shape"])
        ptr, _readonly = cai["data"]
        typestr = cai["typestr"]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"malformed __cuda_array_interface__ {cai!r}: {exc}") from exc
    if np.dtype(typestr) != want:
        raise InputError(f"device array has dtype {np.dtype(typestr)} ({typestr}); the engine input needs {want}")
    strides = cai.get("strides")
    if strides is not None:
        contiguous = []
        step = want.itemsize
        for extent in reversed(shape):
            contiguous.insert(0, step)
            step *= extent
        if tuple(strides) != tuple(contiguous) and int(np.prod(shape)) > 1:
            raise InputError(f"device array with shape {shape} has strides {tuple(strides)}, not C-contiguous "
                             f"{tuple(contiguous)}; make it contiguous first (torch: .contiguous(), "
                             "cupy.ascontiguousarray)")
    if cai.get("mask") is not None:
        raise InputError("masked device arrays are not supported")
    if expected_shape is not None and tuple(expected_shape) != shape:
        raise InputError(f"device array shape {shape} differs from the given shape {tuple(expected_shape)}")
    if not ptr:
        raise InputError(f"device array of shape {shape} has a null data pointer")
    stream = cai.get("stream")
    if stream is not None and int(stream) == 0:
        raise InputError("device array names stream 0, which __cuda_array_interface__ v3 does not allow (ambiguous); "
                         "the producer should give 1 (legacy default stream), 2 (per-thread default stream), its "
                         "stream's handle, or None when no synchronization is needed")
    return int(ptr), shape, (int(stream) if stream is not None else None)


class DeviceView:
    """A device array the backend owns (valid until its next run), exposed through
    ``__cuda_array_interface__`` so CuPy, PyTorch or Numba can wrap it without a copy."""

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype="float32") -> None:
        self.ptr = int(ptr)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "version": 3,
                "strides": None, "stream": None}

    def __repr__(self) -> str:
        return f"DeviceView(ptr=0x{self.ptr:x}, shape={self.shape}, dtype={self.dtype})"
