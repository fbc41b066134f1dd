"""Frames that live on the GPU (issue 14, part 4): the pointer, shape, stride and stream
bookkeeping of __cuda_array_interface__ and DLPack frames, and the torch pre/postprocessing of the
GPU path, checked on the CPU with real objects that expose the interfaces. Fusing on a GPU itself
runs in python -m mfif.benchmarks.gpu_check (step gpu_resident)."""

from __future__ import annotations

import numpy as np
import pytest

from mfif.errors import ConfigError, InputError
from mfif.runtime.device_frames import FrameMemory, check_device_frames, describe, is_device_frame


class CudaArray:
    """A minimal producer of __cuda_array_interface__ v3 (as CuPy or Numba give it)."""

    def __init__(self, shape, typestr="|u1", ptr=0x7F0000000000, strides=None, stream=None, **extra):
        self.__cuda_array_interface__ = {"version": 3, "shape": shape, "typestr": typestr, "data": (ptr, False),
                                         "strides": strides, "stream": stream, **extra}


def test_cuda_array_interface_gives_pointer_shape_byte_strides_and_stream():
    frame = describe(CudaArray((1080, 1920, 3), stream=2))
    assert frame == FrameMemory(0x7F0000000000, (1080, 1920, 3), (5760, 3, 1), np.dtype(np.uint8), "cuda", -1, 2)
    assert frame.contiguous and frame.nbytes == 1080 * 1920 * 3
    pitched = describe(CudaArray((720, 1280), typestr="<f4", strides=(8192, 4)))   # rows padded to 8 KiB
    assert pitched.strides == (8192, 4) and not pitched.contiguous and pitched.dtype == np.float32
    assert is_device_frame(CudaArray((4, 4))) and not is_device_frame(np.zeros((4, 4), np.uint8))


@pytest.mark.parametrize("obj, message", [
    (CudaArray((4, 4), stream=0), "stream 0"),
    (CudaArray((4, 4), ptr=0), "null data pointer"),
    (CudaArray((4, 4), mask=object()), "masked"),
    (CudaArray((4, 4), strides=(4,)), "strides"),
    (object(), "neither __cuda_array_interface__ nor DLPack"),
])
def test_unusable_device_frames_are_refused_with_the_reason(obj, message):
    with pytest.raises(InputError, match=message):
        describe(obj)


def test_dlpack_frames_read_through_the_capsule():
    torch = pytest.importorskip("torch")
    image = torch.arange(6 * 8 * 3, dtype=torch.uint8).reshape(6, 8, 3)
    frame = describe(image)
    assert (frame.ptr, frame.shape, frame.strides) == (image.data_ptr(), (6, 8, 3), (24, 3, 1))
    assert frame.dtype == np.uint8 and frame.device == "cpu" and frame.contiguous
    view = image[1:, ::2]                                       # an offset and a step: strides in bytes
    frame = describe(view)
    assert frame.ptr == image.data_ptr() + 24 and frame.shape == (5, 4, 3) and frame.strides == (24, 6, 1)
    floats = torch.zeros((4, 5), dtype=torch.float32).t()      # transposed: not contiguous
    frame = describe(floats)
    assert frame.dtype == np.float32 and frame.strides == (4, 20) and not frame.contiguous
    assert image.sum().item() == sum(range(6 * 8 * 3)) % 2**63    # the tensor is intact afterwards


def test_frame_sets_are_checked_like_host_frames():
    a, b = CudaArray((480, 640, 3)), CudaArray((480, 640, 3), ptr=0x7F0000100000)
    assert [m.ptr for m in check_device_frames([a, b])] == [0x7F0000000000, 0x7F0000100000]
    with pytest.raises(InputError, match="frames differ"):
        check_device_frames([a, CudaArray((480, 320, 3))])
    with pytest.raises(InputError, match="dtype int16"):
        check_device_frames([CudaArray((4, 4), typestr="<i2")] * 2)
    with pytest.raises(InputError, match=r"shape \(4, 4, 4\)"):
        check_device_frames([CudaArray((4, 4, 4))] * 2)
    torch = pytest.importorskip("torch")
    with pytest.raises(InputError, match="on the cpu, not the GPU"):
        check_device_frames([torch.zeros((4, 4), dtype=torch.uint8)] * 2)


def test_gpu_preprocessing_matches_the_host_layout_and_padding():
    torch = pytest.importorskip("torch")
    from mfif.runtime.gpu_fuse import finish, prepare

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (30, 45, 3), dtype=np.uint8) for _ in range(2)]
    sources = prepare(torch, [torch.from_numpy(f) for f in frames], 16, torch.float32).numpy()
    planar = np.stack(frames).transpose(0, 3, 1, 2).astype(np.float32) / 255
    expected = np.pad(planar, ((0, 0), (0, 0), (0, 2), (0, 3)), mode="reflect")[None]   # 30x45 -> 32x48
    np.testing.assert_allclose(sources, expected, atol=1e-7)
    fused = sources.mean(axis=1)                                # a stand-in model: the mean of the sources
    result = finish(torch, torch.from_numpy(fused), 30, 45, torch.from_numpy(frames[0])).numpy()
    mean = np.stack(frames).astype(np.float32).mean(axis=0)
    assert result.dtype == np.uint8 and result.shape == (30, 45, 3)
    assert np.abs(result.astype(np.int16) - np.floor(mean + 0.5)).max() <= 1
    grey = finish(torch, torch.from_numpy(fused), 30, 45, torch.zeros((30, 45), dtype=torch.uint8))
    assert tuple(grey.shape) == (30, 45)
    target = torch.zeros((30, 45, 3), dtype=torch.uint8)
    assert finish(torch, torch.from_numpy(fused), 30, 45, torch.from_numpy(frames[0]), out=target) is target
    assert torch.equal(target, torch.from_numpy(result))
    with pytest.raises(InputError, match="out must be a device array of shape"):
        finish(torch, torch.from_numpy(fused), 30, 45, torch.from_numpy(frames[0]), out=torch.zeros((2, 2)))


def test_the_fuser_sends_device_frames_to_the_gpu_path():
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from mfif.runtime import Fuser

    fuser = Fuser(device="cpu")
    frames = [torch.zeros((32, 32, 3), dtype=torch.uint8)] * 2   # DLPack, but on the CPU
    with pytest.raises(InputError, match="on the cpu, not the GPU"):
        fuser(*frames)
    with pytest.raises(Exception, match="weight maps, smoothing and alignment are for host frames"):
        fuser(*frames, return_weights=True)
    fuser.align = "each"
    with pytest.raises(ConfigError, match="weight maps, smoothing and alignment are for host frames"):
        fuser(*frames)
    fuser.close()
