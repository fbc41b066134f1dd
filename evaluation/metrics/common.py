"""Input convention and shared helpers of the fusion metrics.

The reference pipeline (Liu et al. 2020, Z. Liu's MATLAB toolbox) reads 8-bit images, converts a
colour image to grey with MATLAB ``rgb2gray`` (result rounded to uint8) and computes every metric on
float64 grey levels in 0..255. :func:`reference_grey` and :func:`prepare_inputs` do the same here;
the metric functions themselves take grey images that are already in 0..255 and only check them
(:func:`validate`).
"""

from __future__ import annotations

import numpy as np

from mfif.errors import InputError
from mfif.lazy import require

cv2 = require("cv2", extra="eval", purpose="the fusion metrics")

# MATLAB rgb2gray: the first row of the inverse NTSC (YIQ) matrix, 0.2989 R + 0.5870 G + 0.1140 B
# to four digits; MATLAB uses the full-precision values.
RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)

# Smallest height and width at which every metric of this package is defined (SSIM's 11x11
# window); prepare_inputs enforces it. Each metric function checks its own, smaller minimum.
MIN_SIZE = 11


def _shape_text(shape) -> str:
    return "x".join(str(n) for n in shape)


def _finite_or_raise(image: np.ndarray, name: str) -> None:
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
        raise InputError(f"{name} holds {bad} NaN or infinite value(s) (shape {_shape_text(image.shape)}); "
                         "fusion metrics need finite pixel values: fix or replace them first")


def _to_0_255(image: np.ndarray, name: str) -> np.ndarray:
    """Pixel values as float64 in 0..255: uint8 (and other integer types holding 0..255) as is;
    float images whose values lie in [0, 1] are scaled by 255, others must lie in [0, 255]."""
    if image.dtype == np.uint8:
        return image.astype(np.float64)
    if image.dtype.kind in "iu":
        low, high = int(image.min()), int(image.max())
        if low < 0 or high > 255:
            raise InputError(f"{name} is {image.dtype} with values {low}..{high}; the metrics take 8-bit "
                             "images (0..255): scale it to 8 bits first (mfif.imageio.read_image does so "
                             "for 16-bit files)")
        return image.astype(np.float64)
    if image.dtype.kind != "f":
        raise InputError(f"{name} has sample type {image.dtype}; pass uint8 (0..255) or float "
                         "([0, 1] or 0..255) images")
    _finite_or_raise(image, name)
    data = image.astype(np.float64)
    low, high = float(data.min()), float(data.max())
    if low < 0.0 or high > 255.0:
        raise InputError(f"{name} has float values {low:g}..{high:g}, outside both [0, 1] and [0, 255]: "
                         "clip it (np.clip) to the range it was made for")
    if high <= 1.0:
        return data * 255.0
    if high < 2.0:
        raise InputError(f"{name} has float values {low:g}..{high:g}: ambiguous between [0, 1] (then "
                         "clip it to 1) and 0..255 (then it is almost black); clip it or convert it to uint8")
    return data


