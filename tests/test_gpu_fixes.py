"""Fixes on the GPU path that can be proven without a GPU (issue 14, part 2): cuda-python that
raises instead of returning an error, a 'tensorrt' folder without bindings, the CUDA device in
every thread, producer streams, ONNX Runtime's copy_tensors fallback, a damaged timing cache,
and install hints that fit the platform. The fakes below stand for the CUDA runtime and for
TensorRT's builder; every name they offer exists in the real APIs (test_tensorrt_api.py checks
the TensorRT ones against the real bindings)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from mfif.errors import BackendUnavailableError, InputError

SUCCESS = 0


class FakeRuntime:
    """Stands for cuda.bindings.runtime: records calls as (thread, name, args)."""

    class cudaError_t:  # noqa: N801 - the real name
        cudaSuccess = SUCCESS
        cudaErrorInsufficientDriver = 35

    cudaStreamNonBlocking = 1
    cudaEventDisableTiming = 2
    cudaStreamLegacy = "legacy-default-stream"
    cudaStreamPerThread = "per-thread-default-stream"

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, tuple]] = []

    def _record(self, name, *args):
        self.calls.append((threading.get_ident(), name, args))

    def names(self) -> list[str]:
        return [name for _, name, _ in self.calls]

    def cudaStream_t(self, value):  # noqa: N802
        return f"stream-handle-{value:#x}"

    def cudaGetDeviceCount(self):  # noqa: N802
        raise RuntimeError("Failed to dlopen libcuda.so.1")   # what cuda-python < 12.8 does without a driver

    def cudaSetDevice(self, index):  # noqa: N802
        self._record("cudaSetDevice", index)
        return (SUCCESS,)

    def cudaStreamCreateWithFlags(self, flags):  # noqa: N802
        self._record("cudaStreamCreateWithFlags", flags)
        return SUCCESS, "our-stream"

    def cudaEventCreateWithFlags(self, flags):  # noqa: N802
        self._record("cudaEventCreateWithFlags", flags)
        return SUCCESS, "event"

    def cudaEventRecord(self, event, stream):  # noqa: N802
        self._record("cudaEventRecord", event, stream)
        return (SUCCESS,)

    def cudaStreamWaitEvent(self, stream, event, flags):  # noqa: N802
        self._record("cudaStreamWaitEvent", stream, event, flags)
        return (SUCCESS,)

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        self._record("cudaStreamSynchronize", stream)
        return (SUCCESS,)

    def cudaEventDestroy(self, event):  # noqa: N802
        self._record("cudaEventDestroy", event)
        return (SUCCESS,)

    def cudaStreamDestroy(self, stream):  # noqa: N802
        self._record("cudaStreamDestroy", stream)
        return (SUCCESS,)


@pytest.fixture
def fake_cuda(monkeypatch):
    from mfif.runtime import cuda_buffers as cb

    rt = FakeRuntime()
    monkeypatch.setattr(cb, "_CUDART", rt)
    monkeypatch.setattr(cb, "_THREAD", threading.local())
    return rt


# ------------------------------------------------------------------ cuda-python before 12.8


def test_cuda_python_that_raises_without_a_driver_reads_as_no_gpu(fake_cuda):
    from mfif.runtime.cuda_buffers import gpu_info

    with pytest.raises(BackendUnavailableError) as info:
        gpu_info(0)
    message = str(info.value)
    assert "no CUDA GPU is usable here" in message and "Failed to dlopen libcuda.so.1" in message
    assert "backend='onnxruntime'" in message


def test_gpu_helper_reports_the_reason_instead_of_failing_collection(fake_cuda, monkeypatch):
    import gpu_helpers

    monkeypatch.setattr(gpu_helpers, "HAVE_CUDA_PYTHON", True)
    assert "could not load the NVIDIA driver" in gpu_helpers.gpu_missing_reason()


# ----------------------------------------------------------- a 'tensorrt' without bindings


def test_tensorrt_folder_without_bindings_reads_as_not_installed(tmp_path, monkeypatch):
    """tensorrt-stubs leaves site-packages/tensorrt/ with only .pyi files: it imports as an empty
    namespace package."""
    stubs = tmp_path / "tensorrt"
    stubs.mkdir()
    (stubs / "__init__.pyi").write_text("class Runtime: ...\n")
    (stubs / "py.typed").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    saved = sys.modules.pop("tensorrt", None)
    from gpu_helpers import tensorrt_missing_reason
    from mfif.runtime.backends.tensorrt import import_tensorrt

    try:
        with pytest.raises(BackendUnavailableError) as info:
            import_tensorrt()
        message = str(info.value)
        assert "'tensorrt' is not installed" in message and "has no 'Runtime'" in message and str(stubs) in message
        assert "pip install 'mfif[tensorrt]'" in message
        reason = tensorrt_missing_reason()               # the tests' "installed" switch stays off
        assert reason is not None and "not installed" in reason
    finally:
        sys.modules.pop("tensorrt", None)                # forget the stub package
        if saved is not None:
            sys.modules["tensorrt"] = saved


# ------------------------------------------------------------- the CUDA device per thread


def test_use_device_sets_the_device_once_in_every_thread(fake_cuda):
    from mfif.runtime.cuda_buffers import use_device

    use_device(1)
    use_device(1)                                    # already current in this thread: no call
    worker = threading.Thread(target=lambda: (use_device(1), use_device(1)))
    worker.start()
    worker.join()
    sets = [(thread, args) for thread, name, args in fake_cuda.calls if name == "cudaSetDevice"]
    assert len(sets) == 2 and {args for _, args in sets} == {(1,)}
    assert sets[0][0] == threading.get_ident() and sets[1][0] == worker.ident
    use_device(0)                                    # another device in this thread: set again
    assert fake_cuda.calls[-1][1:] == ("cudaSetDevice", (0,))


def test_the_build_runs_on_the_chosen_gpu_in_its_worker_thread(fake_cuda, tmp_path, monkeypatch):
    from mfif.export import tensorrt_builder as tb
    from mfif.runtime import cuda_buffers as cb
    from mfif.runtime.engine_cache import Profile
    from test_tensorrt import make_onnx

    fake = FakeTensorRT()
    monkeypatch.setattr("mfif.runtime.backends.tensorrt.import_tensorrt", lambda: fake)
    monkeypatch.setattr("mfif.runtime.backends.tensorrt.make_logger", lambda trt, verbose=False: FakeLogger())
    monkeypatch.setattr(cb, "gpu_info", lambda index: cb.GpuInfo(index, "Fake GPU", "8.9", False, 1 << 30))
    settings = tb.BuildSettings(profiles=[Profile((32, 32), (64, 64), (128, 128))], device=1,
                                timing_cache=tmp_path / "timing.cache")
    result = tb.build_engine(make_onnx(tmp_path / "mean.onnx"), tmp_path / "mean.engine", settings,
                             progress=tb.BuildProgress(enabled=False), log=lambda *_: None)
    assert result.rebuilt and (tmp_path / "mean.engine").read_bytes() == b"serialized plan"
    build_thread = fake.built_in_thread
    assert build_thread != threading.get_ident()
    assert (build_thread, "cudaSetDevice", (1,)) in fake_cuda.calls    # the builder's own thread is on GPU 1
    assert (tmp_path / "timing.cache").read_bytes() == b"timings after the build"


# -------------------------------------------------------------------------- producer streams


def test_wait_for_a_producer_stream_waits_on_the_gpu_not_the_host(fake_cuda):
    from mfif.runtime.cuda_buffers import Stream

    stream = Stream()
    stream.wait_for(2)                               # the calling thread's per-thread default stream
    stream.wait_for(1)                               # the legacy default stream
    stream.wait_for(0x7F00)                          # a stream handle
    records = [args[1] for _, name, args in fake_cuda.calls if name == "cudaEventRecord"]
    assert records == ["per-thread-default-stream", "legacy-default-stream", "stream-handle-0x7f00"]
    waits = [args for _, name, args in fake_cuda.calls if name == "cudaStreamWaitEvent"]
    assert waits == [("our-stream", "event", 0)] * 3
    assert "cudaStreamSynchronize" not in fake_cuda.names()            # the host never blocked
    assert fake_cuda.names().count("cudaEventCreateWithFlags") == 1    # one event, made once
    with pytest.raises(InputError, match="stream 0"):
        stream.wait_for(0)
    stream.destroy()
    assert fake_cuda.names()[-2:] == ["cudaEventDestroy", "cudaStreamDestroy"]


def test_device_array_naming_stream_0_is_refused():
    from mfif.runtime.cuda_buffers import device_pointer

    class Producer:
        __cuda_array_interface__ = {"version": 3, "shape": (1, 2), "typestr": "<f4", "data": (0x1000, False),
                                    "strides": None, "stream": 0}

    with pytest.raises(InputError, match="stream 0.*does not allow"):
        device_pointer(Producer())


# ------------------------------------------------------ ONNX Runtime's copy_tensors fallback


def test_onnxruntime_outputs_reach_the_host_when_copy_tensors_fails(monkeypatch):
    """On a GPU, outputs stay on the device and ort.copy_tensors moves them; a build whose CUDA
    provider has no registered data transfer raises there. The run must still return the
    outputs (through OrtValue.numpy()) and later runs write them to the host directly."""
    pytest.importorskip("onnxruntime")
    from mfif.runtime.backends.onnxruntime import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(None, device="cpu")
    sources = backend.input_buffer((1, 2, 3, 32, 32))
    sources[...] = 0.25
    backend.run(sources)                                        # binds host outputs on the CPU
    marker = np.full(backend._host["fused"].shape, 0.5, np.float32)

    class DeviceValue:                                          # an OrtValue on the GPU
        def numpy(self):
            return marker

    class NoTransfer:
        def copy_tensors(self, source, target):
            raise RuntimeError("No data transfer registered for copying tensors from Cuda to Cpu")

    backend._device_out = {"fused": DeviceValue()}
    backend._copies = ([object()], [backend._device_out["fused"]])
    real_ort = backend._ort
    monkeypatch.setattr(backend, "_ort", NoTransfer())
    fused, _ = backend.run(sources)
    np.testing.assert_array_equal(fused, marker)                # the fallback copied the device output
    assert backend._use_copy_tensors is False and backend._key is None
    monkeypatch.setattr(backend, "_ort", real_ort)
    fused, _ = backend.run(sources)                             # rebinds; the model's own result again
    np.testing.assert_allclose(fused, 0.25, atol=1e-3)
    backend.close()


# ------------------------------------------------------------------ a damaged timing cache


class FakeTimingCache:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def serialize(self) -> bytes:
        return b"timings after the build"


class FakeConfig:
    """IBuilderConfig's timing-cache calls: corrupt data raises, a foreign cache is refused."""

    def __init__(self) -> None:
        self.cache = None
        self.progress_monitor = None
        self.builder_optimization_level = 3

    def create_timing_cache(self, blob):
        if bytes(blob).startswith(b"garbage"):
            raise RuntimeError("Failed to deserialize the timing cache")
        return FakeTimingCache(bytes(blob))

    def set_timing_cache(self, cache, ignore_mismatch):
        assert ignore_mismatch is False
        if cache.blob.startswith(b"foreign"):
            return False
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache

    def set_memory_pool_limit(self, pool, size):
        pass

    def add_optimization_profile(self, profile):
        return 0


