"""Calibration and evaluation data: stacks of K source images from a folder of pairs, a video, or
made up in code; crops of them as calibration frames; a reader that feeds them to ONNX Runtime's
calibrators with a progress bar.

Sources of samples (``--data`` of ``mfif calibrate``):
- a folder of pairs ``<name>_A.<ext>``, ``<name>_B.<ext>`` (the shared-data layout);
- a video file of a focus sweep: K consecutive frames make one sample (K = the model's number of
  sources, 2 for nets that take any K), samples are spread evenly over the video;
- ``synthetic``: generated scenes (:mod:`mfif.scenes`), each source sharp in its own region and
  blurred elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfif.errors import ConfigError, DataError
from mfif.imageio import IMAGE_SUFFIXES, find_pairs, read_pair
from mfif.lazy import require
from mfif.runtime.model_info import ModelInfo
from mfif.scenes import multi_focus, scene

MIN_SAMPLES = 4                 # fewer distinct scenes than this make a poor calibration set
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")
SYNTHETIC = "synthetic"


def _cv2():
    return require("cv2", extra="cpu", purpose="reading calibration images and videos")


@dataclass
class Sample:
    """One scene: K source images of one size, uint8, HxW grey or HxWx3 BGR."""

    name: str
    sources: list[np.ndarray]


# ----------------------------------------------------------------------------- sources of samples


def pair_samples(folder: str | Path, channels: int = 3) -> list[Sample]:
    """Every pair in ``folder``, read as grey (channels 1) or BGR (3). Unreadable images or pairs
    whose two images differ in size are a DataError naming them."""
    samples, problems = [], []
    for pair in find_pairs(folder):
        try:
            sources, _ = read_pair(pair, "grey" if channels == 1 else "colour")
        except DataError as exc:
            problems.append(str(exc))
            continue
        samples.append(Sample(pair.name, sources))
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise DataError(f"{len(problems)} unusable pair(s) in {folder}: {shown}. Fix or remove them")
    return samples


def video_samples(path: str | Path, count: int, sources: int = 2, channels: int = 3) -> list[Sample]:
    """``count`` samples of ``sources`` consecutive frames each, spread evenly over the video."""
    cv2 = _cv2()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"video file not found: {path}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DataError(f"cannot open video {path} ({path.stat().st_size} bytes): not a video OpenCV can decode")
    try:
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        step = max(sources, total // max(count, 1)) if total > 0 else sources
        samples, frames, index = [], [], 0
        while len(samples) < count:
            ok, frame = capture.read()
            if not ok:
                break
            if index % step < sources:
                if channels == 1:
                    frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
                frames.append(frame)
                if len(frames) == sources:
                    samples.append(Sample(f"{path.stem}@{index - sources + 1}", frames))
                    frames = []
            index += 1
    finally:
        capture.release()
    if not samples:
        raise DataError(f"video {path} yielded {index} decodable frames; a sample needs {sources} consecutive ones")
    return samples


def synthetic_samples(count: int, size: tuple[int, int] = (256, 256), sources: int = 2, channels: int = 3,
                      seed: int = 0) -> list[Sample]:
    """Generated scenes (:mod:`mfif.scenes`): source k is sharp inside region k of a random
    partition (soft borders) and Gaussian-blurred (sigma 1.5 to 5) elsewhere."""
    samples = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        sharp = scene(*size, seed=rng, colour=channels != 1)
        frames = multi_focus(sharp, "blobs", sources, seed=rng, sigma=(1.5, 5.0), feather=1.5)
        samples.append(Sample(f"synthetic{i:03d}", frames))
    return samples


def load_samples(source: str | Path, info: ModelInfo, count: int, seed: int = 0) -> list[Sample]:
    """Samples from a pair folder, a video file or 'synthetic', shaped for the model ``info``
    (its number of sources, 2 when it takes any, and its channels)."""
    k = info.sources or 2
    if str(source) == SYNTHETIC:
        return synthetic_samples(count, sources=k, channels=info.channels, seed=seed)
    path = Path(source)
    if path.is_dir():
        if k != 2:
            raise ConfigError(f"model {info.model} takes {k} sources; a folder of pairs gives 2 (use a video or "
                              "'synthetic')")
        return pair_samples(path, info.channels)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return video_samples(path, count, k, info.channels)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise ConfigError(f"{path} is one image; give the folder that holds the pairs")
    if not path.exists():
        raise DataError(f"calibration data not found: {path} (give a folder of pairs, a video file or 'synthetic')")
    raise ConfigError(f"{path} is neither a folder of pairs, a video ({', '.join(VIDEO_SUFFIXES)}) nor 'synthetic'")


def split_holdout(samples: list[Sample], every: int = 4) -> tuple[list[Sample], list[Sample]]:
    """(calibration, held out): every ``every``-th sample is held out for the accuracy report."""
    held = samples[every - 1::every]
    kept = [s for i, s in enumerate(samples) if i % every != every - 1]
    return kept, held


# ----------------------------------------------------------------------------- arrays for the model


def to_input(sources: list[np.ndarray], info: ModelInfo) -> np.ndarray:
    """(1, K, C, H, W) float32 in [0, 1] from K uint8 images, cropped to multiples of the size multiple."""
    m = info.size_multiple
    height, width = sources[0].shape[:2]
    height, width = height // m * m, width // m * m
    if height == 0 or width == 0:
        raise DataError(f"images of {sources[0].shape[1]}x{sources[0].shape[0]} are smaller than the {m}x{m} "
                        f"model {info.model} needs")
    planes = [s[:height, :width].reshape(height, width, -1).transpose(2, 0, 1) for s in sources]
    return (np.stack(planes)[None].astype(np.float32) / 255.0)


def calibration_frames(samples: list[Sample], info: ModelInfo, count: int, crop: int = 256,
                       seed: int = 0) -> list[np.ndarray]:
    """``count`` model inputs, random crops of up to crop x crop pixels at the images' own scale
    (the blur that tells focus apart must not be resized away), cycling through the samples."""
    if count < 1:
        raise ConfigError(f"the number of calibration frames must be >= 1, not {count}")
    if len(samples) < MIN_SAMPLES:
        raise DataError(f"calibration needs at least {MIN_SAMPLES} distinct scenes, found {len(samples)} "
                        f"({', '.join(s.name for s in samples) or 'none'}); add pairs or use a longer video")
    return crops(samples, info, count, crop, seed)


def crops(samples: list[Sample], info: ModelInfo, count: int, crop: int = 256, seed: int = 0) -> list[np.ndarray]:
    """``count`` model inputs cropped at random places, cycling through ``samples``."""
    if crop < info.size_multiple:
        raise ConfigError(f"crop {crop} is smaller than the size multiple {info.size_multiple} of {info.model}")
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        sources = samples[i % len(samples)].sources
        height, width = sources[0].shape[:2]
        h, w = min(crop, height), min(crop, width)
        top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        frames.append(to_input([s[top:top + h, left:left + w] for s in sources], info))
    return frames


class FrameReader:
    """ONNX Runtime CalibrationDataReader over prepared frames; supports the strided collection
    (``__len__``/``set_range``) that keeps calibration memory to one frame at a time, and advances
    an optional progress bar (:class:`mfif.progress.Progress`)."""

    def __init__(self, frames: list[np.ndarray], input_name: str = "sources", progress=None):
        self.frames, self.input_name, self.progress = frames, input_name, progress
        self.set_range(0, len(frames))

    def get_next(self) -> dict | None:
        frame = next(self._iter, None)
        if frame is None:
            return None
        if self.progress is not None:
            self.progress.update(1)
        return {self.input_name: frame}

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item

    def __len__(self) -> int:
        return len(self.frames)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._iter = iter(self.frames[start_index:end_index])
