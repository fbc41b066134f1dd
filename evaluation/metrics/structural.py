"""Structural-similarity metrics: QE (Piella and Heijmans 2003, edge-dependent fusion quality
index, Liu toolbox variant), QY (Yang et al. 2008), and against a ground truth PSNR and SSIM.

Local statistics follow Wang's ``ssim_index.m``: windows lie wholly inside the image ('valid'),
variances are E[x^2] - E[x]^2 over the window (weights summing to 1). The window maps are
computed in strips of rows (:func:`row_strips`) and summed, which keeps the temporaries small; the
sources' strips are computed once per pair (``prepare_qe``, ``prepare_qy``).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import numpy as np

from mfif.errors import InputError
from mfif.evaluation.metrics.common import (box_mean_valid, constant_windows, cv2, filter_same, gaussian_valid,
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


class _Stats(NamedTuple):
    """Local mean and variance E[x^2] - E[x]^2 of an image under a 'valid' window; ``flat``
    marks the windows in which the image is constant (None when not asked for)."""
    mu: np.ndarray
    var: np.ndarray
    flat: np.ndarray | None


def _stats(mean, image: np.ndarray, flat_window: int = 0) -> _Stats:
    """Local statistics of an image under the window filter ``mean``. With ``flat_window`` set,
    a window in which the image is constant gets exactly zero variance: E[x^2] - E[x]^2 leaves rounding noise (about 1e-11) there, which SSIM with tiny
    constants (QY) would turn into arbitrary values (see docs/metrics.md)."""
    mu = mean(image)
    var = mean(image * image)
    var -= mu * mu
    flat = None
    if flat_window:
        flat = constant_windows(image, flat_window)
        var[flat] = 0.0
    return _Stats(mu, var, flat)


def _ssim(mean, x: np.ndarray, y: np.ndarray, sx: _Stats, sy: _Stats, c1: float, c2: float) -> np.ndarray:
    """SSIM map of two images from their local statistics; the covariance is exactly zero in the
    windows where either image is flat (when flat windows are marked)."""
    cov = mean(x * y)
    cov -= sx.mu * sy.mu
    if sx.flat is not None:
        cov[sx.flat | sy.flat] = 0.0
    return ssim_map(sx.mu, sy.mu, sx.var, sy.var, cov, c1, c2)


def _saliency(var_a: np.ndarray, var_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """lambda = var_a / (var_a + var_b), with 0.5 added to both variances where both are zero
    (flat windows weigh both sources equally). Returns lambda and the adjusted variances."""
    total = var_a + var_b
    both_flat = total == 0
    if both_flat.any():
        var_a, var_b = var_a + 0.5 * both_flat, var_b + 0.5 * both_flat
        total = var_a + var_b
    return var_a / total, var_a, var_b


def _prepare_weighted_index(a: np.ndarray, b: np.ndarray):
    """Piella's weighted fusion quality index Q_W (8x8 windows) against two sources: returns
    ``index(fused)``, the mean, weighted by max(var_A, var_B), of
    lambda SSIM(F, A) + (1 - lambda) SSIM(F, B)."""
    mean = partial(box_mean_valid, size=QE_WINDOW)
    strips, total_weight = [], 0.0
    for rows in row_strips(a.shape[0], QE_WINDOW):
        sa, sb = _stats(mean, a[rows]), _stats(mean, b[rows])
        lam, var_a, var_b = _saliency(sa.var, sb.var)
        weight = np.maximum(var_a, var_b)
        total_weight += weight.sum()
        strips.append((rows, sa, sb, lam, weight))

    def index(fused: np.ndarray) -> float:
        weighted = 0.0
        for rows, sa, sb, lam, weight in strips:
            f = fused[rows]
            sf = _stats(mean, f)
            ssim_fa = _ssim(mean, f, a[rows], sf, sa, QE_C, QE_C)
            ssim_fb = _ssim(mean, f, b[rows], sf, sb, QE_C, QE_C)
            weighted += (weight * (lam * ssim_fa + (1.0 - lam) * ssim_fb)).sum()
        return float(weighted / total_weight)

    return index


def _prewitt_magnitude(image: np.ndarray) -> np.ndarray:
    return cv2.magnitude(filter_same(image, PREWITT_X), filter_same(image, PREWITT_Y))


def prepare_qe(a: np.ndarray, b: np.ndarray):
    """QE against these two sources: returns ``score(fused) -> float`` (see :func:`qe`); the
    sources' edges and local statistics are computed once."""
    a, b = validate("QE", QE_WINDOW, a=a, b=b)
    shapes = {"a": a.shape, "b": b.shape}
    on_images = _prepare_weighted_index(a, b)
    on_edges = _prepare_weighted_index(_prewitt_magnitude(a), _prewitt_magnitude(b))

    def score(fused: np.ndarray) -> float:
        (fused,) = validate("QE", QE_WINDOW, shapes, fused=fused)
        return on_images(fused) * on_edges(_prewitt_magnitude(fused))

    return score