@pytest.mark.parametrize("content, why", [
    (b"garbage \x00\xff", "TensorRT could not read it: Failed to deserialize"),
    (b"foreign timings", "another GPU or TensorRT version wrote it, or it is damaged"),
])
def test_a_damaged_or_foreign_timing_cache_is_named_and_replaced(tmp_path, content, why):
    from mfif.export.tensorrt_builder import attach_timing_cache

    path = tmp_path / "timing.cache"
    path.write_bytes(content)
    config, messages = FakeConfig(), []
    cache = attach_timing_cache(config, path, messages.append)
    assert cache is config.cache and cache.blob == b""          # a new, empty cache is attached
    [message] = messages
    assert str(path) in message and f"{len(content)} bytes" in message and why in message
    assert "replaces it" in message


def test_a_good_or_missing_timing_cache_is_used_quietly(tmp_path):
    from mfif.export.tensorrt_builder import attach_timing_cache

    config, messages = FakeConfig(), []
    path = tmp_path / "timing.cache"
    assert attach_timing_cache(config, path, messages.append).blob == b""        # no file yet
    path.write_bytes(b"good timings")
    assert attach_timing_cache(config, path, messages.append).blob == b"good timings"
    assert attach_timing_cache(config, None, messages.append) is None
    assert messages == []


