"""Human-perception fusion metrics of the reference pipeline: QCB (Chen and Blum 2009) and QCV
(Chen and Varshney 2007, lower is better).

Both first stretch each image to 0..255 and round (Z. Liu's ``normalize1``,
:func:`evaluation.metrics.common.stretch_levels`), then filter with a
contrast sensitivity function (CSF) in the frequency domain at the image's own FFT size. The CSF
radius is measured in integer frequency indices (cycles per image) divided by a constant: 15 for
QCB, 4 for QCV (the toolbox's ``freqspace`` grid scaled by size/30 and size/8).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import fft as sfft

from mfif.evaluation.metrics.common import MIN_SIZE, cv2, filter_same, stretch_levels, validate
from mfif.evaluation.metrics.gradient import SOBEL_X, SOBEL_Y

# QCB: CSF of the difference-of-Gaussians form, local band-limited contrast and masking.
QCB_F0, QCB_F1, QCB_A = 15.3870, 1.3456, 0.7622
QCB_CSF_SCALE = 15.0
QCB_P, QCB_Q, QCB_Z = 3.0, 2.0, 1e-4
QCB_SIGMAS = (2.0, 4.0)
QCB_HALF_WIDTH = 15  # the Gaussians are sampled on -15..15 and not renormalised

# QCV: Mannos-Sakrison CSF, 16x16 regions, saliency = sum of Sobel magnitude ** 5.
QCV_CSF_SCALE = 4.0
QCV_BLOCK = 16
QCV_ALPHA = 5


def _radius(rows: int, cols: int, scale: float) -> np.ndarray:
    """Radial frequency of an rfft2 grid in integer cycles per image, divided by ``scale``."""
    ky = np.fft.fftfreq(rows, 1.0 / rows)
    kx = np.fft.rfftfreq(cols, 1.0 / cols)
    return np.sqrt(kx[None, :] ** 2 + ky[:, None] ** 2) / scale


@lru_cache(maxsize=8)
def _qcb_csf(rows: int, cols: int) -> np.ndarray:
    r = _radius(rows, cols, QCB_CSF_SCALE)
    return np.exp(-((r / QCB_F0) ** 2)) - QCB_A * np.exp(-((r / QCB_F1) ** 2))


@lru_cache(maxsize=8)
def _qcv_csf(rows: int, cols: int) -> np.ndarray:
    r = _radius(rows, cols, QCV_CSF_SCALE)
    return 2.6 * (0.0192 + 0.144 * r) * np.exp(-((0.144 * r) ** 1.1))


def _csf_filter(stack: np.ndarray, csf: np.ndarray) -> np.ndarray:
    """Filter each image of a stack with a real, even frequency response (circular, as FFT)."""
    rows, cols = stack.shape[-2:]
    spectrum = sfft.rfft2(stack, axes=(-2, -1), workers=-1)
    return sfft.irfft2(spectrum * csf, s=(rows, cols), axes=(-2, -1), workers=-1)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """filter2 with exp(-(x^2+y^2)/(2 sigma^2)) / (2 pi sigma^2) sampled on -15..15 (not
    renormalised), zero padding."""
    x = np.arange(-QCB_HALF_WIDTH, QCB_HALF_WIDTH + 1)
    g = np.exp(-(x**2) / (2 * sigma**2)) / np.sqrt(2 * np.pi * sigma**2)
    return cv2.sepFilter2D(image, cv2.CV_64F, g, g, borderType=cv2.BORDER_CONSTANT)


def _masked_contrast(image: np.ndarray) -> np.ndarray:
    """Band-limited local contrast |G2 * I / G4 * I - 1| through the masking function
    C^p / (C^q + Z); 0 where the wide Gaussian sees only zeros."""
    narrow = _gaussian_blur(image, QCB_SIGMAS[0])
    wide = _gaussian_blur(image, QCB_SIGMAS[1])
    contrast = np.abs(np.divide(narrow, wide, out=np.ones_like(wide), where=wide != 0) - 1)
    return contrast**QCB_P / (contrast**QCB_Q + QCB_Z)


def _preservation(source: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """min/max of two masked contrasts; 1 where both are 0."""
    high = np.maximum(source, fused)
    return np.divide(np.minimum(source, fused), high, out=np.ones_like(high), where=high > 0)


def prepare_qcb(a: np.ndarray, b: np.ndarray):
    """QCB against these two sources: returns ``score(fused) -> float`` (see :func:`qcb`); the
    sources' masked contrasts and weights are computed once."""
    a, b = validate("QCB", MIN_SIZE, a=a, b=b)
    shapes = {"a": a.shape, "b": b.shape}
    csf = _qcb_csf(*a.shape)
    c1, c2 = (_masked_contrast(x) for x in _csf_filter(np.stack([stretch_levels(a), stretch_levels(b)]), csf))
    w1, w2 = c1**2, c2**2
    total = w1 + w2
    lam1 = np.divide(w1, total, out=np.full_like(total, 0.5), where=total > 0)

    def score(fused: np.ndarray) -> float:
        (fused,) = validate("QCB", MIN_SIZE, shapes, fused=fused)
        cf = _masked_contrast(_csf_filter(stretch_levels(fused), csf))
        quality = lam1 * _preservation(c1, cf) + (1 - lam1) * _preservation(c2, cf)
        return float(quality.mean())

    return score


