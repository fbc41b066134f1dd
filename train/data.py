"""Training data: synthetic multi-focus pairs made from sharp photographs (with ground truth), crops
of real pairs (no ground truth, for the unsupervised loss), and a fixed validation split.

A synthetic sample: a soft partition of the crop into K focus regions (smooth random regions and
object-like blobs, feathered edges); source k is the sharp photo inside region k and a blurred copy
(Gaussian, sigma in [2, 10] as in Xu et al. 2018, or a disk, the defocus PSF of a real lens)
elsewhere; the ground truth is the sharp photo. In half of the samples the regions are depth layers
painted back to front, and an out-of-focus layer blurs its outline with its colour, so a blurred
object spills over the sharp background next to it (the defocus spread at the object edges of real
pairs; there no source holds the true pixel). The BSDS photos are JPEGs whose faint block
artefacts survive only where a source is sharp, a shortcut a net must not learn: every photo is
first downscaled by a random factor (INTER_AREA averages the 8x8 blocks away) and that downscaled
image is the ground truth; optionally both sources get the same JPEG re-encoding and independent
sensor noise, as real captures do.

Items are dicts of float32 tensors in [0, 1], BGR: ``sources`` (K, C, H, W), ``truth`` (C, H, W)
and ``focus`` (K, H, W), the soft partition of the crop into the regions where each source is in
focus (summing to 1 over K; without spill, source k = focus[k] * truth + (1 - focus[k]) * blurred).
Item i of epoch e is made from a generator seeded with (seed, e, i), so data are reproducible and
independent of worker count and order.
"""

from __future__ import annotations

import csv
import hashlib
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from mfif.errors import ConfigError, DataError
from mfif.imageio import IMAGE_SUFFIXES, find_pairs, read_image, read_pair
from mfif.scenes import blur

# MANIFEST.csv flags of photos that are not all-in-focus (shallow depth of field, bokeh, low
# sharpness): none of them is a trustworthy ground truth.
EXCLUDED_FLAGS = ("defocus_suspect", "flat_or_bokeh", "low_vol")
VALIDATION_FRACTION = 0.1


class DataWarning(UserWarning):
    """Some input files were skipped (unreadable, too small); the message counts and names them."""


@dataclass
class SynthConfig:
    """How synthetic pairs are made. Defaults are the training settings."""

    crop: int = 128                      # output height and width
    sources: int = 2                  # K sources
    channels: int = 3                    # 3: BGR (some samples grey in 3 channels), 1: grey
    grey_fraction: float = 0.2           # share of grey samples when channels == 3
    sigma_range: tuple[float, float] = (2.0, 10.0)   # Gaussian sigma / disk radius, log-uniform
    disk_fraction: float = 0.5           # share of sources blurred with a disk instead of a Gaussian
    feather_range: tuple[float, float] = (0.5, 3.0)  # Gaussian sigma of the region edges
    downscale_range: tuple[float, float] = (0.5, 0.85)  # against the JPEG-artefact shortcut
    occlusion_fraction: float = 0.5      # share of samples whose blurred layers spill over edges
    jpeg_fraction: float = 0.3           # share of samples whose sources are JPEG re-encoded alike
    noise_max: float = 0.01              # sensor noise std drawn from [0, noise_max] per sample
    flips: bool = True                   # random flips and transposes

    def __post_init__(self):
        if self.crop < 16:
            raise ConfigError(f"crop must be at least 16 pixels, not {self.crop}")
        if self.sources < 2:
            raise ConfigError(f"sources must be >= 2, not {self.sources}")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, not {self.channels}")
        low, high = self.sigma_range
        if not 0 < low <= high:
            raise ConfigError(f"sigma_range must be 0 < low <= high, not {self.sigma_range}")
        low, high = self.downscale_range
        if not 0 < low <= high <= 1:
            raise ConfigError(f"downscale_range must be within (0, 1], not {self.downscale_range}")

    def clean(self) -> "SynthConfig":
        """The same settings without noise, JPEG re-encoding and spill over edges: each source is
        exactly ``focus * truth + (1 - focus) * blurred``."""
        return SynthConfig(**{**asdict(self), "jpeg_fraction": 0.0, "noise_max": 0.0, "occlusion_fraction": 0.0})