class FakeLogger:
    def take_errors(self) -> str:
        return "no message from TensorRT"


class FakeTensorRT:
    """The part of the TensorRT module that build_engine uses (names as in TensorRT 11)."""

    __version__ = "11.4.0.106"

    class IProgressMonitor:
        def __init__(self) -> None:
            pass

    class MemoryPoolType:
        WORKSPACE = "workspace"

    def __init__(self) -> None:
        self.built_in_thread = None
        fake = self

        class Builder:
            def __init__(self, logger) -> None:
                pass

            def create_network(self, flags):
                return object()

            def create_builder_config(self):
                return FakeConfig()

            def create_optimization_profile(self):
                class Profile:
                    def set_shape(self, name, low, opt, high):
                        pass
                return Profile()

            def build_serialized_network(self, network, config):
                fake.built_in_thread = threading.get_ident()
                return b"serialized plan"

        class OnnxParser:
            def __init__(self, network, logger) -> None:
                pass

            def parse_from_file(self, path):
                return Path(path).is_file()

        self.Builder, self.OnnxParser = Builder, OnnxParser


# ------------------------------------------------------------------- platform-aware hints


def test_install_hints_on_a_jetson_never_send_users_to_pip_opencv(monkeypatch):
    from mfif import platform

    monkeypatch.setattr(platform, "is_jetson", lambda: True)
    for extra, package in (("cpu", "onnxruntime"), ("gpu", "onnxruntime-gpu"), ("tensorrt", "tensorrt"),
                           ("tensorrt", "cuda-python"), ("eval", "scipy")):
        hint = platform.install_hint(extra, package)
        for wrong in ("pip install 'mfif[cpu]'", "pip install 'mfif[gpu]'", "pip install 'mfif[tensorrt]'"):
            assert wrong not in hint, (extra, package, hint)
    assert "JetPack" in platform.install_hint("tensorrt", "tensorrt")
    assert "not on PyPI" in platform.install_hint("cpu", "onnxruntime")
    assert platform.install_hint("tensorrt", "cuda-python").startswith("pip install 'mfif[jetson]'")
    monkeypatch.setattr(platform, "is_jetson", lambda: False)
    assert platform.install_hint("cpu") == "pip install 'mfif[cpu]'"
    assert "mfif[gpu-cu12]" in platform.install_hint("gpu") and "mfif[tensorrt-cu12]" in platform.install_hint("tensorrt")


