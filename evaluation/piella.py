"""Piella and Heijmans' fusion quality indices Q and Qw (ICIP 2003), as the seed paper (Xu et al.
2018) reports them; their edge-dependent Qe is the metrics package's QE.

Both build on Wang and Bovik's universal image quality index Q0 over 8x8 sliding windows (only
windows inside the image). In each window w the saliency of a source is its variance s; with
lambda = s(A) / (s(A) + s(B)) (1/2 where both are 0):

    Q  = mean over w of  lambda Q0(A, F | w) + (1 - lambda) Q0(B, F | w)
    Qw = sum over w of  c(w) [lambda Q0(A, F | w) + (1 - lambda) Q0(B, F | w)],
         c(w) = max(s(A), s(B)) / sum over w of max(s(A), s(B))   (uniform where all are 0)

Flat windows follow Wang's ``img_qi.m`` conventions: both variances 0 gives the mean term alone,
both means 0 as well gives 1. Inputs are grey float images in 0..255 of one size, at least 8x8
(use :func:`evaluation.metrics.reference_grey`).
"""

from __future__ import annotations

import numpy as np

from mfif.evaluation.metrics.common import box_mean_valid, validate

WINDOW = 8


def _q0_map(mu_x, mu_y, var_x, var_y, cov) -> np.ndarray:
    """Wang and Bovik's Q0 per window, defined for flat windows."""
    mean_term = mu_x * mu_x + mu_y * mu_y
    var_term = var_x + var_y
    both = (mean_term > 0) & (var_term > 0)
    q = np.ones_like(mu_x)
    q[both] = 4.0 * cov[both] * mu_x[both] * mu_y[both] / (mean_term[both] * var_term[both])
    flat = (var_term <= 0) & (mean_term > 0)
    q[flat] = 2.0 * mu_x[flat] * mu_y[flat] / mean_term[flat]
    dark = (mean_term <= 0) & (var_term > 0)
    q[dark] = 2.0 * cov[dark] / var_term[dark]
    return q


def _terms(a: np.ndarray, b: np.ndarray, fused: np.ndarray, metric: str):
    a, b, fused = validate(metric, WINDOW, A=a, B=b, fused=fused)
    mu_a, mu_b, mu_f = (box_mean_valid(x, WINDOW) for x in (a, b, fused))
    var_a, var_b, var_f = (box_mean_valid(x * x, WINDOW) - m * m for x, m in ((a, mu_a), (b, mu_b), (fused, mu_f)))
    cov_af = box_mean_valid(a * fused, WINDOW) - mu_a * mu_f
    cov_bf = box_mean_valid(b * fused, WINDOW) - mu_b * mu_f
    # Flat windows give variances of round-off size (even slightly negative): make them 0.
    var_a, var_b, var_f = (np.where(v < 1e-6, 0.0, v) for v in (var_a, var_b, var_f))
    q_af = _q0_map(mu_a, mu_f, var_a, var_f, cov_af)
    q_bf = _q0_map(mu_b, mu_f, var_b, var_f, cov_bf)
    total = var_a + var_b
    lam = np.where(total > 0, var_a / np.where(total > 0, total, 1.0), 0.5)
    return lam * q_af + (1.0 - lam) * q_bf, np.maximum(var_a, var_b)


def piella_q(a: np.ndarray, b: np.ndarray, fused: np.ndarray) -> float:
    """Piella's fusion quality index Q (higher is better, 1 at most)."""
    local, _ = _terms(a, b, fused, "Piella Q")
    return float(local.mean())


def piella_qw(a: np.ndarray, b: np.ndarray, fused: np.ndarray) -> float:
    """Piella's weighted fusion quality index Qw (higher is better, 1 at most)."""
    local, salience = _terms(a, b, fused, "Piella Qw")
    total = salience.sum()
    if total <= 0:
        return float(local.mean())
    return float((local * salience).sum() / total)
