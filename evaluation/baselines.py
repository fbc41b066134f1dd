"""Classical multi-focus fusion baselines: the yardsticks the learned models must beat.

Every method is ``fuse(frames) -> image``: two or more frames of one shape, grey (HxW, HxWx1) or
colour (HxWxC, BGR for C=3), uint8 (0..255) or float32/float64 ([0, 1]); the result has the shape
and dtype of the inputs. Any size works down to 1x1: a multi-scale method uses as many levels as the
size allows and, where none fits, falls back to the pixel average (a defined value, not an error).
A float frame with NaN/inf or values outside [0, 1], frames of different shapes or dtypes, or fewer
than two frames raise :class:`mfif.errors.InputError`.

Decisions (which frame is in focus) are taken on a grey activity image so the colour channels of a
pixel come from the same frame; on ties the earlier frame wins, so fusing identical frames returns
that frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from mfif.errors import InputError
from mfif.lazy import require

cv2 = require("cv2", extra="eval", purpose="the classical fusion baselines")

# OpenCV filters take at most this many channels at once (CV_CN_MAX).
_MAX_CHANNELS = 512
# BGR luma weights (ITU-R BT.601) for the grey activity image of a 3-channel frame.
_BGR_LUMA = np.array([0.114, 0.587, 0.299], dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Input checks and conversion

def _shape_text(shape) -> str:
    return "x".join(str(n) for n in shape)


def as_stack(frames: Sequence[np.ndarray]) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Check the frames and stack them as float32 (K, H, W, C) in [0, 1]. Returns the stack and a
    function that turns a float (H, W, C) result back into the frames' shape and dtype."""
    if isinstance(frames, np.ndarray) or not isinstance(frames, Sequence):
        raise InputError(f"pass the frames as a list of images, not {type(frames).__name__}")
    if len(frames) < 2:
        raise InputError(f"fusion needs at least 2 frames; got {len(frames)}")
    first = frames[0]
    for index, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray):
            raise InputError(f"frame {index} is a {type(frame).__name__}, not a numpy array")
        if frame.shape != first.shape or frame.dtype != first.dtype:
            raise InputError(f"all frames must have one shape and dtype; frame 0 is {_shape_text(first.shape)} "
                             f"{first.dtype}, frame {index} is {_shape_text(frame.shape)} {frame.dtype}: "
                             "resize/convert them to a common size and type first")
    if first.ndim not in (2, 3) or first.size == 0:
        raise InputError(f"frames must be non-empty HxW or HxWxC images; got shape {_shape_text(first.shape)}")
    if first.dtype == np.uint8:
        stack = np.stack(frames).astype(np.float32) * np.float32(1.0 / 255.0)
    elif first.dtype in (np.float32, np.float64):
        stack = np.stack(frames).astype(np.float32)
        finite = np.isfinite(stack)
        if not finite.all():
            bad = int(stack.size - np.count_nonzero(finite))
            raise InputError(f"the float frames hold {bad} NaN or infinite value(s) (shape "
                             f"{_shape_text(first.shape)}); replace them before fusing")
        low, high = float(stack.min()), float(stack.max())
        if low < -1e-6 or high > 1.0 + 1e-6:
            raise InputError(f"float frames must lie in [0, 1]; got values {low:g}..{high:g}: divide 8-bit "
                             "values by 255 or clip them")
    else:
        raise InputError(f"frames have sample type {first.dtype}; pass uint8 (0..255) or float32/float64 ([0, 1])")
    if stack.ndim == 3:
        stack = stack[..., None]
    shape, dtype = first.shape, first.dtype

    def restore(image: np.ndarray) -> np.ndarray:
        image = np.clip(image, 0.0, 1.0).reshape(shape)
        if dtype == np.uint8:
            return np.rint(image * 255.0).astype(np.uint8)
        return image.astype(dtype)

    return stack, restore


def grey(stack: np.ndarray) -> np.ndarray:
    """Grey activity image of every frame: (K, H, W, C) -> (K, H, W)."""
    if stack.shape[-1] == 3:
        return stack @ _BGR_LUMA
    return stack.mean(axis=-1)


