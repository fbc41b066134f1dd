"""Behaviour of the information, gradient and structural fusion metrics and of the input
convention (evaluation.metrics.common): extremes, symmetry, degenerate and bad inputs."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from mfif.evaluation.metrics import PairScorer, compute_metrics, get_metric, reference_grey
from mfif.evaluation.metrics.common import MIN_SIZE, prepare_inputs
from mfif.evaluation.metrics.gradient import (GAMMA_A, GAMMA_G, KAPPA_A, KAPPA_G, SIGMA_A, SIGMA_G,
                                         average_gradient, prepare_qabf, qabf, spatial_frequency,
                                         standard_deviation)
from mfif.evaluation.metrics.information import entropy, mutual_information, qmi, qncie
from mfif.evaluation.metrics.structural import SSIM_C1, SSIM_C2, prepare_qy, psnr, qe, qy, ssim
from mfif.errors import InputError
from mfif.scenes import multi_focus

SOURCE_METRICS = {"QMI": qmi, "QNCIE": qncie, "QG": qabf, "QE": qe, "QY": qy, "MI": mutual_information}
# QG of a pixel whose edge is preserved perfectly: the top of both sigmoids.
QG_TOP = GAMMA_G / (1 + math.exp(KAPPA_G * (1 - SIGMA_G))) * GAMMA_A / (1 + math.exp(KAPPA_A * (1 - SIGMA_A)))


def _texture(height=64, width=80, seed=1) -> np.ndarray:
    """A smooth random texture in whole grey levels spanning 0..255: edges everywhere and no flat
    region, which the extremes below rely on (a generated scene of mfif.scenes has flat parts)."""
    noise = np.random.default_rng(seed).uniform(0, 255, (height, width))
    smooth = cv2.GaussianBlur(noise, (0, 0), 1.0)
    return np.round((smooth - smooth.min()) / (smooth.max() - smooth.min()) * 255.0)


def _multi_focus_pair():
    """(A, B, sharp, blurred), float64: A sharp on the left half, B on the right half."""
    sharp = _texture()
    a, b = (x.astype(np.float64) for x in multi_focus(sharp.astype(np.uint8), "strips", sigma=2.5))
    return a, b, sharp, a + b - sharp  # each pixel: sharp in one source, blurred in the other


# --- input convention -----------------------------------------------------------------------------

def test_reference_grey_weights_channels_in_bgr_order_and_rounds_like_matlab():
    red, green, blue = (np.zeros((2, 2, 3), np.uint8) for _ in range(3))
    red[..., 2], green[..., 1], blue[..., 0] = 255, 255, 255
    # MATLAB rgb2gray(uint8): round(0.2989 * 255) = 76, round(0.5870 * 255) = 150, round(0.1140 * 255) = 29
    assert reference_grey(red)[0, 0] == 76
    assert reference_grey(green)[0, 0] == 150
    assert reference_grey(blue)[0, 0] == 29
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    grey_as_colour = np.repeat(levels[:, :, None], 3, axis=2)
    converted = reference_grey(grey_as_colour)
    assert converted.dtype == np.float64 and converted.shape == (16, 16)
    np.testing.assert_array_equal(converted, levels)
    mixed = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    values = reference_grey(mixed)
    np.testing.assert_array_equal(values, np.round(values))  # rounded to whole levels
    weighted = mixed[..., 2] * 0.2989 + mixed[..., 1] * 0.5870 + mixed[..., 0] * 0.1140
    assert np.abs(values - weighted).max() <= 0.5 + 0.03  # rounding, and MATLAB's unrounded weights


def test_reference_grey_keeps_grey_drops_alpha_and_scales_unit_floats():
    grey = np.random.default_rng(0).integers(0, 256, (12, 12), dtype=np.uint8)
    np.testing.assert_array_equal(reference_grey(grey), grey)
    np.testing.assert_array_equal(reference_grey(grey[:, :, None]), grey)
    colour = np.random.default_rng(1).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    with_alpha = np.concatenate([colour, np.full((12, 12, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(reference_grey(with_alpha), reference_grey(colour))
    unit = grey.astype(np.float32) / 255.0
    np.testing.assert_allclose(reference_grey(unit), grey, atol=1e-4)
    np.testing.assert_array_equal(reference_grey(grey.astype(np.float64)), grey)  # 0..255 float as is
    np.testing.assert_array_equal(reference_grey(grey.astype(np.int32)), grey)


@pytest.mark.parametrize("image, words", [
    (np.zeros((4, 4, 2), np.uint8), "shape"),
    (np.zeros((0, 5), np.uint8), "empty"),
    (np.full((4, 4), 300, np.uint16), "300"),
    (np.full((4, 4), -1.0), "outside"),
    (np.full((4, 4), 1.5), "ambiguous"),
    (np.full((4, 4), np.nan), "NaN"),
    (np.full((4, 4), np.inf), "NaN or infinite"),
    (np.ones((4, 4), bool), "sample type bool"),
])
def test_reference_grey_refuses_bad_images(image, words):
    with pytest.raises(InputError, match=words):
        reference_grey(image, "fused")


def test_prepare_inputs_names_all_shapes_when_sizes_differ():
    a, b = np.zeros((20, 20), np.uint8), np.zeros((20, 21), np.uint8)
    with pytest.raises(InputError) as error:
        prepare_inputs(a, b, a)
    assert all(text in str(error.value) for text in ("A 20x20", "B 20x21", "fused 20x20"))
    with pytest.raises(InputError, match="truth 19x20"):
        prepare_inputs(a, a, a, np.zeros((19, 20), np.uint8))


@pytest.mark.parametrize("size", [1, 2, MIN_SIZE - 1])
def test_prepare_inputs_refuses_images_below_the_minimum_size(size):
    tiny = np.zeros((size, 30), np.uint8)
    with pytest.raises(InputError, match=f"at least {MIN_SIZE}x{MIN_SIZE}"):
        prepare_inputs(tiny, tiny, tiny)


def test_prepare_inputs_converts_and_checks_every_image():
    colour = np.random.default_rng(0).integers(0, 256, (MIN_SIZE, 15, 3), dtype=np.uint8)
    grey = reference_grey(colour)
    a, b, fused, truth = prepare_inputs(colour, grey / 255.0, grey.astype(np.uint8))
    assert truth is None
    for image in (a, b, fused):
        assert image.dtype == np.float64 and image.shape == (MIN_SIZE, 15)
        np.testing.assert_allclose(image, grey, atol=1e-9)
    nan = grey.copy()
    nan[3, 4] = np.nan
    with pytest.raises(InputError, match="fused holds 1 NaN"):
        prepare_inputs(grey, grey, nan)


@pytest.mark.parametrize("name", ["QMI", "QNCIE", "QG", "QE", "QY", "MI"])
def test_metric_functions_refuse_colour_mismatched_and_out_of_range_images(name):
    metric = get_metric(name)
    grey = _texture(20, 20)
    with pytest.raises(InputError, match="reference_grey"):
        metric(np.dstack([grey] * 3), grey, grey)
    with pytest.raises(InputError, match="20x20.*20x19"):
        metric(grey, grey[:, :19], grey)
    with pytest.raises(InputError, match="0..255"):
        metric(grey, grey, grey * 2)
    with pytest.raises(InputError, match="NaN"):
        metric(grey, grey, np.where(grey > 100, np.nan, grey))


@pytest.mark.parametrize("metric, minimum", [(qe, 8), (qy, 7)])
def test_window_metrics_refuse_images_smaller_than_their_window(metric, minimum):
    small = _texture(minimum - 1, 30)
    with pytest.raises(InputError, match=f"at least {minimum}x{minimum}"):
        metric(small, small, small)
    assert np.isfinite(metric(*(_texture(minimum, minimum),) * 3))


def test_ssim_refuses_images_smaller_than_its_window():
    small = _texture(10, 30)
    with pytest.raises(InputError, match="at least 11x11"):
        ssim(small, small)


# --- extremes and symmetry ---------------------------------------------------------------------------

def test_identical_sources_and_fused_give_the_top_values():
    image = _texture()
    assert qmi(image, image, image) == pytest.approx(2.0, abs=1e-12)
    assert qabf(image, image, image) == pytest.approx(QG_TOP, abs=1e-12)
    assert qe(image, image, image) == pytest.approx(1.0, abs=1e-9)
    assert qy(image, image, image) == pytest.approx(1.0, abs=1e-9)
    assert mutual_information(image, image, image) == pytest.approx(2 * entropy(image), abs=1e-12)
    # QNCIE reaches 1 when the nonlinear correlations are 1: every grey level equally often
    uniform = np.tile(np.arange(256.0), (4, 1))
    assert qncie(uniform, uniform, uniform) == pytest.approx(1.0, abs=1e-12)
    assert 0.0 < qncie(image, image, image) < 1.0


def test_ideal_fusion_scores_above_averaging_and_blurring():
    a, b, sharp, blurred = _multi_focus_pair()
    average = np.round((a + b) / 2)
    for name, metric in SOURCE_METRICS.items():
        ideal = metric(a, b, sharp)
        assert ideal > metric(a, b, average), name
        assert ideal > metric(a, b, blurred), name


@pytest.mark.parametrize("name", list(SOURCE_METRICS))
def test_source_metrics_are_symmetric_in_the_two_sources(name):
    a, b, _, blurred = _multi_focus_pair()
    fused = np.round(0.7 * a + 0.3 * blurred)
    metric = SOURCE_METRICS[name]
    assert metric(a, b, fused) == pytest.approx(metric(b, a, fused), rel=1e-12, abs=1e-12)


def test_metric_ranges_on_a_real_looking_case():
    a, b, _, blurred = _multi_focus_pair()
    fused = np.round(0.5 * a + 0.5 * blurred)
    assert 0.0 <= qmi(a, b, fused) <= 2.0
    for metric in (qncie, qabf, qe, qy):
        assert 0.0 <= metric(a, b, fused) <= 1.0


# --- degenerate images -------------------------------------------------------------------------------

@pytest.mark.parametrize("level", [0.0, 128.0, 255.0])
def test_constant_images_give_the_documented_values(level):
    flat = np.full((16, 16), level)
    assert qmi(flat, flat, flat) == 0.0
    assert qncie(flat, flat, flat) == pytest.approx(1.0 - math.log2(3) / 8.0, abs=1e-12)
    assert qabf(flat, flat, flat) == pytest.approx(QG_TOP, abs=1e-12)
    assert qe(flat, flat, flat) == pytest.approx(1.0, abs=1e-9)
    assert qy(flat, flat, flat) == pytest.approx(1.0, abs=1e-9)
    assert mutual_information(flat, flat, flat) == 0.0
    for measure in (entropy, spatial_frequency, average_gradient, standard_deviation):
        assert measure(flat) == 0.0
    assert psnr(flat, flat) == math.inf
    assert ssim(flat, flat) == pytest.approx(1.0, abs=1e-12)


def test_constant_fused_image_of_textured_sources_scores_low_but_defined():
    a, b, _, _ = _multi_focus_pair()
    flat = np.full_like(a, 100.0)
    values = {name: metric(a, b, flat) for name, metric in SOURCE_METRICS.items()}
    assert all(np.isfinite(value) for value in values.values()), values
    assert values["QMI"] == pytest.approx(0.0, abs=1e-12) and values["MI"] == pytest.approx(0.0, abs=1e-12)
    assert values["QG"] < 0.2 and values["QE"] < 1e-6 and values["QY"] < 1e-6


def test_one_pixel_and_one_row_images_give_defined_values():
    pixel = np.full((1, 1), 9.0)
    assert qmi(pixel, pixel, pixel) == 0.0
    assert qabf(pixel, pixel, pixel) == pytest.approx(QG_TOP, abs=1e-12)
    assert entropy(pixel) == 0.0 and standard_deviation(pixel) == 0.0 and spatial_frequency(pixel) == 0.0
    row = np.arange(10.0)[None, :]
    assert spatial_frequency(row) == pytest.approx(math.sqrt(9 / 10))
    with pytest.raises(InputError, match="at least 2x2"):
        average_gradient(row)


# --- no-reference and ground-truth measures ----------------------------------------------------------

def test_entropy_counts_bits_of_the_grey_level_histogram():
    assert entropy(np.tile(np.arange(256.0), (3, 1))) == pytest.approx(8.0)
    two_levels = np.zeros((4, 4))
    two_levels[:, :2] = 200
    assert entropy(two_levels) == pytest.approx(1.0)


def test_gradient_measures_of_a_ramp():
    rows, cols = 20, 30
    ramp = np.tile(np.arange(cols, dtype=float), (rows, 1))
    assert spatial_frequency(ramp) == pytest.approx(math.sqrt((cols - 1) / cols))
    assert average_gradient(ramp) == pytest.approx(math.sqrt(0.5))
    assert standard_deviation(ramp) == pytest.approx(np.arange(cols).std())
    stripes = np.zeros((10, 10))
    stripes[:, ::2] = 2.0
    assert standard_deviation(stripes) == pytest.approx(1.0)


def test_psnr_of_a_known_error():
    truth = np.clip(_texture(), 10, 240)
    assert psnr(truth + 5.0, truth) == pytest.approx(10 * math.log10(255.0**2 / 25.0))
    assert psnr(truth, truth) == math.inf


def _naive_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM by an explicit loop over the 11x11 windows (Wang et al. 2004, Gaussian sigma 1.5)."""
    offsets = np.arange(11) - 5
    window = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * 1.5**2))
    window /= window.sum()
    values = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            px, py = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
            mx, my = (window * px).sum(), (window * py).sum()
            vx, vy = (window * (px - mx) ** 2).sum(), (window * (py - my) ** 2).sum()
            cxy = (window * (px - mx) * (py - my)).sum()
            values.append((2 * mx * my + SSIM_C1) * (2 * cxy + SSIM_C2)
                          / ((mx**2 + my**2 + SSIM_C1) * (vx + vy + SSIM_C2)))
    return float(np.mean(values))


