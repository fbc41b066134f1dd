"""Frames that already live on the GPU: anything exposing ``__cuda_array_interface__`` (CuPy,
Numba, PyTorch CUDA tensors, jetson-utils' cudaImage) or DLPack (``__dlpack__`` and
``__dlpack_device__``). :func:`describe` reads where the pixels are (pointer, shape, byte strides,
dtype, device, the producer's stream) without copying anything and without importing a GPU
package, so the bookkeeping is testable on any machine; :mod:`mfif.runtime.gpu_fuse` then fuses
such frames on the GPU.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from mfif.errors import InputError

# DLPack device types (dlpack.h)
KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED = 1, 2, 3, 13
DLPACK_DTYPES = {(0, 8): np.int8, (1, 8): np.uint8, (0, 16): np.int16, (1, 16): np.uint16, (0, 32): np.int32,
                 (2, 16): np.float16, (2, 32): np.float32, (2, 64): np.float64}


@dataclass(frozen=True)
class FrameMemory:
    """Where one frame's pixels are. ``strides`` in bytes; ``device`` 'cuda' or 'cpu';
    ``stream`` the producer's stream as ``__cuda_array_interface__`` names it (None: nothing to
    wait for)."""

    ptr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: np.dtype
    device: str
    device_id: int
    stream: int | None = None

    @property
    def contiguous(self) -> bool:
        return self.strides == contiguous_strides(self.shape, self.dtype.itemsize)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


def contiguous_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides, step = [], itemsize
    for extent in reversed(shape):
        strides.insert(0, step)
        step *= extent
    return tuple(strides)


def is_device_frame(obj) -> bool:
    """True for an object whose pixels the GPU path can take (not a numpy array)."""
    return not isinstance(obj, np.ndarray) and (hasattr(obj, "__cuda_array_interface__")
                                                or (hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__")))


def describe(obj) -> FrameMemory:
    """The memory of a frame given through ``__cuda_array_interface__`` or DLPack."""
    if hasattr(obj, "__cuda_array_interface__"):
        return _from_cuda_array_interface(obj.__cuda_array_interface__, type(obj).__name__)
    if hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__"):
        return _from_dlpack(obj)
    raise InputError(f"a {type(obj).__name__} exposes neither __cuda_array_interface__ nor DLPack; pass a numpy array "
                     "(host frame) or a CuPy array / torch CUDA tensor / cudaImage (GPU frame)")


def _from_cuda_array_interface(cai, kind: str) -> FrameMemory:
    try:
        shape = tuple(int(s) for s in cai["shape"])
        ptr = int(cai["data"][0])
        dtype = np.dtype(cai["typestr"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputError(f"malformed __cuda_array_interface__ of a {kind}: {cai!r} ({exc})") from exc
    if cai.get("mask") is not None:
        raise InputError(f"a masked {kind} cannot be fused; pass the plain array")
    strides = cai.get("strides")
    strides = contiguous_strides(shape, dtype.itemsize) if strides is None else tuple(int(s) for s in strides)
    if len(strides) != len(shape):
        raise InputError(f"__cuda_array_interface__ of a {kind} has shape {shape} but strides {strides}")
    stream = cai.get("stream")
    if stream is not None and int(stream) == 0:
        raise InputError(f"a {kind} names stream 0, which __cuda_array_interface__ v3 does not allow (ambiguous); "
                         "its producer should give 1, 2 or a stream handle")
    if not ptr and int(np.prod(shape)):
        raise InputError(f"a {kind} of shape {shape} has a null data pointer")
    return FrameMemory(ptr, shape, strides, dtype, "cuda", -1, None if stream is None else int(stream))


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32), ("dtype", _DLDataType),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("byte_offset", ctypes.c_uint64)]


def _from_dlpack(obj) -> FrameMemory:
    """Read the DLTensor of ``obj.__dlpack__()`` (the capsule stays unconsumed, so its owner keeps
    the memory; the caller keeps ``obj`` alive while it uses the pointer)."""
    device_type, device_id = (int(v) for v in obj.__dlpack_device__())
    if device_type not in (KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED):
        raise InputError(f"a {type(obj).__name__} on DLPack device type {device_type} is neither CUDA nor the CPU")
    capsule = obj.__dlpack__()
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    address = get_pointer(capsule, b"dltensor")
    tensor = _DLTensor.from_address(address)   # DLManagedTensor starts with its DLTensor
    key = (tensor.dtype.code, tensor.dtype.bits)
    if key not in DLPACK_DTYPES or tensor.dtype.lanes != 1:
        raise InputError(f"a {type(obj).__name__} has DLPack dtype code {key[0]}, {key[1]} bits, "
                         f"{tensor.dtype.lanes} lanes; frames are uint8 or float32")
    dtype = np.dtype(DLPACK_DTYPES[key])
    shape = tuple(int(tensor.shape[i]) for i in range(tensor.ndim))
    if tensor.strides:
        strides = tuple(int(tensor.strides[i]) * dtype.itemsize for i in range(tensor.ndim))
    else:
        strides = contiguous_strides(shape, dtype.itemsize)
    ptr = int(tensor.data or 0) + int(tensor.byte_offset)
    device = "cpu" if device_type == KDL_CPU else "cuda"
    del capsule  # not consumed: its destructor gives the tensor back to the producer
    return FrameMemory(ptr, shape, strides, dtype, device, device_id, None)


def check_device_frames(frames) -> list[FrameMemory]:
    """Validate a set of GPU frames like the host path does: same shape and dtype, HxW or HxWx1/3,
    uint8 or float32, on the GPU. Returns their memory."""
    memories = [describe(frame) for frame in frames]
    first = memories[0]
    for index, memory in enumerate(memories):
        if memory.device != "cuda":
            raise InputError(f"frame {index} is on the {memory.device}, not the GPU; pass numpy arrays for host "
                             "frames or move it to the GPU first")
        if memory.dtype not in (np.uint8, np.float32):
            raise InputError(f"frame {index} has dtype {memory.dtype}; GPU frames are uint8 or float32")
        if not (len(memory.shape) == 2 or (len(memory.shape) == 3 and memory.shape[2] in (1, 3))):
            raise InputError(f"frame {index} has shape {memory.shape}; expected HxW (grey) or HxWx3 (BGR)")
        if (memory.shape, memory.dtype) != (first.shape, first.dtype):
            raise InputError(f"frames differ: frame 0 is {first.shape} {first.dtype}, frame {index} is "
                             f"{memory.shape} {memory.dtype}")
        if memory.device_id not in (-1, first.device_id):
            raise InputError(f"frames are on different GPUs: frame 0 on {first.device_id}, frame {index} on "
                             f"{memory.device_id}")
    return memories
