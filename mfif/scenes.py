"""Generated scenes and the multi-focus sources made from them, for the demo, the tests, the
benchmarks, calibration and evaluation. numpy and OpenCV only: no torch.

A scene is a sharp procedural image (uint8, HxWx3 BGR or HxW grey): smooth colour shading, filled
shapes, lines, text and fine-grained texture, so every region has detail that blur takes away.
Multi-focus sources are made from a sharp image and a partition of the frame into K focus regions
(:func:`focus_regions`): source k is the sharp image inside region k and a Gaussian-blurred copy
elsewhere, so the sharp image is the ground truth of their fusion. (Training pairs, with disk
blur, depth layers and blur spilling over edges, are made by ``mfif.train.data``.)

    sharp = scene(480, 640, seed=3)
    a, b = multi_focus(sharp, "blobs", seed=3)        # complementary random regions
    a, b, sharp = demo_pair(480, 640)                 # the pair of ``mfif fuse --demo``
"""

from __future__ import annotations

import math

import numpy as np

from mfif.errors import ConfigError
from mfif.lazy import require

LAYOUTS = ("strips", "wavy", "blobs")


def _cv2():
    return require("cv2", extra="cpu", purpose="generating scenes")


def scene(height: int, width: int, seed=0, colour: bool = True) -> np.ndarray:
    """A sharp procedural scene of ``height`` x ``width`` pixels, uint8 BGR (or grey). ``seed``:
    anything ``numpy.random.default_rng`` takes; one seed gives one scene."""
    if height < 1 or width < 1:
        raise ConfigError(f"a scene needs a positive size, not {height}x{width} (height x width)")
    cv2 = _cv2()
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 3)
    image = np.stack([110 + 50 * np.sin(cols / width * (2 + c) + rows / height * (1 + c) + phase[c])
                      for c in range(3)], axis=-1)
    image += cv2.GaussianBlur(rng.normal(0, 30, (height, width)).astype(np.float32), (0, 0), 0.8)[..., None]
    image = np.clip(image, 0, 255).astype(np.uint8)
    size = max(4, min(height, width) // 12)
    for _ in range(max(12, height * width // 6000)):
        bgr = tuple(int(v) for v in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        kind = rng.integers(0, 3)
        if kind == 0:
            cv2.circle(image, (x, y), int(rng.integers(size // 3, size)), bgr, -1, cv2.LINE_AA)
        elif kind == 1:
            corner = (x + int(rng.integers(size // 2, 2 * size)), y + int(rng.integers(size // 2, 2 * size)))
            cv2.rectangle(image, (x, y), corner, bgr, -1)
        else:
            end = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(image, (x, y), end, bgr, max(1, size // 8), cv2.LINE_AA)
    for _ in range(3):
        origin = (int(rng.integers(0, max(1, width - 4 * size))), int(rng.integers(size, max(size + 1, height))))
        cv2.putText(image, "mfif", origin, cv2.FONT_HERSHEY_SIMPLEX, size / 25, (255, 255, 255), max(1, size // 12),
                    cv2.LINE_AA)
    return image if colour else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def focus_regions(layout: str, height: int, width: int, count: int = 2, seed=0,
                  feather: float = 0.0) -> np.ndarray:
    """A partition of the frame into ``count`` focus regions: float32 (count, H, W) in [0, 1]
    summing to 1 at every pixel. ``layout``: 'strips' (vertical strips, left to right), 'wavy'
    (the same with wavy borders, like a near object against a far background) or 'blobs' (random
    smooth regions of about equal area). ``feather`` > 0 softens the borders (Gaussian sigma in
    pixels). ``seed``: a seed or a ``numpy.random.Generator``."""
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown focus layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if count < 2:
        raise ConfigError(f"multi-focus sources need count >= 2 focus regions, not {count}")
    cv2 = _cv2()
    rng = np.random.default_rng(seed)
    if layout == "blobs":
        cells = rng.integers(2, 6, size=2)
        field = cv2.resize(rng.random((int(cells[0]), int(cells[1]))).astype(np.float32), (width, height),
                           interpolation=cv2.INTER_CUBIC)
        index = np.searchsorted(np.quantile(field, np.arange(1, count) / count), field, side="right")
    else:
        rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
        position = cols / width
        if layout == "wavy":
            position -= 0.08 * np.sin(rows / height * 3 * np.pi + rng.uniform(0, 2 * np.pi))
        index = np.clip(np.floor(position * count), 0, count - 1).astype(int)
    regions = np.stack([(index == k).astype(np.float32) for k in range(count)])
    if feather > 0:
        regions = np.stack([cv2.GaussianBlur(region, (0, 0), feather) for region in regions])
    return regions


def disk_kernel(radius: float) -> np.ndarray:
    """A normalized disk PSF (a lens's defocus) of ``radius`` pixels with an anti-aliased edge (4x4
    supersampling)."""
    size = 2 * math.ceil(radius) + 1
    fine = (np.arange(size * 4) + 0.5) / 4 - size / 2
    inside = (fine[None, :] ** 2 + fine[:, None] ** 2 <= radius ** 2).astype(np.float32)
    kernel = inside.reshape(size, 4, size, 4).mean(axis=(1, 3))
    return kernel / kernel.sum()


def blur(image: np.ndarray, kind: str, size: float) -> np.ndarray:
    """Gaussian blur of std ``size`` or disk blur of radius ``size`` (reflect border), in
    ``image``'s dtype (use float32 to keep the fractions)."""
    cv2 = _cv2()
    if kind == "gaussian":
        return cv2.GaussianBlur(image, (0, 0), float(size), borderType=cv2.BORDER_REFLECT)
    if kind == "disk":
        return cv2.filter2D(image, -1, disk_kernel(size), borderType=cv2.BORDER_REFLECT)
    raise ConfigError(f"blur kind must be 'gaussian' or 'disk', not {kind!r}")


def defocus(sharp: np.ndarray, regions: np.ndarray, sigmas) -> list[np.ndarray]:
    """One uint8 source per region: ``sharp`` (uint8, grey or BGR) where the region is 1, blurred
    with a Gaussian of std ``sigmas[k]`` where it is 0, mixed in between."""
    if sharp.shape[:2] != regions.shape[1:]:
        raise ConfigError(f"the regions are {regions.shape[2]}x{regions.shape[1]}, the sharp image "
                          f"{sharp.shape[1]}x{sharp.shape[0]}: make them for the image's size")
    image = sharp.astype(np.float32)
    sources = []
    for region, sigma in zip(regions, sigmas):
        blurred = blur(image, "gaussian", sigma)
        weight = region[..., None] if image.ndim == 3 else region
        sources.append(np.clip(weight * image + (1 - weight) * blurred + 0.5, 0, 255).astype(np.uint8))
    return sources


def multi_focus(sharp: np.ndarray, layout: str = "blobs", count: int = 2, seed=0, sigma=(1.5, 3.0),
                feather: float = 0.0) -> list[np.ndarray]:
    """``count`` multi-focus sources of the uint8 image ``sharp`` (its ground truth): regions of
    ``layout`` (see :func:`focus_regions`), each source blurred outside its own region with a
    Gaussian of std ``sigma``, or drawn per source from the range ``sigma`` = (low, high)."""
    rng = np.random.default_rng(seed)
    regions = focus_regions(layout, sharp.shape[0], sharp.shape[1], count, rng, feather)
    sigmas = rng.uniform(*sigma, count) if isinstance(sigma, tuple) else [sigma] * count
    return defocus(sharp, regions, sigmas)


def demo_pair(height: int = 480, width: int = 640, seed=0, colour: bool = True):
    """The pair of ``mfif fuse --demo``: a scene whose left part (wavy border) is near and right
    part far; A is focused near, B far. Returns (A, B, sharp) as uint8 BGR (or grey) frames."""
    sharp = scene(height, width, seed, colour)
    a, b = multi_focus(sharp, "wavy", seed=seed, sigma=max(1.5, width / 200), feather=2.0)
    return a, b, sharp