# ---------------------------------------------------------------------------------------------
# Sharp photographs


def _flagged(folder: Path) -> set[str]:
    """Relative paths that MANIFEST.csv flags as not all-in-focus (empty set without a manifest)."""
    manifest = folder / "MANIFEST.csv"
    if not manifest.is_file():
        return set()
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {row["filename"] for row in rows
            if any(flag in (row.get("flags") or "") for flag in EXCLUDED_FLAGS)}


def is_validation(relative_path: str) -> bool:
    """The fixed validation split: a photo belongs to it by a hash of its path, not by order."""
    digest = hashlib.sha1(relative_path.encode()).digest()
    return int.from_bytes(digest[:4], "big") < VALIDATION_FRACTION * 2**32


def load_photos(folder: str | Path, split: str = "train", min_size: int = 64) -> list[np.ndarray]:
    """The sharp photos under ``folder`` (recursively) as uint8 BGR arrays, skipping the photos its
    MANIFEST.csv flags, unreadable files and images smaller than ``min_size`` (one counted
    DataWarning). ``split`` is 'train', 'val' or 'all'."""
    if split not in ("train", "val", "all"):
        raise ConfigError(f"split must be 'train', 'val' or 'all', not {split!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"sharp-photo folder not found: {folder}; pass --data with a folder of all-in-focus "
                        "photographs (for example ../shared/data/sharp)")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}; pass --data with a folder "
                        "of all-in-focus photographs")
    flagged = _flagged(folder)
    photos, unreadable, tiny = [], [], []
    for path in files:
        relative = path.relative_to(folder).as_posix()
        if relative in flagged or (split != "all" and is_validation(relative) != (split == "val")):
            continue
        try:
            image = read_image(path, mode="colour")
        except DataError:
            unreadable.append(relative)
            continue
        if min(image.shape[:2]) < min_size:
            tiny.append(f"{relative} {image.shape[1]}x{image.shape[0]}")
            continue
        photos.append(image)
    if unreadable or tiny:
        parts = []
        if unreadable:
            parts.append(f"{len(unreadable)} unreadable ({', '.join(unreadable[:5])})")
        if tiny:
            parts.append(f"{len(tiny)} smaller than {min_size}x{min_size} ({', '.join(tiny[:5])})")
        warnings.warn(f"skipped {len(unreadable) + len(tiny)} of {len(files)} images under {folder}: "
                      + "; ".join(parts), DataWarning, stacklevel=2)
    if not photos:
        raise DataError(f"no usable photos for split {split!r} under {folder} ({len(files)} files, "
                        f"{len(flagged)} flagged in MANIFEST.csv, {len(unreadable)} unreadable, "
                        f"{len(tiny)} too small); add all-in-focus photos of at least {min_size}x{min_size}")
    return photos


# ---------------------------------------------------------------------------------------------
# Focus regions and blur


def _smooth_field(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random field: coarse noise upsampled bicubically (a few regions per crop)."""
    cells = int(rng.integers(2, 6))
    coarse = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def _blob(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An object-like blob: a star-shaped polygon whose radius varies smoothly with the angle."""
    centre = rng.uniform(0.1, 0.9, 2) * (width, height)
    radius = rng.uniform(0.15, 0.6) * min(height, width)
    angles = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    wobble = np.ones_like(angles)
    for harmonic in range(2, 6):
        wobble += rng.uniform(-0.25, 0.25) / harmonic * 2 * np.cos(harmonic * angles + rng.uniform(0, 2 * math.pi))
    aspect = rng.uniform(0.5, 1.5)
    points = np.stack([centre[0] + radius * wobble * aspect * np.cos(angles),
                       centre[1] + radius * wobble / aspect * np.sin(angles)], axis=1)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask.astype(np.float32)


def random_mask(rng: np.random.Generator, height: int, width: int, feather: float) -> np.ndarray:
    """A binary region mask (smooth random regions, blobs, or both), feathered; float32 in [0, 1]."""
    kind = rng.choice(["regions", "blobs", "both"], p=[0.4, 0.4, 0.2])
    mask = np.zeros((height, width), np.float32)
    if kind in ("regions", "both"):
        field = _smooth_field(rng, height, width)
        mask = (field > np.quantile(field, rng.uniform(0.2, 0.8))).astype(np.float32)
    if kind in ("blobs", "both"):
        for _ in range(int(rng.integers(1, 4))):
            mask = np.maximum(mask, _blob(rng, height, width))
    if feather > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), feather)
    return mask