def reference_grey(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Grey float64 image in 0..255 as the reference pipeline makes it.

    Grey (HxW or HxWx1) stays as is. Colour (HxWx3 in OpenCV's BGR order; a 4th alpha channel is
    dropped) becomes 0.2989 R + 0.5870 G + 0.1140 B; for integer input the result is rounded to
    uint8 as MATLAB ``rgb2gray`` does (halves away from zero), float input is not rounded. Float
    images with all values in [0, 1] are scaled by 255 (see :func:`prepare_inputs`).
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise InputError(f"{name} has shape {image.shape}; pass a grey HxW or a colour HxWx3 (BGR) image")
    if image.size == 0:
        raise InputError(f"{name} is empty (shape {image.shape}); pass a non-empty image")
    data = _to_0_255(image, name)
    if data.ndim == 2:
        return data
    blue, green, red = data[:, :, 0], data[:, :, 1], data[:, :, 2]
    grey = RGB2GRAY[0] * red + RGB2GRAY[1] * green + RGB2GRAY[2] * blue
    if image.dtype.kind in "iu":
        grey = np.floor(grey + 0.5)
    return grey


def prepare_inputs(a: np.ndarray, b: np.ndarray, fused: np.ndarray, truth: np.ndarray | None = None):
    """Convert the two sources, the fused image and an optional ground truth to reference grey
    (:func:`reference_grey`) and check them: one height and width for all, at least
    ``MIN_SIZE`` x ``MIN_SIZE`` pixels, finite values. Returns ``(a, b, fused, truth)`` as float64
    HxW arrays in 0..255 (``truth`` None when not given).

    Accepted input: uint8 (or any integer type holding 0..255), or float in [0, 1] (scaled by
    255) or in 0..255; a float image with its maximum in (1, 2) is ambiguous and refused.
    """
    named = {"A": a, "B": b, "fused": fused}
    if truth is not None:
        named["truth"] = truth
    grey = convert_images(named)
    return grey["A"], grey["B"], grey["fused"], grey.get("truth")


def convert_images(named: dict[str, np.ndarray], checked: dict[str, tuple[int, ...]] | None = None
                   ) -> dict[str, np.ndarray]:
    """:func:`reference_grey` of each named image, checked as :func:`prepare_inputs` does: one
    height and width for all (and for the ``checked`` shapes of images converted before), at
    least ``MIN_SIZE`` x ``MIN_SIZE`` pixels."""
    grey = {name: reference_grey(image, name) for name, image in named.items()}
    _check_shapes(grey, "the fusion metrics", MIN_SIZE, checked)
    return grey


def _check_shapes(images: dict[str, np.ndarray], metric: str, min_size: int,
                  checked: dict[str, tuple[int, ...]] | None = None) -> None:
    shapes = {**(checked or {}), **{name: image.shape for name, image in images.items()}}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {_shape_text(shape)}" for name, shape in shapes.items())
        raise InputError(f"{metric} needs images of one size; got {listed}: resize or crop them to "
                         "a common size first")
    height, width = next(iter(shapes.values()))
    if min(height, width) < min_size:
        raise InputError(f"{metric} needs images of at least {min_size}x{min_size} pixels; got "
                         f"{height}x{width}")


def validate(metric: str, min_size: int, checked: dict[str, tuple[int, ...]] | None = None,
             **images: np.ndarray) -> list[np.ndarray]:
    """Check the grey 0..255 images one metric takes and return them as float64 arrays, in the
    order given: 2-D, real, finite, non-empty, values in 0..255, one size, at least
    ``min_size`` pixels high and wide. ``checked`` names the shapes of images validated before
    (the sources, for a fused image scored against prepared sources) that these must match."""
    valid = {}
    for name, image in images.items():
        image = np.asarray(image)
        if image.ndim != 2:
            raise InputError(f"{metric} takes grey HxW images in 0..255; {name} has shape {image.shape}: "
                             "convert it with evaluation.metrics.reference_grey (or use compute_metrics)")
        if image.size == 0:
            raise InputError(f"{metric}: {name} is empty (shape {image.shape}); pass a non-empty image")
        if image.dtype.kind not in "iuf":
            raise InputError(f"{metric}: {name} has sample type {image.dtype}; pass real grey levels 0..255")
        _finite_or_raise(image, f"{metric}: {name}")
        data = np.ascontiguousarray(image, dtype=np.float64)
        low, high = float(data.min()), float(data.max())
        if low < 0.0 or high > 255.0:
            raise InputError(f"{metric} takes grey levels in 0..255; {name} has values {low:g}..{high:g}: "
                             "clip it, or convert it with evaluation.metrics.reference_grey")
        valid[name] = data
    _check_shapes(valid, metric, min_size, checked)
    return list(valid.values())


def stretch_levels(image: np.ndarray) -> np.ndarray:
    """The toolbox's ``normalize1``: stretch to 0..255 and round to whole levels (halves up), as
    float64; a constant image becomes all zeros (the reference leaves an all-zero image as is and
    divides 0 by 0 for any other constant). QMI, QNCIE, QCB and QCV compute on these levels."""
    low, high = image.min(), image.max()
    if low == high:
        return np.zeros(image.shape)
    return np.floor((image - low) / (high - low) * 255.0 + 0.5)


# Rows of window positions per strip in the window metrics: small enough that the temporaries
# stay in the CPU cache instead of being fresh memory on every call.
STRIP_ROWS = 32


def row_strips(height: int, window: int, rows: int = STRIP_ROWS):
    """Row slices that cut an image of ``height`` rows into overlapping strips, so that the
    'valid' window positions of the strips (``window`` rows high) together are those of the whole
    image, each once."""
    positions = height - window + 1
    for top in range(0, positions, rows):
        yield slice(top, min(top + rows, positions) + window - 1)


def filter_same(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """MATLAB ``filter2(kernel, image, 'same')`` for an odd-sized kernel: correlation, zero padding."""
    kernel = np.asarray(kernel, dtype=np.float64)
    return cv2.filter2D(image, cv2.CV_64F, kernel, borderType=cv2.BORDER_CONSTANT)


def gaussian_valid(image: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """MATLAB ``filter2(fspecial('gaussian', size, sigma), image, 'valid')`` (window summing to 1,
    output only where the window lies inside the image), as two 1-D passes."""
    radius = (size - 1) / 2.0
    taps = np.exp(-((np.arange(size) - radius) ** 2) / (2.0 * sigma * sigma))
    taps /= taps.sum()
    full = cv2.sepFilter2D(image, cv2.CV_64F, taps, taps, borderType=cv2.BORDER_REFLECT)
    half = size // 2
    return full[half:image.shape[0] - half, half:image.shape[1] - half]


def box_mean_valid(image: np.ndarray, size: int) -> np.ndarray:
    """MATLAB ``filter2(ones(size) / size**2, image, 'valid')``: mean over every size x size window
    inside the image (exact for integer grey levels)."""
    means = cv2.boxFilter(image, cv2.CV_64F, (size, size), anchor=(0, 0), normalize=True,
                          borderType=cv2.BORDER_REFLECT)
    return means[:image.shape[0] - size + 1, :image.shape[1] - size + 1]


def constant_windows(image: np.ndarray, size: int) -> np.ndarray:
    """Boolean map ('valid' layout, like the filters above) of the size x size windows in which
    the image is constant."""
    kernel = np.ones((size, size), np.uint8)
    spread = cv2.dilate(image, kernel, anchor=(0, 0)) - cv2.erode(image, kernel, anchor=(0, 0))
    return spread[:image.shape[0] - size + 1, :image.shape[1] - size + 1] == 0


def ssim_map(mu_x, mu_y, var_x, var_y, cov, c1: float, c2: float) -> np.ndarray:
    """The SSIM index map from local moments (Wang et al. 2004, Eq. 13), c1, c2 > 0:
    (2 mu_x mu_y + c1)(2 cov + c2) / ((mu_x^2 + mu_y^2 + c1)(var_x + var_y + c2)).
    Overwrites ``cov``."""
    numerator = mu_x * mu_y
    numerator *= 2.0
    numerator += c1
    cov *= 2.0
    cov += c2
    numerator *= cov
    denominator = mu_x * mu_x
    denominator += mu_y * mu_y
    denominator += c1
    spread = var_x + var_y
    spread += c2
    denominator *= spread
    numerator /= denominator
    return numerator
