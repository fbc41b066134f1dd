"""Classical baselines, the enfuse wrapper and the method registry."""

from __future__ import annotations

import importlib
import importlib.util
import os

import numpy as np
import pytest

from mfif.evaluation import baselines, enfuse
from mfif.evaluation.methods import BASELINE_NAMES, get_method, get_methods
from mfif.errors import BackendUnavailableError, ConfigError, DataError, InputError, ModelFileError
from mfif.paths import shared_data_dir
from mfif.scenes import multi_focus, scene

METHODS = sorted(baselines.BASELINES.items())
IDS = [name for name, _ in METHODS]


def psnr(image: np.ndarray, truth: np.ndarray) -> float:
    mse = np.mean((image.astype(np.float64) - truth.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def synthetic_pair(seed: int, size: tuple[int, int], colour: bool = True):
    """A generated scene (the ground truth) and two sources blurred in complementary regions."""
    truth = scene(*size, seed=seed, colour=colour)
    return multi_focus(truth, "blobs", seed=seed), truth


def random_frames(shape, dtype, count=3, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]
    return [rng.random(shape).astype(dtype) for _ in range(count)]


@pytest.mark.parametrize("name,fuse", METHODS, ids=IDS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (2, 3), (17, 31), (33, 20, 3), (16, 16, 1)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_shape_dtype_and_range_kept_for_three_inputs(name, fuse, shape, dtype):
    frames = random_frames(shape, dtype)
    fused = fuse(frames)
    assert fused.shape == shape and fused.dtype == dtype
    assert np.isfinite(fused.astype(np.float64)).all()
    if dtype != np.uint8:
        assert 0.0 <= fused.min() and fused.max() <= 1.0


@pytest.mark.parametrize("name,fuse", METHODS, ids=IDS)
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (40, 33, 3)], ids=lambda s: "x".join(map(str, s)))
def test_fusing_identical_frames_returns_that_frame(name, fuse, shape):
    frame = random_frames(shape, np.uint8, 1, seed=3)[0]
    assert np.abs(fuse([frame, frame.copy()]).astype(int) - frame).max() <= 1
    float_frame = frame.astype(np.float32) / 255
    np.testing.assert_allclose(fuse([float_frame] * 3), float_frame, atol=1e-5)


@pytest.mark.parametrize("name,fuse", METHODS, ids=IDS)
def test_constant_frames_give_that_constant(name, fuse):
    frames = [np.full((24, 20, 3), 77, np.uint8), np.full((24, 20, 3), 77, np.uint8)]
    assert (fuse(frames) == 77).all()


def test_average_values():
    fused = baselines.average([np.zeros((2, 2), np.uint8), np.full((2, 2), 254, np.uint8)])
    assert (fused == 127).all()


@pytest.mark.parametrize("colour", [True, False], ids=["colour", "grey"])
def test_multiscale_and_decision_methods_beat_the_average_on_synthetic_pairs(colour):
    """With ground truth: every focus-selecting method must recover the sharp image better than
    the plain average (which blurs everything) on every pair, and the decision map must take
    nearly every pixel from the sharp source (soft weights only along the region borders)."""
    for seed in range(3):
        frames, truth = synthetic_pair(seed, (96, 128), colour=colour)
        floor = psnr(baselines.average(frames), truth)
        for name in ("lp", "dwt", "gff", "decision"):
            assert psnr(baselines.BASELINES[name](frames), truth) > floor + 3.0, (name, seed)
        error = np.abs(baselines.decision_map(frames).astype(int) - truth)
        assert np.mean((error if not colour else error.max(axis=-1)) <= 8) > 0.9


def test_swapping_the_frames_gives_the_same_result_on_a_real_looking_pair():
    frames, _ = synthetic_pair(7, (64, 80))
    for name in ("average", "lp", "dwt", "gff", "decision"):
        fuse = baselines.BASELINES[name]
        assert np.abs(fuse(frames).astype(int) - fuse(frames[::-1])).mean() < 0.05, name


def test_gff_reproduces_the_published_gff_results():
    """Liu et al. 2020 published GFF's fused images for their 10 grey pairs; ours must be the same
    image up to rounding."""
    data = shared_data_dir()
    if data is None:
        pytest.skip("shared data (metrics_reference/liu2020_gray10) not found; set MFIF_DATA")
    from mfif.imageio import read_image

    root = data / "metrics_reference" / "liu2020_gray10"
    for index in (5, 10):
        a, b = (read_image(root / "sources" / f"g_{index:02d}_{k}.png") for k in (1, 2))
        published = read_image(root / "fused" / f"g_{index:02d}_gff.png")
        fused = baselines.gff([a, b])
        assert psnr(fused, published) > 60.0
        assert np.abs(fused.astype(int) - published).max() <= 3


@pytest.mark.parametrize("frames,match", [
    ([np.zeros((4, 4), np.uint8)], "at least 2 frames"),
    ([np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8)], "4x4 uint8, frame 1 is 4x5"),
    ([np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.float32)], "one shape and dtype"),
    ([np.zeros((4, 4), np.float32), np.full((4, 4), np.nan, np.float32)], "16 NaN"),
    ([np.zeros((4, 4), np.float32), np.full((4, 4), 255.0, np.float32)], r"\[0, 1\]"),
    ([np.zeros((4, 4), np.uint16)] * 2, "uint16"),
    ([np.zeros((0, 4), np.uint8)] * 2, "non-empty"),
    ([np.zeros((2, 2, 2, 2), np.uint8)] * 2, "HxW or HxWxC"),
    ([np.zeros((4, 4), np.uint8), [[0] * 4] * 4], "not a numpy array"),
    (np.zeros((2, 4, 4), np.uint8), "list of images"),
], ids=["one", "sizes", "dtypes", "nan", "range", "uint16", "empty", "4d", "list", "array"])
@pytest.mark.parametrize("name,fuse", METHODS, ids=IDS)
def test_bad_input_is_a_clear_error(name, fuse, frames, match):
    with pytest.raises(InputError, match=match):
        fuse(frames)


