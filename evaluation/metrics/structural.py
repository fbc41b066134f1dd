"""Structural-similarity metrics: QE (Piella and Heijmans 2003, edge-dependent fusion quality
index, Liu toolbox variant), QY (Yang et al. 2008), and against a ground truth PSNR and SSIM.

Local statistics follow Wang's ``ssim_index.m``: windows lie wholly inside the image ('valid'),
variances are E[x^2] - E[x]^2 over the window (weights summing to 1). The window maps are
computed in strips of rows (:func:`row_strips`) and summed, which keeps the temporaries small.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from evaluation.metrics.common import (box_mean_valid, constant_windows, cv2, filter_same, gaussian_valid,
                                       row_strips, ssim_map, validate)

# QE: SSIM with tiny constants (Piella's UIQI) over 8x8 windows; Prewitt edge images; Q * Q_W.
QE_WINDOW = 8
QE_C = (1e-6 * 255.0) ** 2
PREWITT_X = np.array([[1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, -1.0]])
PREWITT_Y = PREWITT_X.T.copy()

# QY: SSIM with a 7x7 Gaussian window (sigma 1.5) and tiny constants; threshold on SSIM(A, B).
QY_WINDOW, QY_SIGMA, QY_C, QY_THRESHOLD = 7, 1.5, 2e-16, 0.75

# SSIM (Wang et al. 2004, ssim_index.m defaults): 11x11 Gaussian, sigma 1.5, K = (0.01, 0.03).
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
SSIM_C1, SSIM_C2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2

PEAK = 255.0


class _Moments:
    """Local means, variances and covariances of a set of images under one 'valid' window.

    With ``exact_flat`` set, a window in which an image is constant gets exactly zero variance
    and covariance: E[x^2] - E[x]^2 leaves rounding noise (about 1e-11) there, which SSIM with
    tiny constants (QY) would turn into arbitrary values."""

    def __init__(self, mean, window: int, images: dict[str, np.ndarray], exact_flat: bool = False):
        self._mean = mean
        self._images = images
        self.mu = {name: mean(image) for name, image in images.items()}
        self.var = {}
        for name, image in images.items():
            var = mean(image * image)
            var -= self.mu[name] * self.mu[name]
            self.var[name] = var
        self._flat = {}
        if exact_flat:
            self._flat = {name: constant_windows(image, window) for name, image in images.items()}
            for name, flat in self._flat.items():
                self.var[name][flat] = 0.0

    def ssim(self, x: str, y: str, c1: float, c2: float) -> np.ndarray:
        cov = self._mean(self._images[x] * self._images[y])
        cov -= self.mu[x] * self.mu[y]
        if self._flat:
            cov[self._flat[x] | self._flat[y]] = 0.0
        return ssim_map(self.mu[x], self.mu[y], self.var[x], self.var[y], cov, c1, c2)


def _saliency(var_a: np.ndarray, var_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """lambda = var_a / (var_a + var_b), with 0.5 added to both variances where both are zero
    (flat windows weigh both sources equally). Returns lambda and the adjusted variances."""
    total = var_a + var_b
    both_flat = total == 0
    if both_flat.any():
        var_a, var_b = var_a + 0.5 * both_flat, var_b + 0.5 * both_flat
        total = var_a + var_b
    return var_a / total, var_a, var_b


def _weighted_fusion_index(a: np.ndarray, b: np.ndarray, fused: np.ndarray) -> float:
    """Piella's weighted fusion quality index Q_W (8x8 windows): the mean, weighted by
    max(var_A, var_B), of lambda SSIM(F, A) + (1 - lambda) SSIM(F, B)."""
    mean = partial(box_mean_valid, size=QE_WINDOW)
    weighted, total_weight = 0.0, 0.0
    for rows in row_strips(a.shape[0], QE_WINDOW):
        moments = _Moments(mean, QE_WINDOW, {"a": a[rows], "b": b[rows], "f": fused[rows]})
        lam, var_a, var_b = _saliency(moments.var["a"], moments.var["b"])
        local = lam * moments.ssim("f", "a", QE_C, QE_C) + (1.0 - lam) * moments.ssim("f", "b", QE_C, QE_C)
        weight = np.maximum(var_a, var_b)
        weighted += (weight * local).sum()
        total_weight += weight.sum()
    return float(weighted / total_weight)


def _prewitt_magnitude(image: np.ndarray) -> np.ndarray:
    return cv2.magnitude(filter_same(image, PREWITT_X), filter_same(image, PREWITT_Y))


def qe(a: np.ndarray, b: np.ndarray, fused: np.ndarray) -> float:
    """Piella's edge-dependent fusion quality index (Liu toolbox variant, alpha = 1):
    Q_W on the images times Q_W on their Prewitt edge magnitudes. Needs 8x8 pixels."""
    a, b, fused = validate("QE", QE_WINDOW, a=a, b=b, fused=fused)
    edges = [_prewitt_magnitude(image) for image in (a, b, fused)]
    return _weighted_fusion_index(a, b, fused) * _weighted_fusion_index(*edges)


def qy(a: np.ndarray, b: np.ndarray, fused: np.ndarray) -> float:
    """Yang et al. 2008: per 7x7 Gaussian window, where SSIM(A, B) >= 0.75 the saliency-weighted
    mean lambda SSIM(A, F) + (1 - lambda) SSIM(B, F), elsewhere max(SSIM(A, F), SSIM(B, F));
    averaged over the windows. Needs 7x7 pixels."""
    a, b, fused = validate("QY", QY_WINDOW, a=a, b=b, fused=fused)
    mean = partial(gaussian_valid, size=QY_WINDOW, sigma=QY_SIGMA)
    total, count = 0.0, 0
    for rows in row_strips(a.shape[0], QY_WINDOW):
        moments = _Moments(mean, QY_WINDOW, {"a": a[rows], "b": b[rows], "f": fused[rows]}, exact_flat=True)
        similar = moments.ssim("a", "b", QY_C, QY_C) >= QY_THRESHOLD
        lam, _, _ = _saliency(moments.var["a"], moments.var["b"])
        ssim_af = moments.ssim("a", "f", QY_C, QY_C)
        ssim_bf = moments.ssim("b", "f", QY_C, QY_C)
        local = np.where(similar, lam * ssim_af + (1.0 - lam) * ssim_bf, np.maximum(ssim_af, ssim_bf))
        total += local.sum()
        count += local.size
    return float(total / count)


def psnr(fused: np.ndarray, truth: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for 8-bit levels (peak 255); ``inf`` when identical."""
    fused, truth = validate("PSNR", 1, fused=fused, truth=truth)
    mse = float(np.mean(np.square(fused - truth)))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(PEAK * PEAK / mse))


def ssim(fused: np.ndarray, truth: np.ndarray) -> float:
    """SSIM (Wang et al. 2004) as in ``ssim_index.m``: 11x11 Gaussian window (sigma 1.5),
    K = (0.01, 0.03), L = 255, mean over the windows inside the image, no down-sampling.
    1 for identical images. Needs 11x11 pixels."""
    fused, truth = validate("SSIM", SSIM_WINDOW, fused=fused, truth=truth)
    mean = partial(gaussian_valid, size=SSIM_WINDOW, sigma=SSIM_SIGMA)
    total, count = 0.0, 0
    for rows in row_strips(fused.shape[0], SSIM_WINDOW):
        local = _Moments(mean, SSIM_WINDOW, {"f": fused[rows], "t": truth[rows]}).ssim("f", "t", SSIM_C1, SSIM_C2)
        total += local.sum()
        count += local.size
    return float(total / count)
