"""Measures of image sequences (fused video): numpy only."""

from __future__ import annotations

import numpy as np

from mfif.errors import InputError


def flicker(frames) -> float:
    """Temporal flicker of a sequence: the mean absolute difference between consecutive frames, in
    the frames' own units (grey levels for uint8). For a static scene a fused video should flicker
    no more than its sources do."""
    total, count, previous = 0.0, 0, None
    for frame in frames:
        current = np.asarray(frame, dtype=np.float32)
        if previous is not None:
            if current.shape != previous.shape:
                raise InputError(f"flicker needs frames of one shape; frame {count + 1} is {current.shape}, the one "
                                 f"before it {previous.shape}")
            total += float(np.abs(current - previous).mean())
            count += 1
        previous = current
    if not count:
        raise InputError("flicker needs at least 2 frames")
    return total / count