def _filter(images: np.ndarray, function) -> np.ndarray:
    """Apply an OpenCV 2-D filter to every image of a (K, H, W[, C]) float32 stack at once: the
    K*C planes travel as the channels of one image."""
    k, h, w = images.shape[:3]
    planes = np.ascontiguousarray(np.moveaxis(images.reshape(k, h, w, -1), 0, 2).reshape(h, w, -1))
    chunks = [function(planes[:, :, i:i + _MAX_CHANNELS]) for i in range(0, planes.shape[2], _MAX_CHANNELS)]
    out = np.concatenate([c.reshape(h, w, -1) for c in chunks], axis=2)
    return np.moveaxis(out.reshape(h, w, k, -1), 2, 0).reshape(images.shape)


def box_mean(images: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window that shrinks at the borders (He's ``boxfilter`` / N); any size."""
    size = (2 * radius + 1, 2 * radius + 1)

    def mean(planes):
        sums = cv2.boxFilter(planes, -1, size, normalize=False, borderType=cv2.BORDER_CONSTANT)
        counts = cv2.boxFilter(np.ones(planes.shape[:2], np.float32), -1, size, normalize=False,
                               borderType=cv2.BORDER_CONSTANT)
        return sums / (counts[:, :, None] if sums.ndim == 3 else counts)

    return _filter(images, mean)


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with a grey guide, on (K, H, W) stacks (one guide per source)."""
    mean_i = box_mean(guide, radius)
    mean_p = box_mean(source, radius)
    var_i = box_mean(guide * guide, radius) - mean_i * mean_i
    cov_ip = box_mean(guide * source, radius) - mean_i * mean_p
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_mean(a, radius) * guide + box_mean(b, radius)


def _one_hot(scores: np.ndarray) -> np.ndarray:
    """(K, H, W) scores -> float32 one-hot maps of the arg-max (earlier frame wins ties)."""
    labels = np.argmax(scores, axis=0)
    return (labels[None] == np.arange(scores.shape[0])[:, None, None]).astype(np.float32)


def _normalize(weights: np.ndarray) -> np.ndarray:
    weights = np.maximum(weights, 0.0)
    total = weights.sum(axis=0, keepdims=True)
    uniform = np.float32(1.0 / weights.shape[0])
    return np.where(total > 1e-8, weights / np.maximum(total, 1e-8), uniform)


# ---------------------------------------------------------------------------------------------
# The methods

def average(frames: Sequence[np.ndarray]) -> np.ndarray:
    """Pixel average of the frames."""
    stack, restore = as_stack(frames)
    return restore(stack.mean(axis=0))


def laplacian_pyramid(frames: Sequence[np.ndarray], levels: int = 4) -> np.ndarray:
    """Laplacian pyramid (Burt and Adelson): each band pixel from the frame with the largest
    absolute coefficient (summed over channels), the coarsest level averaged. ``levels`` is
    reduced so the coarsest level keeps at least 2 pixels a side."""
    stack, restore = as_stack(frames)
    levels = min(levels, _max_levels(min(stack.shape[1:3]), 2))
    current, bands = stack, []
    for _ in range(levels):
        smaller = _filter_resize(current, cv2.pyrDown)
        expanded = _filter_resize(smaller, lambda p, s=current.shape: cv2.pyrUp(p, dstsize=(s[2], s[1])))
        bands.append(current - expanded)
        current = smaller
    fused = current.mean(axis=0)
    for band in reversed(bands):
        height, width = band.shape[1:3]
        fused = cv2.pyrUp(fused, dstsize=(width, height)).reshape(height, width, -1) + _pick_max_abs(band)
    return restore(fused)


def dwt(frames: Sequence[np.ndarray], wavelet: str = "db2", levels: int = 4) -> np.ndarray:
    """Discrete wavelet transform: each detail coefficient from the frame with the largest
    absolute value (summed over channels), the approximation averaged. ``levels`` is reduced to
    what the image size allows for the wavelet (PyWavelets' ``dwt_max_level``)."""
    pywt = require("pywt", extra="eval", purpose="the DWT fusion baseline")
    stack, restore = as_stack(frames)
    height, width = stack.shape[1:3]
    levels = min(levels, pywt.dwt_max_level(min(height, width), pywt.Wavelet(wavelet).dec_len))
    if levels < 1:
        return restore(stack.mean(axis=0))
    coefficients = pywt.wavedec2(stack, wavelet, mode="symmetric", level=levels, axes=(1, 2))
    fused = [coefficients[0].mean(axis=0)]
    for details in coefficients[1:]:
        fused.append(tuple(_pick_max_abs(band) for band in details))
    image = pywt.waverec2(fused, wavelet, mode="symmetric", axes=(0, 1))
    return restore(image[:height, :width])


def gff(frames: Sequence[np.ndarray], r1: int = 45, eps1: float = 0.3, r2: int = 7, eps2: float = 1e-6,
        average_size: int = 31, saliency_radius: int = 5, saliency_sigma: float = 5.0) -> np.ndarray:
    """Guided filtering fusion (S. Li, X. Kang, J. Hu, IEEE TIP 2013) with the paper's parameters:
    two-scale decomposition by a 31x31 mean filter; saliency = |3x3 Laplacian| of the grey frame
    smoothed by an 11x11 Gaussian (sigma 5); one-hot weight maps of the most salient frame, refined
    by guided filters guided by each grey frame (base: r=45, eps=0.3; detail: r=7, eps=1e-6).
    Grey guidance for colour frames, replicated borders."""
    stack, restore = as_stack(frames)
    border = cv2.BORDER_REPLICATE
    g = grey(stack)
    laplacian = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)
    size = 2 * saliency_radius + 1
    saliency = _filter(g, lambda p: cv2.GaussianBlur(
        np.abs(cv2.filter2D(p, -1, laplacian, borderType=border)), (size, size), saliency_sigma,
        borderType=border))
    chosen = _one_hot(saliency)
    weight_base = _normalize(guided_filter(g, chosen, r1, eps1))[..., None]
    weight_detail = _normalize(guided_filter(g, chosen, r2, eps2))[..., None]
    base = _filter(stack, lambda p: cv2.blur(p, (average_size, average_size), borderType=border))
    fused = (weight_base * base).sum(axis=0) + (weight_detail * (stack - base)).sum(axis=0)
    return restore(fused)


def decision_map(frames: Sequence[np.ndarray], focus_radius: int = 5, vote_fraction: float = 0.02,
                 guide_radius: int = 4, guide_eps: float = 0.01) -> np.ndarray:
    """Focus-measure decision map refined with a guided filter (in the spirit of GFDF, Qiu et al.
    2019, and DSIFT-style methods): focus measure = local mean over a (2r+1)^2 window of
    |grey - its 7x7 mean|; each pixel goes to the frame with the largest measure; a majority vote
    over a window of ``vote_fraction`` of the smaller image side removes small islands; the
    one-hot maps are softened by a guided filter guided by the mean grey frame, so the fused
    pixels are (almost everywhere) copied from one frame."""
    stack, restore = as_stack(frames)
    g = grey(stack)
    focus = box_mean(np.abs(g - box_mean(g, 3)), focus_radius)
    chosen = _one_hot(focus)
    vote_radius = max(1, int(round(vote_fraction * min(g.shape[1:3]))))
    chosen = _one_hot(box_mean(chosen, vote_radius) + chosen * 1e-3)  # own label breaks vote ties
    guide = np.broadcast_to(g.mean(axis=0), g.shape)
    weights = _normalize(guided_filter(guide, chosen, guide_radius, guide_eps))[..., None]
    return restore((weights * stack).sum(axis=0))


# ---------------------------------------------------------------------------------------------
# Helpers of the multi-scale methods

def _max_levels(side: int, smallest: int) -> int:
    """How many halvings keep a side of ``side`` pixels at least ``smallest`` pixels."""
    levels = 0
    while (side + 1) // 2 >= smallest:
        side = (side + 1) // 2
        levels += 1
    return levels


def _filter_resize(stack: np.ndarray, function) -> np.ndarray:
    """Apply a resizing OpenCV function (pyrDown/pyrUp) to each frame of a (K, H, W, C) stack."""
    outputs = [function(frame) for frame in stack]
    return np.stack([o.reshape(o.shape[0], o.shape[1], -1) for o in outputs])


def _pick_max_abs(bands: np.ndarray) -> np.ndarray:
    """(K, H, W, C) coefficients -> (H, W, C): per pixel, the frame with the largest sum over
    channels of absolute values."""
    activity = np.abs(bands).sum(axis=-1)
    index = np.argmax(activity, axis=0)[None, :, :, None]
    return np.take_along_axis(bands, index, axis=0)[0]


BASELINES: dict[str, Callable[[Sequence[np.ndarray]], np.ndarray]] = {
    "average": average,
    "lp": laplacian_pyramid,
    "dwt": dwt,
    "gff": gff,
    "decision": decision_map,
}