def layer_masks(rng: np.random.Generator, height: int, width: int, count: int, feather: float) -> np.ndarray:
    """(count - 1, H, W) masks of the depth layers in front of the background, back to front."""
    return np.stack([random_mask(rng, height, width, feather) for _ in range(count - 1)])


def focus_regions(masks: np.ndarray) -> np.ndarray:
    """The soft partition (K, H, W) summing to 1 that layer masks (K - 1, H, W) paint, back to
    front: region 0 is the background, a later layer covers the earlier ones. For two sources it is
    (1 - mask, mask): source A is in focus off the mask, B on it."""
    regions = np.concatenate([np.ones_like(masks[:1]), masks])
    for layer in range(1, len(regions)):
        regions[:layer] *= 1 - masks[layer - 1]
    return regions


def make_sample(photo: np.ndarray, rng: np.random.Generator, config: SynthConfig) -> dict[str, np.ndarray]:
    """One synthetic sample from a uint8 BGR photo, as float32 numpy arrays (see module doc)."""
    crop, count = config.crop, config.sources
    height, width = photo.shape[:2]
    # Downscale a random window to crop size (plus a blur margin so blur sees real context).
    margin = int(math.ceil(3 * config.sigma_range[1])) + 1
    factor = rng.uniform(*config.downscale_range)
    factor = max(factor, (crop + 2 * margin) / min(height, width))  # small photos: downscale less
    window = min(int(math.ceil((crop + 2 * margin) / factor)), height, width)
    top = int(rng.integers(0, height - window + 1))
    left = int(rng.integers(0, width - window + 1))
    big = crop + 2 * margin
    sharp = cv2.resize(photo[top:top + window, left:left + window], (big, big),
                       interpolation=cv2.INTER_AREA if window > big else cv2.INTER_CUBIC)
    if config.flips:
        if rng.random() < 0.5:
            sharp = sharp[:, ::-1]
        if rng.random() < 0.5:
            sharp = sharp[::-1]
        if rng.random() < 0.5:
            sharp = sharp.transpose(1, 0, 2)
    grey = config.channels == 1 or rng.random() < config.grey_fraction
    if grey:
        sharp = cv2.cvtColor(np.ascontiguousarray(sharp), cv2.COLOR_BGR2GRAY)[:, :, None]
    sharp = np.ascontiguousarray(sharp).astype(np.float32) / 255.0
    inner = (slice(margin, margin + crop), slice(margin, margin + crop))
    truth = sharp[inner]
    masks = layer_masks(rng, big, big, count, rng.uniform(*config.feather_range))
    regions = focus_regions(masks)
    layered = rng.random() < config.occlusion_fraction
    log_low, log_high = np.log(config.sigma_range)
    sources = []
    for k in range(count):
        kind = "disk" if rng.random() < config.disk_fraction else "gaussian"
        size = float(np.exp(rng.uniform(log_low, log_high)))
        blurred = blur(sharp, kind, size).reshape(sharp.shape)
        if not layered:
            weight = regions[k][:, :, None]
            sources.append((weight * sharp + (1 - weight) * blurred)[inner])
            continue
        # Layers out of focus blur their colour and their outline alike, so a blurred layer in
        # front spills over the sharp one behind it, as a real lens does.
        source = sharp if k == 0 else blurred
        for layer, mask in enumerate(masks, start=1):
            alpha = mask[:, :, None]
            if layer == k:
                source = alpha * sharp + (1 - alpha) * source
            else:
                soft = blur(mask, kind, size)[:, :, None]
                source = blur(alpha * sharp, kind, size).reshape(sharp.shape) + (1 - soft) * source
        sources.append(source[inner])
    regions = np.ascontiguousarray(regions[:, margin:margin + crop, margin:margin + crop])
    noise = rng.uniform(0, config.noise_max)
    jpeg_quality = int(rng.integers(70, 96)) if rng.random() < config.jpeg_fraction else 0
    for k, source in enumerate(sources):
        if noise > 0:
            source = source + rng.standard_normal(source.shape).astype(np.float32) * noise
        if jpeg_quality:
            as_uint8 = np.clip(source * 255 + 0.5, 0, 255).astype(np.uint8)
            ok, encoded = cv2.imencode(".jpg", as_uint8, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            source = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED).reshape(as_uint8.shape).astype(np.float32) / 255
        sources[k] = np.clip(source, 0.0, 1.0)
    stack = np.stack(sources)                               # K, H, W, c
    if grey and config.channels == 3:
        stack = np.repeat(stack, 3, axis=3)
        truth = np.repeat(truth, 3, axis=2)
    return {"sources": np.ascontiguousarray(stack.transpose(0, 3, 1, 2)),
            "truth": np.ascontiguousarray(truth.transpose(2, 0, 1)),
            "focus": regions}


