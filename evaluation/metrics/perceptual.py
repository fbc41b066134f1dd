"""Human-perception fusion metrics of the reference pipeline: QCB (Chen and Blum 2009) and QCV
(Chen and Varshney 2007, lower is better).

Both first stretch each image to 0..255 and round (Z. Liu's ``normalize1``), then filter with a
contrast sensitivity function (CSF) in the frequency domain at the image's own FFT size. The CSF
radius is measured in integer frequency indices (cycles per image) divided by a constant: 15 for
QCB, 4 for QCV (the toolbox's ``freqspace`` grid scaled by size/30 and size/8).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

# QCB: CSF of the difference-of-Gaussians form, local band-limited contrast and masking.
QCB_F0, QCB_F1, QCB_A = 15.3870, 1.3456, 0.7622
QCB_CSF_SCALE = 15.0
QCB_P, QCB_Q, QCB_Z = 3.0, 2.0, 1e-4
QCB_SIGMAS = (2.0, 4.0)
QCB_HALF_WIDTH = 15  # the Gaussians are sampled on -15..15, not renormalised

# QCV: Mannos-Sakrison CSF, 16x16 regions, saliency = sum of Sobel magnitude ** 5.
QCV_CSF_SCALE = 4.0
QCV_BLOCK = 16
QCV_ALPHA = 5


def normalize_255(image: np.ndarray) -> np.ndarray:
    """Stretch to 0..255 and round half away from zero, as the toolbox's normalize1 does."""
    low, high = image.min(), image.max()
    if low == high:
        return image.copy()
    return np.floor((image - low) / (high - low) * 255 + 0.5)


def _radius(rows: int, cols: int, scale: float) -> np.ndarray:
    """Radial frequency of an rfft2 grid in integer cycles per image, divided by ``scale``."""
    ky = np.fft.fftfreq(rows, 1.0 / rows)
    kx = np.fft.rfftfreq(cols, 1.0 / cols)
    if cols % 2 == 0:
        kx[-1] = -kx[-1]  # the reference grid holds the Nyquist column as -cols/2 (same radius)
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


def _gaussian_1d(sigma: float) -> np.ndarray:
    x = np.arange(-QCB_HALF_WIDTH, QCB_HALF_WIDTH + 1)
    return np.exp(-(x**2) / (2 * sigma**2))


def _gaussian_blur(stack: np.ndarray, sigma: float) -> np.ndarray:
    """filter2 with exp(-(x^2+y^2)/(2 sigma^2)) / (2 pi sigma^2) on -15..15, zero padding."""
    g = _gaussian_1d(sigma)
    out = ndimage.correlate1d(stack, g, axis=-1, mode="constant")
    out = ndimage.correlate1d(out, g, axis=-2, mode="constant")
    return out / (2 * np.pi * sigma**2)


def qcb(a: np.ndarray, b: np.ndarray, fused: np.ndarray) -> float:
    """Chen-Blum 2009 metric QCB (higher is better, at most 1)."""
    stack = np.stack([normalize_255(x) for x in (a, b, fused)])
    rows, cols = stack.shape[-2:]
    filtered = _csf_filter(stack, _qcb_csf(rows, cols))
    narrow = _gaussian_blur(filtered, QCB_SIGMAS[0])
    wide = _gaussian_blur(filtered, QCB_SIGMAS[1])
    contrast = np.abs(narrow / wide - 1)
    masked = contrast**QCB_P / (contrast**QCB_Q + QCB_Z)
    c1, c2, cf = masked
    q1f = np.where(c1 < cf, c1 / cf, cf / c1)
    q2f = np.where(c2 < cf, c2 / cf, cf / c2)
    w1, w2 = c1**2, c2**2
    quality = (w1 * q1f + w2 * q2f) / (w1 + w2)
    return float(quality.mean())


def _sobel_magnitude(image: np.ndarray) -> np.ndarray:
    """Magnitude of MATLAB filter2 with the Sobel kernels, zero padding."""
    p = np.pad(image, 1)
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    return np.sqrt(gx * gx + gy * gy)


def _block_sums(stack: np.ndarray, block: int) -> np.ndarray:
    """Sums over block x block tiles; partial tiles at the right and bottom count as zero-padded."""
    rows, cols = stack.shape[-2:]
    pad_r, pad_c = -rows % block, -cols % block
    padded = np.pad(stack, [(0, 0)] * (stack.ndim - 2) + [(0, pad_r), (0, pad_c)])
    shape = stack.shape[:-2] + ((rows + pad_r) // block, block, (cols + pad_c) // block, block)
    return padded.reshape(shape).sum(axis=(-3, -1))


def qcv(a: np.ndarray, b: np.ndarray, fused: np.ndarray) -> float:
    """Chen-Varshney 2007 metric QCV (lower is better, 0 when the fused image equals both
    sources)."""
    na, nb, nf = (normalize_255(x) for x in (a, b, fused))
    saliency = _block_sums(np.stack([_sobel_magnitude(na), _sobel_magnitude(nb)]) ** QCV_ALPHA, QCV_BLOCK)
    rows, cols = na.shape
    diff = _csf_filter(np.stack([na - nf, nb - nf]), _qcv_csf(rows, cols))
    distortion = _block_sums(diff**2, QCV_BLOCK) / QCV_BLOCK**2
    return float(np.sum(saliency * distortion) / np.sum(saliency))
