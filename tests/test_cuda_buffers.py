"""The cuda-python buffer and stream code (runtime/cuda_buffers.py). Pointer parsing and the
missing-GPU error run everywhere; allocation, copies and CUDA error paths run where a GPU exists and
skip with the reason elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from mfif.errors import BackendUnavailableError, CudaError, InputError

from gpu_helpers import HAVE_CUDA_PYTHON, gpu_missing_reason  # noqa: E402

GPU_REASON = gpu_missing_reason()
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=f"needs a CUDA GPU: {GPU_REASON}")


class FakeDeviceArray:
    """Stands for a CuPy/torch array: only the __cuda_array_interface__ dictionary matters."""

    def __init__(self, **cai) -> None:
        self.__cuda_array_interface__ = {"version": 3, "strides": None, **cai}


# ---------------------------------------------------------------------------------- everywhere


@pytest.mark.skipif(GPU_REASON is None, reason="a GPU is usable here; this checks the error where there is none")
def test_missing_gpu_or_package_is_a_clear_error():
    from mfif.runtime.cuda_buffers import gpu_info

    with pytest.raises(BackendUnavailableError) as info:
        gpu_info(0)
    message = str(info.value)
    if HAVE_CUDA_PYTHON:   # the real CUDA runtime answered: no driver or no device
        assert "no CUDA GPU is usable here" in message and "cudaError" in message
    else:
        assert "pip install 'mfif[tensorrt]'" in message


def test_device_pointer_from_cuda_array_interface():
    from mfif.runtime.cuda_buffers import DeviceView, device_pointer

    array = FakeDeviceArray(shape=(1, 2, 3, 4, 5), typestr="<f4", data=(0xDEAD000, False), stream=1)
    assert device_pointer(array) == (0xDEAD000, (1, 2, 3, 4, 5), 1)
    contiguous = FakeDeviceArray(shape=(2, 3), typestr="<f4", data=(0x1000, False), strides=(12, 4))
    assert device_pointer(contiguous)[:2] == (0x1000, (2, 3))
    view = DeviceView(0x2000, (1, 3, 8, 8))
    assert device_pointer(view) == (0x2000, (1, 3, 8, 8), None)     # the backend's own output views round-trip
    assert device_pointer(0x3000, expected_shape=(1, 2, 3, 8, 8)) == (0x3000, (1, 2, 3, 8, 8), None)


@pytest.mark.parametrize("obj, shape, message", [
    (FakeDeviceArray(shape=(1, 2), typestr="<f2", data=(0x1000, False)), None, "dtype float16"),
    (FakeDeviceArray(shape=(2, 3), typestr="<f4", data=(0x1000, False), strides=(4, 8)), None, "not C-contiguous"),
    (FakeDeviceArray(shape=(2, 3), typestr="<f4", data=(0, False)), None, "null data pointer"),
    (FakeDeviceArray(shape=(2, 3), typestr="<f4", data=(0x1000, False)), (3, 2), "differs from the given shape"),
    (FakeDeviceArray(shape=(2, 3), data=(0x1000, False)), None, "malformed"),
    (0x1000, None, "needs its shape"),
    (0, (1, 2), "null"),
    (np.zeros((2, 3), np.float32), None, "got ndarray"),
])
def test_device_pointer_rejects_what_it_cannot_use(obj, shape, message):
    from mfif.runtime.cuda_buffers import device_pointer

    with pytest.raises(InputError, match=message):
        device_pointer(obj, shape)


# ------------------------------------------------------------------------------------ GPU only


@needs_gpu
def test_pinned_round_trip_of_a_frame_through_the_device():
    from mfif.runtime import cuda_buffers as cb

    frame = np.random.default_rng(0).random((1, 2, 3, 480, 640), dtype=np.float32)
    copy, times = cb.round_trip(frame)
    np.testing.assert_array_equal(copy, frame)
    assert set(times) == {"h2d", "d2h"} and all(t > 0 for t in times.values())
    device, stream = cb.DeviceBuffer(frame.nbytes), cb.Stream()
    try:
        stream.wait_for(1)  # the legacy default stream, as a producer's stream from __cuda_array_interface__
        stream.synchronize()
    finally:
        stream.destroy()
        stream.destroy()            # twice: no error
        device.free()
        device.free()


@needs_gpu
def test_cuda_error_paths_name_the_call():
    from mfif.runtime import cuda_buffers as cb

    gpu = cb.gpu_info(0)
    assert gpu.name and gpu.compute_capability.count(".") == 1 and gpu.memory_bytes > 0
    with pytest.raises(CudaError, match=r"cudaMalloc\(\d+ bytes\) failed: cudaErrorMemoryAllocation"):
        cb.DeviceBuffer(1 << 52)   # 4 PiB
    with pytest.raises(BackendUnavailableError, match="does not exist"):
        cb.gpu_info(10_000)
    small = cb.PinnedBuffer(16, np.float32)
    device = cb.DeviceBuffer(64)
    stream = cb.Stream()
    try:
        with pytest.raises(InputError, match="exceeds the buffers"):
            stream.to_device(device, small, 128)
        with pytest.raises(InputError, match="needs 32 elements; this buffer holds 16"):
            small.view((2, 16))
        with pytest.raises(InputError, match="positive size"):
            cb.DeviceBuffer(0)
    finally:
        stream.destroy()
        device.free()
        small.free()