def qcb(a: np.ndarray, b: np.ndarray, fused: np.ndarray) -> float:
    """Chen-Blum 2009 metric QCB in [0, 1] (higher is better, 1 when the fused image equals both
    sources): contrast preservation of each source in the fused image after CSF filtering,
    weighted per pixel by the squared source contrasts (equal weights where both are 0).

    A constant image counts as all zeros (zero contrast): constant sources and a constant fused
    image give 1.0, constant sources and a textured fused image 0.0. Raises InputError for images
    smaller than 11x11, of different sizes or outside 0..255."""
    return prepare_qcb(a, b)(fused)


def _sobel_magnitude(image: np.ndarray) -> np.ndarray:
    """Magnitude of MATLAB filter2 with the Sobel kernels, zero padding."""
    return cv2.magnitude(filter_same(image, SOBEL_X), filter_same(image, SOBEL_Y))


def _block_sums(stack: np.ndarray, block: int) -> np.ndarray:
    """Sums over block x block tiles; partial tiles at the right and bottom count as zero-padded."""
    rows, cols = stack.shape[-2:]
    pad_r, pad_c = -rows % block, -cols % block
    padded = np.pad(stack, [(0, 0)] * (stack.ndim - 2) + [(0, pad_r), (0, pad_c)])
    shape = stack.shape[:-2] + ((rows + pad_r) // block, block, (cols + pad_c) // block, block)
    return padded.reshape(shape).sum(axis=(-3, -1))


def prepare_qcv(a: np.ndarray, b: np.ndarray):
    """QCV against these two sources: returns ``score(fused) -> float`` (see :func:`qcv`); the
    sources' levels and region saliencies are computed once."""
    a, b = validate("QCV", MIN_SIZE, a=a, b=b)
    shapes = {"a": a.shape, "b": b.shape}
    na, nb = stretch_levels(a), stretch_levels(b)
    saliency = _block_sums(np.stack([_sobel_magnitude(na), _sobel_magnitude(nb)]) ** QCV_ALPHA, QCV_BLOCK)
    total = saliency.sum()
    csf = _qcv_csf(*a.shape)

    def score(fused: np.ndarray) -> float:
        (fused,) = validate("QCV", MIN_SIZE, shapes, fused=fused)
        nf = stretch_levels(fused)
        diff = _csf_filter(np.stack([na - nf, nb - nf]), csf)
        distortion = _block_sums(diff**2, QCV_BLOCK) / QCV_BLOCK**2
        if total == 0:
            return float(distortion.mean())
        return float(np.sum(saliency * distortion) / total)

    return score


def qcv(a: np.ndarray, b: np.ndarray, fused: np.ndarray) -> float:
    """Chen-Varshney 2007 metric QCV (lower is better; 0 when the fused image equals both
    sources): the mean squared CSF-filtered difference between each source and the fused image
    over 16x16 regions (partial regions at the right and bottom are zero-padded), weighted by the
    region saliency (sum of the source's Sobel magnitude ** 5).

    A constant image counts as all zeros; when neither source has any gradient (both constant)
    every region weighs the same. Raises InputError for images smaller than 11x11, of different
    sizes or outside 0..255."""
    return prepare_qcv(a, b)(fused)
