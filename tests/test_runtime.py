"""runtime.Fuser with real ONNX Runtime sessions: layout, padding, dtypes, channels, backends,
bad inputs, threads, stats and the import footprint."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from gpu_helpers import gpu_missing_reason
from runtime_helpers import demo_frames, export_onnx, exported, focus_measure_onnx

from mfif.errors import BackendUnavailableError, ConfigError, InputError, MfifError, ModelFileError
from mfif.runtime import Fuser
from mfif.runtime.backends import DEFAULT_MODEL, load_backend
from mfif.runtime.backends.onnxruntime import OnnxRuntimeBackend, check_providers, physical_cores

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fuser():
    return Fuser()


@pytest.fixture(scope="module")
def scale4():
    """focusmap with size multiple 4, so that most sizes need padding."""
    return exported("focusmap", scale=4)


def luma(image: np.ndarray) -> np.ndarray:
    return image[..., 0] * 0.114 + image[..., 1] * 0.587 + image[..., 2] * 0.299


def reference(model_path: Path, frames: list[np.ndarray], multiple: int) -> np.ndarray:
    """The model run directly by ONNX Runtime on reflect-padded float frames, cropped back."""
    import onnxruntime as ort

    height, width = frames[0].shape[:2]
    pad = ((0, -height % multiple), (0, -width % multiple))
    stack = np.stack([np.pad(f if f.ndim == 3 else f[..., None], pad + ((0, 0),), mode="reflect") for f in frames])
    sources = np.ascontiguousarray(stack.transpose(0, 3, 1, 2)[None], dtype=np.float32)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    fused = session.run(["fused"], {"sources": sources})[0][0, :, :height, :width]
    return fused.transpose(1, 2, 0) if frames[0].ndim == 3 else fused[0]


# ---- the default model and the basic contract ------------------------------------------------

def test_default_model_fuses_a_colour_pair(fuser):
    a, b, _ = demo_frames(120, 160)
    fused = fuser(a, b)
    assert fused.shape == a.shape and fused.dtype == np.uint8
    assert fuser.backend_name == "onnxruntime"
    assert fuser.device.startswith("CPUExecutionProvider") and f"{physical_cores()} threads" in fuser.device
    assert fuser.info.model == "focusmap" and fuser.info.has_weight_map
    assert DEFAULT_MODEL.is_file()
    # focusmap's output is a per-pixel convex combination of the sources
    low, high = np.minimum(a, b).astype(int), np.maximum(a, b).astype(int)
    assert np.all(fused >= low - 1) and np.all(fused <= high + 1)


@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 3), (5, 3, 3), (1, 1), (64, 64, 3), (30, 41, 1)])
def test_identical_frames_come_back_unchanged_at_any_size(scale4, shape):
    """Weights sum to 1, so fusing a frame with itself must return it: any shift from padding or
    cropping, or a channel swap, would show."""
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, shape, dtype=np.uint8)
    fuser = Fuser(scale4)
    fused = fuser(frame, frame)
    assert fused.shape == frame.shape and fused.dtype == np.uint8
    np.testing.assert_array_equal(fused, frame)
    floats = frame.astype(np.float32) / 255
    fused_float = fuser(floats, floats, floats)
    assert fused_float.dtype == np.float32 and fused_float.shape == shape
    np.testing.assert_allclose(fused_float, floats, atol=1e-5)


def test_padding_and_layout_match_the_model_on_reflect_padded_input(scale4):
    a, b, _ = demo_frames(45, 70)
    fa, fb = a.astype(np.float32) / 255, b.astype(np.float32) / 255
    fuser = Fuser(scale4)
    multiple = fuser.info.pad_multiple   # 32: scale 4, then three halvings
    assert multiple == 32
    expected = np.clip(reference(scale4, [fa, fb], multiple), 0, 1)
    np.testing.assert_allclose(fuser(fa, fb), expected, atol=1e-5)
    as_uint8 = fuser(a, b).astype(int)
    assert np.abs(as_uint8 - np.round(expected * 255)).max() <= 1
    grey = [np.ascontiguousarray(luma(f)) for f in (fa, fb)]
    np.testing.assert_allclose(fuser(*grey), np.clip(reference(scale4, grey, multiple), 0, 1), atol=1e-5)


@pytest.mark.parametrize("size, colour", [((120, 160), True), ((75, 101), False)])
def test_a_focus_measure_model_recovers_the_sharp_scene(size, colour):
    """With a model that reacts to focus (a hand-set focus measure standing in for trained weights)
    the whole path, layout to rounding, gives back the all-in-focus scene."""
    a, b, sharp = demo_frames(*size, colour=colour)
    fuser = Fuser(focus_measure_onnx())
    fused, weights = fuser(a, b, return_weights=True)
    error = np.abs(fused.astype(float) - sharp).mean()
    assert error < 0.25 * min(np.abs(a.astype(float) - sharp).mean(), np.abs(b.astype(float) - sharp).mean())
    width = size[1]
    assert weights[0][:, : width // 4].mean() > 0.9 and weights[0][:, -width // 4:].mean() < 0.1  # A is sharp on the left


def test_weights_and_more_than_two_sources(fuser):
    a, b, sharp = demo_frames(64, 96)
    fused, weights = fuser.fuse([a, b, sharp], return_weights=True)
    assert fused.shape == a.shape and weights.shape == (3, 64, 96) and weights.dtype == np.float32
    np.testing.assert_allclose(weights.sum(axis=0), 1.0, atol=1e-4)
    assert weights.min() >= 0
    # the fused frame is the weighted sum of the sources
    expected = (weights[..., None] * np.stack([a, b, sharp]).astype(np.float32)).sum(axis=0)
    assert np.abs(fused - expected).max() <= 1.0


def test_frame_size_changes_and_out_argument(scale4):
    fuser = Fuser(scale4)
    rng = np.random.default_rng(2)
    for shape in [(40, 40, 3), (23, 61, 3), (40, 40, 3), (23, 61)]:
        frame = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_array_equal(fuser(frame, frame), frame)
    big = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    crop = big[7:50:2, 3:90]  # a strided view, as a crop of a camera frame is
    np.testing.assert_array_equal(fuser(crop, crop), crop)
    a, b, _ = demo_frames(48, 64)
    out = np.empty_like(a)
    assert fuser(a, b, out=out) is out
    np.testing.assert_array_equal(out, fuser(a, b))
    with pytest.raises(InputError, match=r"out must be an array of shape \(48, 64, 3\)"):
        fuser(a, b, out=np.empty((48, 64), np.uint8))


def _onnxruntime_backend(device: str):
    from mfif.runtime.backends.onnxruntime import OnnxRuntimeBackend

    if device == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            pytest.skip("this onnxruntime has no CUDAExecutionProvider (the CPU build)")
        if gpu_missing_reason():
            pytest.skip(gpu_missing_reason())
    return OnnxRuntimeBackend(DEFAULT_MODEL, device=device)


def _torch_backend(device: str):
    torch = pytest.importorskip("torch")
    from mfif.runtime.backends.torch_backend import TorchBackend

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"torch {torch.__version__} sees no CUDA GPU")
    return TorchBackend(None, device=device)


def _tensorrt_backend(folder: Path):
    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("TensorRT is not installed")
    if gpu_missing_reason():
        pytest.skip(gpu_missing_reason())
    from mfif.export.tensorrt_builder import BuildSettings, build_engine
    from mfif.runtime.backends.tensorrt import TensorRTBackend
    from mfif.runtime.engine_cache import Profile

    settings = BuildSettings(profiles=[Profile((480, 640), (480, 640), (480, 640))])
    return TensorRTBackend(build_engine(DEFAULT_MODEL, folder / "focusmap.engine", settings, log=lambda *_: None).engine_path)


BACKENDS = {"onnxruntime-cpu": lambda folder: _onnxruntime_backend("cpu"),
            "torch-cpu": lambda folder: _torch_backend("cpu"),
            "onnxruntime-cuda": lambda folder: _onnxruntime_backend("cuda"),
            "torch-cuda": lambda folder: _torch_backend("cuda"),
            "tensorrt": _tensorrt_backend}


@pytest.mark.parametrize("kind", BACKENDS)
def test_per_frame_path_allocates_no_frame_sized_buffers(kind, tmp_path):
    """tracemalloc sees Python's and numpy's allocations: none may be frame-sized, per frame.
    (torch's own allocator, which serves the torch model's activations, it does not see.)"""
    fuser = Fuser(BACKENDS[kind](tmp_path))
    a, b, _ = demo_frames(480, 640)
    out = np.empty_like(a)
    fuser(a, b, out=out)  # first call of this size builds the buffers
    tracemalloc.start()
    try:
        for _ in range(3):
            fuser(a, b, out=out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    fuser.close()
    assert peak < 64 * 1024, f"the per-frame path allocated {peak} bytes (a 640x480 float frame is {640 * 480 * 12})"


def test_stats_report_stages_and_fps(scale4):
    fuser = Fuser(scale4, stats_window=4)
    assert fuser.stats.frames == 0 and "no frames" in str(fuser.stats)
    a, b, _ = demo_frames(32, 48)
    for _ in range(6):
        fuser(a, b)
    stats = fuser.stats
    assert stats.frames == 6 and stats.window == 4
    assert set(stats.mean_ms) == {"preprocess", "h2d", "compute", "d2h", "postprocess", "total"}
    assert stats.mean_ms["compute"] > 0 and stats.mean_ms["preprocess"] > 0 and stats.mean_ms["postprocess"] > 0
    parts = sum(stats.last_ms[k] for k in ("preprocess", "h2d", "compute", "d2h", "postprocess"))
    assert parts <= stats.last_ms["total"] * 1.01 + 0.01
    assert stats.fps == pytest.approx(1000 / stats.mean_ms["total"])
    assert "compute" in str(stats) and "frames/s" in str(stats)
    fuser.reset_stats()
    assert fuser.stats.frames == 0


# ---- channels: grey into a colour model, colour into a grey model -----------------------------

def test_grey_frames_into_a_colour_only_model(tmp_path):
    import torch

    from mfif.train.models import build_model

    torch.manual_seed(0)
    colour_only = export_onnx(build_model("focusmap", scale=2), tmp_path / "colour.onnx", channels=3)
    fuser = Fuser(colour_only)
    assert fuser.info.channels == 3
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (31, 45), dtype=np.uint8)
    np.testing.assert_array_equal(fuser(grey, grey), grey)
    a, b, _ = demo_frames(40, 56, colour=False)
    fused = fuser(a, b)
    assert fused.shape == a.shape and fused.dtype == np.uint8


def test_colour_frames_into_a_grey_only_model(tmp_path):
    import torch

    from mfif.train.models import build_model

    torch.manual_seed(0)
    grey_only = export_onnx(build_model("focusmap", scale=2), tmp_path / "grey.onnx", channels=1)
    fuser = Fuser(grey_only)
    a, b, _ = demo_frames(40, 56)
    # identical sources: the luma from the model and the chroma rule must give the frame back
    same = fuser(a, a)
    assert same.shape == a.shape and same.dtype == np.uint8
    assert np.abs(same.astype(int) - a).max() <= 2
    fused = fuser(a, b)
    # where B is in focus and A is not, the result follows B in colour too
    ref_luma = reference(grey_only, [luma(a.astype(np.float32) / 255), luma(b.astype(np.float32) / 255)], 2)
    assert np.abs(luma(fused.astype(np.float32)) - np.clip(ref_luma, 0, 1) * 255).max() <= 2.5


def test_real_two_input_models_with_fixed_channels():
    xu_colour = Fuser(exported("xu2018", channels=3, filters=8))
    a, b, _ = demo_frames(24, 32)
    assert xu_colour.info.sources == 2 and xu_colour.info.channels == 3
    assert xu_colour(a, b).shape == a.shape
    grey_a, grey_b, _ = demo_frames(24, 32, colour=False)
    assert xu_colour(grey_a, grey_b).shape == grey_a.shape
    with pytest.raises(InputError, match="takes exactly 2 frames, got 3"):
        xu_colour.fuse([a, b, a])
    with pytest.raises(ConfigError, match="gives no weight map"):
        xu_colour(a, b, return_weights=True)
    with pytest.raises(ConfigError, match="smoothing needs a model with weight maps"):
        xu_colour.smoothing = 0.5
    xu_grey = Fuser(exported("mustafa2019", channels=1, features=8, branch=4))
    assert xu_grey.info.channels == 1
    fused = xu_grey(a, b)
    assert fused.shape == a.shape and fused.dtype == np.uint8


# ---- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("frames, message", [
    ([np.zeros((4, 5, 3), np.uint8), np.zeros((4, 6, 3), np.uint8)], r"frame 0 is \(4, 5, 3\), frame 1 is \(4, 6, 3\)"),
    ([np.zeros((4, 5), np.uint8), np.zeros((4, 5, 3), np.uint8)], r"frame 0 is grey \(4, 5\) but frame 1 is colour"),
    ([np.zeros((0, 5, 3), np.uint8), np.zeros((0, 5, 3), np.uint8)], r"frame 0 is empty \(shape \(0, 5, 3\)\)"),
    ([np.zeros((4, 5), np.float64), np.zeros((4, 5), np.float64)], "dtype float64"),
    ([np.zeros((4, 5), np.uint16), np.zeros((4, 5), np.uint16)], "dtype uint16"),
    ([np.zeros((4, 5), np.uint8), np.zeros((4, 5), np.float32)], "frames differ in dtype"),
    ([np.zeros((4, 5, 4), np.uint8), np.zeros((4, 5, 4), np.uint8)], "drop alpha"),
    ([np.zeros((4, 5), np.uint8)], "at least 2 frames, got 1"),
    ([None, np.zeros((4, 5), np.uint8)], "frame 0 is None: cv2.imread"),
    ([[1, 2], [3, 4]], "frame 0 is a list"),
    (np.zeros((4, 5, 3), np.uint8), "for two frames call fuser"),
    ([np.full((4, 5), np.nan, np.float32), np.zeros((4, 5), np.float32)], "NaN or infinite"),
    ([np.full((4, 5), 200.0, np.float32), np.zeros((4, 5), np.float32)], r"values in \[0, 200\]"),
])
def test_bad_frames_are_clear_errors(fuser, frames, message):
    with pytest.raises(InputError, match=message):
        fuser.fuse(frames)
    a, b, _ = demo_frames(16, 16)
    assert fuser(a, b).shape == a.shape  # the fuser still works afterwards


def test_bad_model_files(tmp_path):
    with pytest.raises(ModelFileError, match="model file not found"):
        Fuser(tmp_path / "missing.onnx")
    corrupted = tmp_path / "corrupted.onnx"
    corrupted.write_bytes(DEFAULT_MODEL.read_bytes()[:2000])
    with pytest.raises(ModelFileError, match=r"corrupted.onnx \(2000 bytes\)"):
        Fuser(corrupted)
    unknown = tmp_path / "model.bin"
    unknown.write_bytes(b"0")
    with pytest.raises(ConfigError, match=r"suffix '.bin'"):
        Fuser(unknown)
    with pytest.raises(ConfigError, match="unknown backend 'tflite'"):
        Fuser(backend="tflite")
    with pytest.raises(ConfigError, match=r"backend 'onnxruntime' does not take the options \['precison'\]"):
        load_backend(precison="fp16")
    with pytest.raises(ConfigError, match="cannot run focusmap.onnx"):
        Fuser(DEFAULT_MODEL, backend="torch")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(MfifError):
        Fuser(engine)


def test_a_ready_backend_with_its_own_options():
    """Loading apart from running: a backend made with its options, then handed to the Fuser."""
    backend = OnnxRuntimeBackend(DEFAULT_MODEL, device="cpu", threads=1)
    fuser = Fuser(backend)
    assert fuser._backend is backend and fuser.device == "CPUExecutionProvider (1 threads)"
    a, b, _ = demo_frames(24, 32)
    np.testing.assert_array_equal(fuser(a, b), Fuser(device="cpu")(a, b))
    with pytest.raises(ConfigError, match=r"a ready backend runs where it was made \(onnxruntime on CPUExecution"):
        Fuser(backend, device="cuda")
    with pytest.raises(ConfigError, match="backend 'tensorrt' needs an engine file"):
        Fuser(backend="tensorrt")


def test_one_device_type_and_parser_for_every_backend():
    from mfif.device import Device, parse_device

    assert parse_device("auto") == Device("auto") and parse_device("CPU") == Device("cpu")
    assert parse_device("cuda") == Device("cuda") and parse_device("cuda:1") == Device("cuda", 1)
    assert str(parse_device("cuda:1")) == "cuda:1" and str(parse_device("cuda")) == "cuda"
    for bad in (None, 0, "gpu", "cuda:", "cuda:x", "cuda:-1"):
        with pytest.raises(ConfigError, match=f"unknown device {bad!r}"):
            parse_device(bad)
    with pytest.raises(ConfigError, match="unknown device None"):
        Fuser(device=None)
    with pytest.raises(ConfigError, match="unknown device 'cuda:x'"):
        load_backend(None, "torch", "cuda:x")


def test_a_model_that_gives_nan_is_an_error_not_garbage(tmp_path):
    """A hand-built graph whose output is 0/0 (as an FP16 overflow can give)."""
    import onnx
    from onnx import TensorProto, helper

    from mfif.errors import InferenceError
    from mfif.runtime.model_info import ModelInfo

    nodes = [helper.make_node("ReduceMean", ["sources"], ["mean"], axes=[1], keepdims=0),
             helper.make_node("Sub", ["mean", "mean"], ["zero"]),
             helper.make_node("Div", ["zero", "zero"], ["fused"])]
    graph = helper.make_graph(nodes, "nan",
                              [helper.make_tensor_value_info("sources", TensorProto.FLOAT, [1, "k", "c", "h", "w"])],
                              [helper.make_tensor_value_info("fused", TensorProto.FLOAT, [1, "c", "h", "w"])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for key, value in ModelInfo(model="nan-maker").to_metadata().items():
        proto.metadata_props.add(key=key, value=value)
    path = tmp_path / "nan.onnx"
    onnx.save(proto, str(path))
    fuser = Fuser(path)
    a, b, _ = demo_frames(16, 20)
    with pytest.raises(InferenceError, match="model nan-maker .fp32. produced NaN"):
        fuser(a, b)
    with pytest.raises(InferenceError, match="produced NaN"):
        fuser(a.astype(np.float32) / 255, b.astype(np.float32) / 255)


def test_onnx_without_metadata_is_refused(tmp_path):
    import onnx

    proto = onnx.load(str(DEFAULT_MODEL))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ModelFileError, match="carries no mfif metadata"):
        Fuser(bare)


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_a_gpu_that_cannot_run_is_an_error_not_a_silent_cpu_run():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA; the fallback case needs a CPU-only build")
    with pytest.raises(BackendUnavailableError, match="asked for CUDAExecutionProvider but ONNX Runtime runs on CPU"):
        Fuser(device="cuda")
    # ONNX Runtime itself only warns and runs on the CPU when given these providers:
    with pytest.raises(BackendUnavailableError, match="has no TensorrtExecutionProvider"):
        Fuser(OnnxRuntimeBackend(providers=["TensorrtExecutionProvider", "CPUExecutionProvider"]))
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        Fuser(device="gpu")
    assert Fuser(device="cpu").device.startswith("CPUExecutionProvider")


def test_provider_check_warns_when_an_automatic_cuda_choice_fell_back():
    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    message = check_providers(["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"], available,
                              strict=False)
    assert "failed to load" in message and "Running on the CPU" in message
    with pytest.raises(BackendUnavailableError, match="failed to load"):
        check_providers(["CUDAExecutionProvider"], ["CPUExecutionProvider"], available, strict=True)
    assert check_providers(["CUDAExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"], available, True) is None


# ---- threads, backends, footprint ------------------------------------------------------------

@pytest.mark.parametrize("shared", [False, True], ids=["own model each", "one shared session"])
def test_two_fusers_in_two_threads(scale4, shared):
    rng = np.random.default_rng(4)
    inputs = [[rng.integers(0, 256, (40 + 8 * i, 56, 3), dtype=np.uint8) for _ in range(2)] for i in range(2)]
    expected = [Fuser(scale4)(*pair) for pair in inputs]
    results: dict[int, list] = {0: [], 1: []}
    first = Fuser(OnnxRuntimeBackend(scale4, threads=1))
    twins = [first, first.for_another_thread()] if shared else [Fuser(scale4), Fuser(scale4)]
    if shared:
        assert twins[1]._backend.session is first._backend.session and twins[1].info == first.info
        assert twins[1].device == first.device == "CPUExecutionProvider (1 threads)"

    def work(index: int) -> None:
        own = twins[index]
        for _ in range(5):
            results[index].append(own(*inputs[index]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    for index in range(2):
        assert len(results[index]) == 5
        for result in results[index]:
            np.testing.assert_array_equal(result, expected[index])
        assert twins[index].stats.frames == 5  # statistics of its own


def test_one_fuser_used_by_two_threads_at_once_is_refused(fuser):
    a, b, _ = demo_frames(16, 16)
    errors = []
    fuser._lock.acquire()  # as if another thread were inside fuse()
    try:
        thread = threading.Thread(target=lambda: errors.append(_catch(lambda: fuser(a, b))))
        thread.start()
        thread.join(timeout=10)
    finally:
        fuser._lock.release()
    assert isinstance(errors[0], ConfigError) and "one Fuser per thread" in str(errors[0])


def _catch(call):
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - handed back to the test
        return exc
    return None


def test_torch_backend_runs_a_checkpoint_like_the_onnx_model(tmp_path):
    import torch

    from mfif.train.checkpoint import save_checkpoint
    from mfif.train.models import build_model

    torch.manual_seed(5)
    model = build_model("focusmap", scale=2)
    checkpoint = save_checkpoint(tmp_path / "focusmap.safetensors", model)
    onnx_path = export_onnx(model, tmp_path / "focusmap.onnx")
    with_torch = Fuser(checkpoint)
    assert with_torch.backend_name == "torch" and with_torch.device.startswith("torch CPU")
    assert with_torch.info.model == "focusmap" and with_torch.info.size_multiple == 2
    a, b, _ = demo_frames(45, 61)
    fused, weights = with_torch(a, b, return_weights=True)
    onnx_fused, onnx_weights = Fuser(onnx_path)(a, b, return_weights=True)
    assert np.abs(fused.astype(int) - onnx_fused).max() <= 1
    np.testing.assert_allclose(weights, onnx_weights, atol=1e-4)
    # Another thread's Fuser shares the loaded module, with buffers of its own.
    twin = with_torch.for_another_thread()
    assert twin._backend is not with_torch._backend and twin.backend_name == "torch"
    assert twin._backend.model is with_torch._backend.model
    np.testing.assert_array_equal(twin(a, b), fused)
    with pytest.raises(ConfigError, match=r"backend 'torch' does not take the options \['providers'\]"):
        load_backend(checkpoint, providers=["CPUExecutionProvider"])
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="sees no CUDA GPU"):
            Fuser(checkpoint, device="cuda")


def test_torch_backend_default_checkpoint():
    from mfif.runtime.backends.torch_backend import default_checkpoint

    if default_checkpoint().is_file():
        assert Fuser(backend="torch").info.model == "focusmap"
    else:
        with pytest.raises(ModelFileError, match="no default checkpoint"):
            Fuser(backend="torch")


def test_runtime_imports_numpy_and_the_backend_only():
    code = (
        "import sys, numpy as np\n"
        "from mfif import Fuser\n"
        "fuser = Fuser()\n"
        "a = np.zeros((48, 64, 3), np.uint8); b = np.full((48, 64, 3), 200, np.uint8)\n"
        "assert fuser(a, b).shape == (48, 64, 3)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'cv2') or m.startswith(('mfif.train', 'mfif.export')))\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_no_warnings_on_a_plain_cpu_run():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fuser = Fuser()
        a, b, _ = demo_frames(16, 16)
        fuser(a, b)


def test_onnxruntime_graph_optimization_option(tmp_path):
    from mfif.runtime import Fuser

    frames = [np.full((16, 24, 3), value, np.uint8) for value in (40, 200)]
    results = []
    for level in ("basic", "extended", "all"):
        fuser = Fuser(OnnxRuntimeBackend(graph_optimization=level))
        results.append(fuser(*frames))
    assert all(np.array_equal(results[0], other) for other in results[1:])
    with pytest.raises(ConfigError, match="graph_optimization must be one of basic, extended, all"):
        OnnxRuntimeBackend(graph_optimization="fast")


def test_a_closed_fuser_refuses_to_fuse():
    fuser = Fuser()
    frames = demo_frames(32, 32)[:2]
    assert fuser(*frames).shape == frames[0].shape
    fuser.close()
    with pytest.raises(ConfigError, match="this Fuser was closed; make a new one"):
        fuser(*frames)
