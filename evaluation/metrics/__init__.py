"""Fusion metrics, numpy/SciPy/OpenCV only. The eight reference metrics follow the pipeline of Liu
et al. 2020 (Z. Liu's MATLAB toolbox with Y. Liu's corrections); see docs/metrics.md.

Every source-based metric is a function ``metric(a, b, fused) -> float`` on grey float64 images in
0..255 (use :func:`reference_grey` to convert as the reference pipeline does); ground-truth metrics
are ``metric(fused, truth) -> float``; no-reference ones ``metric(image) -> float``. Bad input
(wrong shape or size, NaN, values outside 0..255) raises ``mfif.errors.InputError``.
:func:`compute_metrics` takes uint8 or float images, grey or BGR, and converts them first.
"""

from __future__ import annotations

import importlib

import numpy as np

# Columns of the Liu 2020 tables, in their order. QCV: lower is better.
REFERENCE_METRICS = ("QMI", "QNCIE", "QG", "QP", "QE", "QY", "QCB", "QCV")
LOWER_IS_BETTER = frozenset({"QCV"})

# name -> "module:function" (imported on first use)
SOURCE_METRICS = {
    "QMI": "evaluation.metrics.information:qmi",
    "QNCIE": "evaluation.metrics.information:qncie",
    "QG": "evaluation.metrics.gradient:qabf",
    "QP": "evaluation.metrics.phase:qp",
    "QE": "evaluation.metrics.structural:qe",
    "QY": "evaluation.metrics.structural:qy",
    "QCB": "evaluation.metrics.perceptual:qcb",
    "QCV": "evaluation.metrics.perceptual:qcv",
    "MI": "evaluation.metrics.information:mutual_information",
}
TRUTH_METRICS = {
    "PSNR": "evaluation.metrics.structural:psnr",
    "SSIM": "evaluation.metrics.structural:ssim",
}
IMAGE_METRICS = {
    "EN": "evaluation.metrics.information:entropy",
    "SF": "evaluation.metrics.gradient:spatial_frequency",
    "AG": "evaluation.metrics.gradient:average_gradient",
    "SD": "evaluation.metrics.gradient:standard_deviation",
}


def get_metric(name: str):
    for table in (SOURCE_METRICS, TRUTH_METRICS, IMAGE_METRICS):
        if name in table:
            module, function = table[name].split(":")
            return getattr(importlib.import_module(module), function)
    known = ", ".join([*SOURCE_METRICS, *TRUTH_METRICS, *IMAGE_METRICS])
    raise KeyError(f"unknown metric {name!r}; known: {known}")


def reference_grey(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Grey float64 image in 0..255 as the reference pipeline makes it (MATLAB rgb2gray, rounded
    to uint8, for colour); ``name`` is used in error messages. See evaluation.metrics.common."""
    from evaluation.metrics.common import reference_grey as convert
    return convert(image, name)


def compute_metrics(a: np.ndarray, b: np.ndarray, fused: np.ndarray, names=REFERENCE_METRICS,
                    truth: np.ndarray | None = None) -> dict[str, float]:
    """Metrics of one fused image against its two sources (and ground truth when given), on the
    reference grey conversion. Inputs are grey or BGR images of one size, at least 11x11: uint8,
    or float in [0, 1] or 0..255 (see evaluation.metrics.common.prepare_inputs). Ground-truth
    metrics are left out when ``truth`` is None."""
    from evaluation.metrics.common import prepare_inputs

    ga, gb, gf, gt = prepare_inputs(a, b, fused, truth)
    results = {}
    for name in names:
        metric = get_metric(name)
        if name in SOURCE_METRICS:
            results[name] = float(metric(ga, gb, gf))
        elif name in TRUTH_METRICS:
            if gt is None:
                continue
            results[name] = float(metric(gf, gt))
        else:
            results[name] = float(metric(gf))
    return results
