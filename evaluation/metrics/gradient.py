"""Gradient metrics: QG (Qabf, Xydeas and Petrovic 2000) and the no-reference measures SF
(spatial frequency), AG (average gradient) and SD (standard deviation)."""

from __future__ import annotations

import numpy as np

from mfif.evaluation.metrics.common import cv2, filter_same, row_strips, validate

SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
SOBEL_Y = SOBEL_X.T.copy()

# Sigmoids of edge strength (g) and orientation (a) preservation, as in Liu 2020's toolbox.
GAMMA_G, KAPPA_G, SIGMA_G = 0.9994, -15.0, 0.5
GAMMA_A, KAPPA_A, SIGMA_A = 0.9879, -22.0, 0.8
# Stand-in for a zero gradient component or magnitude (avoids 0/0, as the reference does).
TINY = 1e-5


def _strength_and_angle(padded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel gradient magnitude (zeros -> TINY) and orientation arctan(gy / gx) (gx == 0 -> TINY)
    of the inner pixels of an image padded by one pixel."""
    gx = np.ascontiguousarray(filter_same(padded, SOBEL_X)[1:-1, 1:-1])
    gy = np.ascontiguousarray(filter_same(padded, SOBEL_Y)[1:-1, 1:-1])
    strength = cv2.magnitude(gx, gy)
    strength[strength == 0] = TINY
    gx[gx == 0] = TINY
    angle = np.arctan(np.divide(gy, gx, out=gy), out=gy)
    return strength, angle


def _sigmoid(x: np.ndarray, gamma: float, kappa: float, sigma: float) -> np.ndarray:
    """gamma / (1 + exp(kappa (x - sigma))), computed in place on x."""
    x -= sigma
    x *= kappa
    np.exp(x, out=x)
    x += 1.0
    return np.divide(gamma, x, out=x)


def _edge_preservation(source_g, source_a, fused_g, fused_a) -> np.ndarray:
    """Q^{SF} per pixel: strength preservation min/max of the magnitudes, orientation
    preservation 1 - |alpha_S - alpha_F| / (pi / 2), each through its sigmoid, multiplied."""
    strength = np.minimum(source_g, fused_g)
    strength /= np.maximum(source_g, fused_g)
    orientation = np.subtract(source_a, fused_a)
    np.abs(orientation, out=orientation)
    orientation *= -2.0 / np.pi
    orientation += 1.0
    quality = _sigmoid(strength, GAMMA_G, KAPPA_G, SIGMA_G)
    quality *= _sigmoid(orientation, GAMMA_A, KAPPA_A, SIGMA_A)
    return quality


def _padded(image: np.ndarray) -> np.ndarray:
    return cv2.copyMakeBorder(image, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)


def prepare_qabf(a: np.ndarray, b: np.ndarray):
    """QG against these two sources: returns ``score(fused) -> float`` (see :func:`qabf`); the
    sources' gradients are computed once."""
    a, b = validate("QG", 1, a=a, b=b)
    shapes = {"a": a.shape, "b": b.shape}
    # Sobel with zero padding, in strips of rows (small temporaries) of the zero-padded images
    padded_a, padded_b = _padded(a), _padded(b)
    strips, total = [], 0.0
    for rows in row_strips(a.shape[0] + 2, 3):
        (g_a, a_a), (g_b, a_b) = _strength_and_angle(padded_a[rows]), _strength_and_angle(padded_b[rows])
        total += g_a.sum() + g_b.sum()
        strips.append((rows, g_a, a_a, g_b, a_b))

    def score(fused: np.ndarray) -> float:
        (fused,) = validate("QG", 1, shapes, fused=fused)
        padded = _padded(fused)
        preserved = 0.0
        for rows, g_a, a_a, g_b, a_b in strips:
            g_f, a_f = _strength_and_angle(padded[rows])
            preserved += (_edge_preservation(g_a, a_a, g_f, a_f) * g_a).sum()
            preserved += (_edge_preservation(g_b, a_b, g_f, a_f) * g_b).sum()
        return float(preserved / total)

    return score


def qabf(a: np.ndarray, b: np.ndarray, fused: np.ndarray) -> float:
    """QG / Qabf in [0, 1): edge information of A and B preserved in F, weighted by the source
    gradient magnitudes. Zero gradient magnitudes count as TINY, so constant images give a
    defined value (F == A == B, constant or not: 0.9748, the top of both sigmoids)."""
    return prepare_qabf(a, b)(fused)


def spatial_frequency(image: np.ndarray) -> float:
    """SF = sqrt(RF^2 + CF^2) (Eskicioglu and Fisher 1995): RF, CF the root of the summed squared
    differences of horizontal / vertical neighbours divided by the pixel count M*N."""
    (image,) = validate("SF", 1, image=image)
    rows = np.square(np.diff(image, axis=1)).sum()
    cols = np.square(np.diff(image, axis=0)).sum()
    return float(np.sqrt((rows + cols) / image.size))


def average_gradient(image: np.ndarray) -> float:
    """AG: mean of sqrt((dx^2 + dy^2) / 2) over the (M-1)x(N-1) forward differences."""
    (image,) = validate("AG", 2, image=image)
    dx = np.diff(image, axis=1)[:-1, :]
    dy = np.diff(image, axis=0)[:, :-1]
    return float(np.sqrt((dx * dx + dy * dy) / 2.0).mean())


def standard_deviation(image: np.ndarray) -> float:
    """SD: population standard deviation of the grey levels."""
    (image,) = validate("SD", 1, image=image)
    return float(image.std())