# ---------------------------------------------------------------------------------------------
# enfuse

needs_enfuse = pytest.mark.skipif(not enfuse.available(), reason="the 'enfuse' program is not installed")


@needs_enfuse
def test_enfuse_on_a_real_pair():
    data = shared_data_dir()
    if data is not None and (data / "pairs" / "classic" / "clock_A.png").is_file():
        from mfif.imageio import read_image

        a, b = (read_image(data / "pairs" / "classic" / f"clock_{k}.png")[:160, :200] for k in "AB")
        fused = enfuse.fuse([a, b])
        assert fused.shape == a.shape and fused.dtype == np.uint8
        # Each output pixel lies between (or close to) the two sources: a blend, not garbage.
        low, high = np.minimum(a, b).astype(int), np.maximum(a, b).astype(int)
        assert np.mean((fused >= low - 8) & (fused <= high + 8)) > 0.97
    frames, truth = synthetic_pair(2, (64, 96))
    fused = enfuse.fuse(frames)
    assert fused.shape == truth.shape and psnr(fused, truth) > psnr(baselines.average(frames), truth) + 3


@needs_enfuse
def test_enfuse_grey_float_identical_and_files(tmp_path):
    frame = random_frames((20, 30), np.float32, 1)[0]
    fused = enfuse.fuse([frame, frame, frame])
    assert fused.dtype == np.float32 and fused.shape == frame.shape
    np.testing.assert_allclose(fused, frame, atol=1e-4)
    grey = (frame * 255).astype(np.uint8)[:, :, None]
    assert (enfuse.fuse([grey, grey]) == grey).all()

    import cv2

    frames, _ = synthetic_pair(4, (40, 50))
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path, image in zip(paths, frames):
        cv2.imwrite(str(path), image)
    output = enfuse.fuse_files(paths, tmp_path / "out" / "fused.tif")
    assert cv2.imread(str(output), cv2.IMREAD_UNCHANGED).shape[:2] == (40, 50)
    with pytest.raises(DataError, match="not found"):
        enfuse.fuse_files([paths[0], tmp_path / "missing.png"], tmp_path / "x.tif")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="enfuse failed"):
        enfuse.fuse_files([paths[0], tmp_path / "broken.png"], tmp_path / "x.tif")


