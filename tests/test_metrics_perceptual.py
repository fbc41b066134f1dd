"""QP (phase congruency), QCB and QCV: behaviour on synthetic images. Their conformance with the
published per-image values of Liu et al. 2020 is tested with the other five reference metrics in
tests/test_metrics_conformance.py."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mfif.evaluation.metrics import phase
from mfif.evaluation.metrics.common import stretch_levels
from mfif.evaluation.metrics.perceptual import qcb, qcv
from mfif.evaluation.metrics.phase import phase_congruency, qp
from mfif.errors import InputError
from mfif.scenes import multi_focus

METRICS = (qp, qcb, qcv)


def _scene(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """An all-in-focus grey scene: discs, rectangle outlines and fine texture on a flat ground. Not
    mfif.scenes.scene: the phase-congruency figures below are tuned to this sparse content."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width), 90.0)
    for _ in range(12):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(image, centre, int(rng.integers(4, 16)), float(rng.uniform(0, 255)), -1)
    for _ in range(8):
        corners = rng.integers(0, [width, height], size=(2, 2))
        cv2.rectangle(image, tuple(map(int, corners[0])), tuple(map(int, corners[1])),
                      float(rng.uniform(0, 255)), 2)
    image += cv2.GaussianBlur(rng.normal(0, 20, (height, width)), (0, 0), 1.0)
    return np.clip(image, 0, 255)


def _pair(sharp: np.ndarray, sigma: float = 2.5):
    """Multi-focus pair: A sharp on the left half, B sharp on the right half; and the blur."""
    a, b = (x.astype(np.float64) for x in multi_focus(np.round(sharp).astype(np.uint8), "strips", sigma=sigma))
    return a, b, a + b - np.round(sharp)  # each pixel: sharp in one source, blurred in the other


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_in_focus_beats_average_beats_blur(seed):
    scene = _scene(seed=seed)
    a, b, blurred = _pair(scene)
    average = (a + b) / 2
    for metric in (qp, qcb):
        sharp_score, average_score, blur_score = (metric(a, b, f) for f in (scene, average, blurred))
        assert sharp_score > average_score > blur_score, metric.__name__
    sharp_score, average_score, blur_score = (qcv(a, b, f) for f in (scene, average, blurred))
    assert sharp_score < average_score < blur_score  # QCV: lower is better


def test_fused_equal_to_both_sources_is_the_extreme():
    scene = _scene(seed=3)
    other = _scene(seed=4)
    assert qcb(scene, scene, scene) == 1.0
    assert qcv(scene, scene, scene) == 0.0
    # QP masks the source feature maps at phase congruency 0.1 but not the fused one, so even a
    # perfect copy stays a little under 1.
    perfect = qp(scene, scene, scene)
    assert 0.97 < perfect < 1.0
    assert qp(scene, scene, other) < perfect


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.__name__)
def test_symmetric_in_the_sources(metric):
    a, b, _ = _pair(_scene(seed=5))
    fused = np.maximum(a, b)
    assert metric(a, b, fused) == pytest.approx(metric(b, a, fused), rel=1e-12, abs=1e-12)


def test_constant_images_give_documented_values():
    scene = _scene(seed=6)
    a, b, _ = _pair(scene)
    grey = np.full(scene.shape, 128.0)
    black = np.zeros(scene.shape)
    for flat in (grey, black):
        assert (qp(flat, flat, flat), qcb(flat, flat, flat), qcv(flat, flat, flat)) == (1.0, 1.0, 0.0)
        # Features in the fused image that no source has, and features lost altogether.
        assert qp(flat, flat, scene) == 0.0 and qcb(flat, flat, scene) == 0.0
        assert qp(a, b, flat) == 0.0 and qcb(a, b, flat) == 0.0
        lost = qcv(a, b, flat)
        assert np.isfinite(lost) and lost > qcv(a, b, scene)
        invented = qcv(flat, flat, scene)
        assert np.isfinite(invented) and invented > 0.0


def test_normalisation_stretches_and_rounds():
    image = np.array([[10.0, 20.0], [30.0, 40.0]])
    assert stretch_levels(image).tolist() == [[0.0, 85.0], [170.0, 255.0]]
    assert stretch_levels(np.array([[0.0, 1.0, 2.0]])).tolist() == [[0.0, 128.0, 255.0]]  # 127.5 up
    assert not stretch_levels(np.full((3, 3), 7.0)).any()


@pytest.mark.parametrize("shape", [(11, 11), (11, 14), (37, 45), (64, 63)])
def test_small_and_odd_sizes_give_finite_values(shape):
    rng = np.random.default_rng(7)
    a, b = (cv2.GaussianBlur(rng.uniform(0, 255, shape), (0, 0), 1.0) for _ in range(2))
    fused = (a + b) / 2
    assert 0.0 <= qcb(a, b, fused) <= 1.0
    assert np.isfinite(qp(a, b, fused)) and qp(a, b, fused) <= 1.0 + 1e-9
    assert np.isfinite(qcv(a, b, fused)) and qcv(a, b, fused) >= 0.0


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.__name__)
def test_bad_inputs_raise_input_error(metric):
    good = _scene(32, 32)
    with pytest.raises(InputError, match="at least 11x11"):
        metric(good[:10, :10], good[:10, :10], good[:10, :10])
    with pytest.raises(InputError, match="one size"):
        metric(good, good[:, :31], good)
    with pytest.raises(InputError, match="0..255"):
        metric(good, good, good + 300)
    nan = good.copy()
    nan[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        metric(good, good, nan)
    with pytest.raises(InputError, match="shape"):
        metric(np.dstack([good] * 3), good, good)


def test_phase_congruency_marks_a_step_edge():
    image = np.zeros((64, 64))
    image[:, 32:] = 255.0
    pc, big, small = phase_congruency(image)
    assert pc.shape == big.shape == small.shape == image.shape
    assert 0.0 <= pc.min() and pc.max() <= 1.0
    row = pc[32]
    assert row[31:33].min() > 0.5  # on the edge
    assert row[8:24].max() < 0.01  # flat, away from the edge (and from the FFT wrap-around)
    assert np.all(big >= small)
    with pytest.raises(InputError, match="at least 11x11"):
        phase_congruency(image[:8, :8])


def test_source_features_cache_follows_content():
    a, b, _ = _pair(_scene(seed=8))
    fused = np.maximum(a, b)
    first = qp(a, b, fused)
    assert qp(a, b, fused) == first
    a[20:40, 20:60] = 0.0  # same array object, new content: must not reuse its cached features
    changed = qp(a, b, fused)
    assert changed != first
    assert changed == qp(a.copy(), b.copy(), fused.copy())
    assert len(phase._FEATURE_CACHE) > 0
    phase.clear_feature_cache()
    assert len(phase._FEATURE_CACHE) == 0
    assert qp(a, b, fused) == changed