def qe(a: np.ndarray, b: np.ndarray, fused: np.ndarray) -> float:
    """Piella's edge-dependent fusion quality index (Liu toolbox variant, alpha = 1):
    Q_W on the images times Q_W on their Prewitt edge magnitudes. Needs 8x8 pixels."""
    return prepare_qe(a, b)(fused)


def prepare_qy(a: np.ndarray, b: np.ndarray):
    """QY against these two sources: returns ``score(fused) -> float`` (see :func:`qy`); the
    sources' statistics, SSIM(A, B) and saliency are computed once."""
    a, b = validate("QY", QY_WINDOW, a=a, b=b)
    shapes = {"a": a.shape, "b": b.shape}
    mean = partial(gaussian_valid, size=QY_WINDOW, sigma=QY_SIGMA)
    strips = []
    for rows in row_strips(a.shape[0], QY_WINDOW):
        sa, sb = _stats(mean, a[rows], QY_WINDOW), _stats(mean, b[rows], QY_WINDOW)
        similar = _ssim(mean, a[rows], b[rows], sa, sb, QY_C, QY_C) >= QY_THRESHOLD
        strips.append((rows, sa, sb, similar, _saliency(sa.var, sb.var)[0]))
    count = sum(similar.size for *_, similar, _ in strips)

    def score(fused: np.ndarray) -> float:
        (fused,) = validate("QY", QY_WINDOW, shapes, fused=fused)
        total = 0.0
        for rows, sa, sb, similar, lam in strips:
            f = fused[rows]
            sf = _stats(mean, f, QY_WINDOW)
            ssim_af = _ssim(mean, a[rows], f, sa, sf, QY_C, QY_C)
            ssim_bf = _ssim(mean, b[rows], f, sb, sf, QY_C, QY_C)
            weighted = lam * ssim_af + (1.0 - lam) * ssim_bf
            total += np.where(similar, weighted, np.maximum(ssim_af, ssim_bf)).sum()
        return float(total / count)

    return score


def qy(a: np.ndarray, b: np.ndarray, fused: np.ndarray) -> float:
    """Yang et al. 2008: per 7x7 Gaussian window, where SSIM(A, B) >= 0.75 the saliency-weighted
    mean lambda SSIM(A, F) + (1 - lambda) SSIM(B, F), elsewhere max(SSIM(A, F), SSIM(B, F));
    averaged over the windows. Windows in which an image is constant count with exactly zero
    variance (see docs/metrics.md). Needs 7x7 pixels."""
    return prepare_qy(a, b)(fused)


def psnr(fused: np.ndarray, truth: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for 8-bit levels (peak 255); ``inf`` when identical."""
    fused, truth = validate("PSNR", 1, fused=fused, truth=truth)
    mse = float(np.mean(np.square(fused - truth)))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(PEAK * PEAK / mse))


# Half-width in pixels of the band around focus-region borders that ``band_psnr`` scores: where
# halos show (a blurred source spilling over a sharp edge, or a weight map that misses the border).
BAND_RADIUS = 10


def boundary_band(regions: np.ndarray, radius: int = BAND_RADIUS) -> np.ndarray:
    """The pixels (bool HxW) within ``radius`` pixels of a border between focus regions:
    ``regions`` is a label map (HxW integers) or a partition (K, H, W) of soft or hard regions
    (each pixel labelled by its largest share). A pixel is in the band when its disk of that radius
    holds two labels."""
    regions = np.asarray(regions)
    labels = regions.argmax(axis=0) if regions.ndim == 3 else regions
    if labels.ndim != 2:
        raise InputError(f"boundary_band takes a label map HxW or regions KxHxW, not shape {regions.shape}")
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    band = np.zeros(labels.shape, bool)
    for label in np.unique(labels):
        inside = (labels == label).astype(np.uint8)
        band |= (cv2.dilate(inside, kernel) > 0) & (cv2.dilate(1 - inside, kernel) > 0)
    return band


def band_psnr(fused: np.ndarray, truth: np.ndarray, band: np.ndarray) -> float:
    """PSNR (8-bit levels, peak 255) over the pixels of ``band`` (bool HxW, e.g. :func:`boundary_band`
    of the focus regions): the halo metric, the error near focus borders that a whole-image PSNR
    dilutes. ``inf`` when identical there; an empty band is an InputError."""
    fused, truth = validate("BandPSNR", 1, fused=fused, truth=truth)
    band = np.asarray(band, bool)
    if band.shape != fused.shape:
        raise InputError(f"BandPSNR: the band is {band.shape}, the images {fused.shape}: make it for their size")
    if not band.any():
        raise InputError("BandPSNR: the band is empty (no border between focus regions)")
    mse = float(np.mean(np.square(fused[band] - truth[band])))
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
        f, t = fused[rows], truth[rows]
        local = _ssim(mean, f, t, _stats(mean, f), _stats(mean, t), SSIM_C1, SSIM_C2)
        total += local.sum()
        count += local.size
    return float(total / count)