# ---------------------------------------------------------------------------------------------
# Datasets


class SyntheticPairs(Dataset):
    """Synthetic samples from a list of photos; ``length`` items per epoch, item i of epoch e drawn
    from a generator seeded with (seed, e, i). Call ``set_epoch`` to move to a new epoch."""

    def __init__(self, photos: list[np.ndarray], config: SynthConfig, length: int, seed: int = 0):
        if not photos:
            raise DataError("SyntheticPairs needs at least one photo")
        if length < 1:
            raise ConfigError(f"length must be >= 1, not {length}")
        self.photos, self.config, self.length, self.seed = photos, config, length, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        photo = self.photos[int(rng.integers(len(self.photos)))]
        return {key: torch.from_numpy(value) for key, value in make_sample(photo, rng, self.config).items()}


def validation_set(folder: str | Path, config: SynthConfig, count: int = 64, seed: int = 1234) -> list[dict]:
    """The fixed validation split: ``count`` synthetic samples (with ground truth) from the
    validation photos, always the same for the same folder, config and seed."""
    photos = load_photos(folder, split="val", min_size=config.crop // 2)
    data = SyntheticPairs(photos, config, count, seed=seed)
    return [data[i] for i in range(count)]


class RealPairCrops(Dataset):
    """Random crops (with flips) of real pairs: items hold ``sources`` (2, C, crop, crop) only, for
    the unsupervised loss. Pairs that are unreadable, mismatched or smaller than the crop are
    skipped with one counted DataWarning."""

    def __init__(self, folders: list[str | Path], crop: int, length: int, channels: int = 3, seed: int = 0):
        self.pairs, skipped = [], []
        for folder in folders:
            for pair in find_pairs(folder):
                try:
                    sources, _ = read_pair(pair, "grey" if channels == 1 else "colour")
                except DataError as exc:
                    skipped.append(f"{pair.name} ({exc})")
                    continue
                stack = np.stack([s.reshape(*s.shape[:2], -1) for s in sources])     # 2, H, W, C
                if min(stack.shape[1:3]) < crop:
                    skipped.append(f"{pair.name} ({stack.shape[2]}x{stack.shape[1]} < {crop})")
                    continue
                self.pairs.append(stack)
        if skipped:
            warnings.warn(f"skipped {len(skipped)} real pairs: {'; '.join(skipped[:5])}", DataWarning, stacklevel=2)
        if not self.pairs:
            raise DataError(f"no usable real pairs of at least {crop}x{crop} in {', '.join(map(str, folders))}")
        self.crop, self.length, self.seed, self.epoch = crop, length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index, 1])
        stack = self.pairs[int(rng.integers(len(self.pairs)))]
        top = int(rng.integers(0, stack.shape[1] - self.crop + 1))
        left = int(rng.integers(0, stack.shape[2] - self.crop + 1))
        crop = stack[:, top:top + self.crop, left:left + self.crop]
        if rng.random() < 0.5:
            crop = crop[:, :, ::-1]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if rng.random() < 0.5:
            crop = crop[::-1]                                   # swap A and B
        sources = np.ascontiguousarray(crop.transpose(0, 3, 1, 2)).astype(np.float32) / 255.0
        return {"sources": torch.from_numpy(sources)}


class SourcesOnly(Dataset):
    """A view of a dataset that keeps only ``sources`` (to mix synthetic and real crops)."""

    def __init__(self, data):
        self.data = data

    def set_epoch(self, epoch: int) -> None:
        self.data.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict:
        return {"sources": self.data[index]["sources"]}