def test_missing_package_error_on_a_jetson_names_jetpack(monkeypatch):
    from mfif import platform
    from mfif.lazy import require

    monkeypatch.setattr(platform, "is_jetson", lambda: True)
    with pytest.raises(BackendUnavailableError) as info:
        require("onnxruntime_that_is_not_there", extra="cpu", purpose="the ONNX Runtime backend")
    assert "ONNX Runtime for Jetson is not on PyPI" in str(info.value)


def test_jetson_is_recognised_by_its_release_file_or_device_tree(tmp_path, monkeypatch):
    from mfif import platform

    monkeypatch.setattr(platform, "TEGRA_RELEASE", tmp_path / "nv_tegra_release")
    monkeypatch.setattr(platform, "DEVICE_TREE_MODEL", tmp_path / "model")
    assert not platform.is_jetson()
    (tmp_path / "model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    assert platform.is_jetson()
    (tmp_path / "model").write_bytes(b"Raspberry Pi 5\x00")
    assert not platform.is_jetson()
    (tmp_path / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.0\n")
    assert platform.is_jetson()


def test_gpu_providers_get_their_libraries_loaded_first():
    from mfif.runtime.backends.onnxruntime import preload_gpu_libraries

    class FakeOrt:
        calls = 0

        def preload_dlls(self):
            FakeOrt.calls += 1

    preload_gpu_libraries(FakeOrt(), ["CPUExecutionProvider"])
    assert FakeOrt.calls == 0                                   # nothing to load for the CPU
    preload_gpu_libraries(FakeOrt(), [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"])
    assert FakeOrt.calls == 1
    preload_gpu_libraries(object(), ["CUDAExecutionProvider"])  # an onnxruntime without preload_dlls


# ----------------------------------------------------------------- Fuser() on a Jetson


def test_fuser_on_a_jetson_uses_the_built_engine_of_the_default_model(tmp_path, monkeypatch):
    from mfif import platform
    from mfif.runtime import Fuser
    from mfif.runtime.backends import default_engine_path
    from mfif.runtime.engine_cache import record_path

    monkeypatch.setattr(platform, "is_jetson", lambda: True)
    monkeypatch.setenv("MFIF_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "onnxruntime" else object())
    engine = default_engine_path()
    assert engine == tmp_path / "engines" / "focusmap.engine"
    with pytest.raises(BackendUnavailableError) as info:        # no engine and no ONNX Runtime
        Fuser()
    message = str(info.value)
    assert f"-o {engine}" in message and "mfif build" in message and "focusmap.onnx" in message
    assert "pip install 'mfif[cpu]'" not in message
    engine.parent.mkdir(parents=True)
    engine.write_bytes(b"an engine")                            # a built engine (its record is missing)
    with pytest.raises(Exception) as info:
        Fuser()
    assert "has no record" in str(info.value) and str(record_path(engine)) in str(info.value)  # TensorRT was chosen
