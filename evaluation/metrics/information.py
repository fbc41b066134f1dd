"""Information-theory metrics: QMI (Hossny et al. 2008), QNCIE (Wang et al. 2005), plain mutual
information MI and entropy EN.

All use 256-bin (joint) histograms of integer grey levels and base-2 logarithms, with
0 log 0 = 0. QMI and QNCIE first stretch each image to the full 0..255 range and round (as the
reference toolbox's ``normalize1`` does; a constant image becomes all zeros); MI and EN bin the
grey levels as they are (rounded to integers).
"""

from __future__ import annotations

import numpy as np

from mfif.evaluation.metrics.common import stretch_levels, validate

LEVELS = 256


def _round_levels(image: np.ndarray) -> np.ndarray:
    """Integer grey levels 0..255 (halves rounded up, as MATLAB rounds non-negative values)."""
    return np.floor(image + 0.5).astype(np.intp)


def _stretched_levels(image: np.ndarray) -> np.ndarray:
    """Integer levels of the reference ``normalize1`` (:func:`stretch_levels`)."""
    return stretch_levels(image).astype(np.intp)


def _entropy(probabilities: np.ndarray) -> float:
    p = probabilities[probabilities > 0]
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: no -0.0 for a single level


def _entropies(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """H(X), H(Y) and H(X, Y) in bits of two level images, from their 256x256 joint histogram."""
    joint = np.bincount((x * LEVELS + y).ravel(), minlength=LEVELS * LEVELS).astype(np.float64)
    joint = joint.reshape(LEVELS, LEVELS) / x.size
    return _entropy(joint.sum(axis=1)), _entropy(joint.sum(axis=0)), _entropy(joint)


def prepare_qmi(a: np.ndarray, b: np.ndarray):
    """QMI against these two sources: returns ``score(fused) -> float`` (see :func:`qmi`); the
    sources' levels are computed once."""
    a, b = validate("QMI", 1, a=a, b=b)
    sources = [_stretched_levels(source) for source in (a, b)]
    shapes = {"a": a.shape, "b": b.shape}

    def score(fused: np.ndarray) -> float:
        (fused,) = validate("QMI", 1, shapes, fused=fused)
        f = _stretched_levels(fused)
        total = 0.0
        for source in sources:
            h_s, h_f, h_sf = _entropies(source, f)
            if h_s + h_f > 0:
                total += (h_s + h_f - h_sf) / (h_s + h_f)
        return 2.0 * total

    return score


def qmi(a: np.ndarray, b: np.ndarray, fused: np.ndarray) -> float:
    """Normalized mutual information (Hossny et al. 2008):
    2 [MI(A,F) / (H(A) + H(F)) + MI(B,F) / (H(B) + H(F))], in [0, 2].
    A term whose two entropies are both zero (source and fused image constant) counts 0."""
    return prepare_qmi(a, b)(fused)


def _nonlinear_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Nonlinear correlation coefficient: mutual information with base-256 logarithms."""
    h_x, h_y, h_xy = _entropies(x, y)
    return (h_x + h_y - h_xy) / np.log2(LEVELS)


def prepare_qncie(a: np.ndarray, b: np.ndarray):
    """QNCIE against these two sources: returns ``score(fused) -> float`` (see :func:`qncie`);
    the sources' levels and their correlation are computed once."""
    a, b = validate("QNCIE", 1, a=a, b=b)
    x, y = _stretched_levels(a), _stretched_levels(b)
    r_xy = _nonlinear_correlation(x, y)
    shapes = {"a": a.shape, "b": b.shape}

    def score(fused: np.ndarray) -> float:
        (fused,) = validate("QNCIE", 1, shapes, fused=fused)
        f = _stretched_levels(fused)
        r_xf, r_yf = _nonlinear_correlation(x, f), _nonlinear_correlation(y, f)
        matrix = np.array([[1.0, r_xy, r_xf], [r_xy, 1.0, r_yf], [r_xf, r_yf, 1.0]])
        share = np.clip(np.linalg.eigvalsh(matrix), 0.0, None) / 3.0
        share = share[share > 0]
        entropy = -(share * np.log2(share)).sum() / np.log2(LEVELS)
        return float(1.0 - entropy)

    return score


def qncie(a: np.ndarray, b: np.ndarray, fused: np.ndarray) -> float:
    """Nonlinear correlation information entropy (Wang et al. 2005), in [0, 1]: 1 minus the
    entropy (base 256, normalized by 3) of the eigenvalues of the 3x3 nonlinear correlation
    matrix of (A, B, F)."""
    return prepare_qncie(a, b)(fused)


def mutual_information(a: np.ndarray, b: np.ndarray, fused: np.ndarray) -> float:
    """MI(A, F) + MI(B, F) in bits, from 256-bin joint histograms of the grey levels."""
    a, b, fused = validate("MI", 1, a=a, b=b, fused=fused)
    f = _round_levels(fused)
    total = 0.0
    for source in (a, b):
        h_s, h_f, h_sf = _entropies(_round_levels(source), f)
        total += h_s + h_f - h_sf
    return total


def entropy(image: np.ndarray) -> float:
    """Shannon entropy EN in bits of the 256-bin grey-level histogram, in [0, 8]."""
    (image,) = validate("EN", 1, image=image)
    counts = np.bincount(_round_levels(image).ravel(), minlength=LEVELS)
    return _entropy(counts / image.size)