def test_ssim_matches_an_explicit_window_loop():
    truth = _texture(70, 23, seed=3)  # more rows than one strip of windows
    noisy = np.clip(truth + np.random.default_rng(4).normal(0, 12, truth.shape), 0, 255)
    assert ssim(noisy, truth) == pytest.approx(_naive_ssim(noisy, truth), abs=1e-10)
    assert ssim(truth, truth) == pytest.approx(1.0, abs=1e-12)
    assert ssim(noisy, truth) < ssim(np.round(0.5 * noisy + 0.5 * truth), truth) < 1.0


# --- the registry entry point ------------------------------------------------------------------------

def test_compute_metrics_on_colour_images_equals_the_metrics_on_reference_grey():
    rng = np.random.default_rng(5)
    colour = [rng.integers(0, 256, (24, 30, 3), dtype=np.uint8) for _ in range(3)]
    names = ("QMI", "QG", "QE", "QY", "EN", "SF", "PSNR", "SSIM")
    results = compute_metrics(*colour, names=names, truth=colour[0])
    grey = [reference_grey(image) for image in colour]
    assert results["QG"] == qabf(*grey)
    assert results["QY"] == qy(*grey)
    assert results["EN"] == entropy(grey[2])
    assert results["PSNR"] == psnr(grey[2], grey[0])
    without_truth = compute_metrics(*colour, names=names)
    assert "PSNR" not in without_truth and "SSIM" not in without_truth
    with pytest.raises(KeyError, match="unknown metric"):
        get_metric("QX")