@needs_enfuse
def test_enfuse_bad_input():
    with pytest.raises(InputError, match="at least 5x5"):
        enfuse.fuse([np.zeros((3, 40), np.uint8)] * 2)
    with pytest.raises(InputError, match="channels"):
        enfuse.fuse([np.zeros((8, 8, 2), np.uint8)] * 2)
    with pytest.raises(InputError, match="NaN"):
        enfuse.fuse([np.zeros((8, 8), np.float32), np.full((8, 8), np.nan, np.float32)])


def test_enfuse_missing_is_an_actionable_error(monkeypatch):
    monkeypatch.setenv("PATH", os.devnull)
    assert not enfuse.available()
    with pytest.raises(BackendUnavailableError, match="apt-get install enfuse"):
        enfuse.fuse([np.zeros((8, 8), np.uint8)] * 2)
    with pytest.raises(BackendUnavailableError, match="not installed"):
        get_method("enfuse")


# ---------------------------------------------------------------------------------------------
# The method registry

def test_registry_baselines_and_errors(tmp_path):
    methods = get_methods("baselines,gff")
    assert [m.label for m in methods] == list(BASELINE_NAMES)
    frames = random_frames((12, 10, 3), np.uint8, 2)
    for method in methods:
        np.testing.assert_array_equal(method.fuse(frames), baselines.BASELINES[method.name](frames))
    with pytest.raises(ConfigError, match="unknown method 'sharpest'"):
        get_method("sharpest")
    # model: takes every file the Fuser runs (.safetensors too since issue 16); other suffixes are refused.
    with pytest.raises(ConfigError, match="ONNX file"):
        get_method("model:weights.pt")
    with pytest.raises(ModelFileError, match="not found"):
        get_method(f"model:{tmp_path / 'absent.onnx'}")
    with pytest.raises(ConfigError, match="no methods"):
        get_methods(" , ")


def _average_onnx(path):
    """A real ONNX model that averages its sources, with the runtime's metadata."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from mfif.runtime.model_info import ModelInfo

    node = helper.make_node("ReduceMean", ["sources", "axes"], ["fused"], keepdims=0)
    graph = helper.make_graph(
        [node], "average",
        [helper.make_tensor_value_info("sources", TensorProto.FLOAT, [1, "K", "C", "H", "W"])],
        [helper.make_tensor_value_info("fused", TensorProto.FLOAT, [1, "C", "H", "W"])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    for key, value in ModelInfo(model="average").to_metadata().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def _runtime_or_skip():
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed")
    try:
        importlib.import_module("runtime").Fuser
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"runtime.Fuser cannot be imported yet: {exc}")


def test_registry_runs_an_onnx_model_through_the_runtime(tmp_path):
    _runtime_or_skip()
    path = _average_onnx(tmp_path / "gff.onnx")
    method = get_method(f"model:{path}")
    assert method.label == "model-gff"  # never shadows a baseline's name
    frames = random_frames((21, 13, 3), np.uint8, 3)
    fused = method.fuse(frames)
    assert fused.shape == frames[0].shape and fused.dtype == np.uint8
    assert np.abs(fused.astype(int) - baselines.average(frames)).max() <= 1


def test_registry_default_model():
    _runtime_or_skip()
    try:
        method = get_method("focusmap")
    except ModelFileError as exc:
        pytest.skip(f"the shipped default model is not there yet: {exc}")
    frames, truth = synthetic_pair(1, (64, 64))
    fused = method.fuse(frames)
    assert fused.shape == truth.shape and fused.dtype == np.uint8
