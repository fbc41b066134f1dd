"""Fusion metrics, numpy/SciPy/OpenCV only. The eight reference metrics follow the pipeline of Liu
et al. 2020 (Z. Liu's MATLAB toolbox with Y. Liu's corrections); see docs/metrics.md.

Every source-based metric is a function ``metric(a, b, fused) -> float`` on grey float64 images in
0..255 (use :func:`reference_grey` to convert as the reference pipeline does); ground-truth metrics
are ``metric(fused, truth) -> float``; no-reference ones ``metric(image) -> float``. Bad input
(wrong shape or size, NaN, values outside 0..255) raises ``mfif.errors.InputError``.
:func:`compute_metrics` takes uint8 or float images, grey or BGR, and converts them first;
:class:`PairScorer` does the same for many fused images of one source pair, doing each metric's
source-only work once (through the ``prepare_*`` functions of PREPARED_METRICS).
"""

from __future__ import annotations

import importlib
from functools import partial

import numpy as np

# Columns of the Liu 2020 tables, in their order. QCV: lower is better.
REFERENCE_METRICS = ("QMI", "QNCIE", "QG", "QP", "QE", "QY", "QCB", "QCV")
LOWER_IS_BETTER = frozenset({"QCV"})

# name -> "module:function" (imported on first use)
SOURCE_METRICS = {
    "QMI": "mfif.evaluation.metrics.information:qmi",
    "QNCIE": "mfif.evaluation.metrics.information:qncie",
    "QG": "mfif.evaluation.metrics.gradient:qabf",
    "QP": "mfif.evaluation.metrics.phase:qp",
    "QE": "mfif.evaluation.metrics.structural:qe",
    "QY": "mfif.evaluation.metrics.structural:qy",
    "QCB": "mfif.evaluation.metrics.perceptual:qcb",
    "QCV": "mfif.evaluation.metrics.perceptual:qcv",
    "MI": "mfif.evaluation.metrics.information:mutual_information",
}
TRUTH_METRICS = {
    "PSNR": "mfif.evaluation.metrics.structural:psnr",
    "SSIM": "mfif.evaluation.metrics.structural:ssim",
}
IMAGE_METRICS = {
    "EN": "mfif.evaluation.metrics.information:entropy",
    "SF": "mfif.evaluation.metrics.gradient:spatial_frequency",
    "AG": "mfif.evaluation.metrics.gradient:average_gradient",
    "SD": "mfif.evaluation.metrics.gradient:standard_deviation",
}


# name -> "module:function" taking the two grey sources and returning ``score(fused) -> float``
# of that source metric: work that depends only on the sources is done once (see PairScorer).
# ``score`` keeps the sources it was given: do not change them in place while using it.
PREPARED_METRICS = {
    "QMI": "mfif.evaluation.metrics.information:prepare_qmi",
    "QNCIE": "mfif.evaluation.metrics.information:prepare_qncie",
    "QG": "mfif.evaluation.metrics.gradient:prepare_qabf",
    "QP": "mfif.evaluation.metrics.phase:prepare_qp",
    "QE": "mfif.evaluation.metrics.structural:prepare_qe",
    "QY": "mfif.evaluation.metrics.structural:prepare_qy",
    "QCB": "mfif.evaluation.metrics.perceptual:prepare_qcb",
    "QCV": "mfif.evaluation.metrics.perceptual:prepare_qcv",
}


def _load(target: str):
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def get_metric(name: str):
    for table in (SOURCE_METRICS, TRUTH_METRICS, IMAGE_METRICS):
        if name in table:
            return _load(table[name])
    known = ", ".join([*SOURCE_METRICS, *TRUTH_METRICS, *IMAGE_METRICS])
    raise KeyError(f"unknown metric {name!r}; known: {known}")


def reference_grey(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Grey float64 image in 0..255 as the reference pipeline makes it (MATLAB rgb2gray, rounded
    to uint8, for colour); ``name`` is used in error messages. See evaluation.metrics.common."""
    from mfif.evaluation.metrics.common import reference_grey as convert
    return convert(image, name)


class PairScorer:
    """Scores any number of fused images of one source pair: the sources are converted once and
    each source metric's source-only work (features, local statistics) is done once.

    ``PairScorer(a, b, names).score(fused, truth=None)`` returns what
    ``compute_metrics(a, b, fused, names, truth)`` returns, for the same inputs."""

    def __init__(self, a: np.ndarray, b: np.ndarray, names=REFERENCE_METRICS):
        from mfif.evaluation.metrics.common import convert_images

        self.names = tuple(names)
        metrics = {name: get_metric(name) for name in self.names}  # KeyError for unknown names
        grey = convert_images({"A": a, "B": b})
        self._shapes = {name: image.shape for name, image in grey.items()}
        self._scorers = {}
        for name, metric in metrics.items():
            if name in PREPARED_METRICS:
                self._scorers[name] = _load(PREPARED_METRICS[name])(grey["A"], grey["B"])
            elif name in SOURCE_METRICS:
                self._scorers[name] = partial(metric, grey["A"], grey["B"])
            else:
                self._scorers[name] = metric

    def score(self, fused: np.ndarray, truth: np.ndarray | None = None) -> dict[str, float]:
        """Metrics of one fused image (grey or BGR, the sources' size); ground-truth metrics are
        left out when ``truth`` is None."""
        from mfif.evaluation.metrics.common import convert_images

        named = {"fused": fused} if truth is None else {"fused": fused, "truth": truth}
        grey = convert_images(named, self._shapes)
        results = {}
        for name, scorer in self._scorers.items():
            if name in SOURCE_METRICS:
                results[name] = float(scorer(grey["fused"]))
            elif name in TRUTH_METRICS:
                if truth is not None:
                    results[name] = float(scorer(grey["fused"], grey["truth"]))
            else:
                results[name] = float(scorer(grey["fused"]))
        return results


def compute_metrics(a: np.ndarray, b: np.ndarray, fused: np.ndarray, names=REFERENCE_METRICS,
                    truth: np.ndarray | None = None) -> dict[str, float]:
    """Metrics of one fused image against its two sources (and ground truth when given), on the
    reference grey conversion. Inputs are grey or BGR images of one size, at least 11x11: uint8,
    or float in [0, 1] or 0..255 (see evaluation.metrics.common.prepare_inputs). Ground-truth
    metrics are left out when ``truth`` is None. To score many fused images of one pair, use
    :class:`PairScorer`."""
    return PairScorer(a, b, names).score(fused, truth)