# --- scoring many fused images of one pair -------------------------------------------------------------
def test_pair_scorer_gives_what_each_metric_gives_for_every_fused_image():
    a, b, sharp, blurred = _multi_focus_pair()
    names = ("QMI", "QNCIE", "QG", "QP", "QE", "QY", "QCB", "QCV", "MI", "EN", "PSNR", "SSIM")
    scorer = PairScorer(a.astype(np.uint8), b / 255.0, names)
    for fused in (sharp, blurred, (a + b) / 2, a):
        scores = scorer.score(fused, truth=sharp)
        assert list(scores) == list(names)
        for name in names:
            metric = get_metric(name)
            if name in ("PSNR", "SSIM"):
                expected = metric(fused, sharp)
            elif name == "EN":
                expected = metric(fused)
            else:
                expected = metric(a, b, fused)
            assert scores[name] == expected, name
    assert "PSNR" not in scorer.score(sharp)


def test_pair_scorer_checks_every_fused_image_against_the_sources():
    a, b, sharp, _ = _multi_focus_pair()
    scorer = PairScorer(a, b, ("QY", "QP"))
    with pytest.raises(InputError, match=r"A 64x80, B 64x80, fused 64x79"):
        scorer.score(sharp[:, :79])
    with pytest.raises(InputError, match="truth 63x80"):
        scorer.score(sharp, truth=sharp[:63])
    nan = sharp.copy()
    nan[5, 6] = np.nan
    with pytest.raises(InputError, match="fused holds 1 NaN"):
        scorer.score(nan)
    with pytest.raises(InputError, match="B 64x80.*A 64x81|A 64x81, B 64x80"):
        PairScorer(np.zeros((64, 81)), b)
    with pytest.raises(KeyError, match="unknown metric"):
        PairScorer(a, b, ("QY", "QX"))
    for name, prepare in (("QY", prepare_qy), ("QG", prepare_qabf)):
        score = prepare(a, b)
        assert score(sharp) == get_metric(name)(a, b, sharp)
        with pytest.raises(InputError, match="a 64x80, b 64x80, fused 64x79"):
            score(sharp[:, :79])
