"""enfuse, the focus-stacking tool many users already have, as an outside method.

It runs ``enfuse --exposure-weight=0 --saturation-weight=0 --contrast-weight=1 --hard-mask``
(weights from local contrast only, each pixel's weight from the sharpest frame, Laplacian-pyramid
blending) on image files or on numpy frames. Install it with ``apt-get install enfuse`` (Debian,
Ubuntu) or ``brew install enblend-enfuse`` (macOS).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mfif.errors import BackendUnavailableError, DataError, InputError
from mfif.lazy import require

FOCUS_STACK_ARGS = ("--exposure-weight=0", "--saturation-weight=0", "--contrast-weight=1", "--hard-mask")
# enfuse's local-contrast window (--contrast-window-size, default 5) must fit in the image.
MIN_SIZE = 5
TIMEOUT_S = 600.0


def find_enfuse() -> str:
    """Path of the enfuse program, or BackendUnavailableError saying how to install it."""
    path = shutil.which("enfuse")
    if path is None:
        raise BackendUnavailableError("the 'enfuse' program is not installed (not found on PATH): install it "
                                      "with 'sudo apt-get install enfuse' (Debian/Ubuntu) or 'brew install "
                                      "enblend-enfuse' (macOS), or leave 'enfuse' out of the methods")
    return path


def available() -> bool:
    return shutil.which("enfuse") is not None


def fuse_files(inputs: Sequence[str | Path], output: str | Path, extra_args: Sequence[str] = ()) -> Path:
    """Fuse image files into ``output`` (its suffix picks the format; enfuse adds an alpha
    channel) with the focus-stacking options."""
    program = find_enfuse()
    inputs = [Path(p) for p in inputs]
    if len(inputs) < 2:
        raise InputError(f"enfuse needs at least 2 input images; got {len(inputs)}")
    for path in inputs:
        if not path.is_file():
            raise DataError(f"enfuse input not found: {path}")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [program, "--verbose=0", *FOCUS_STACK_ARGS, *extra_args, "-o", str(output), *map(str, inputs)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise DataError(f"enfuse did not finish within {TIMEOUT_S:g} s on {', '.join(map(str, inputs))}") from exc
    if done.returncode != 0 or not output.is_file():
        message = " ".join(line.strip() for line in (done.stderr or done.stdout).splitlines()[-4:])
        raise DataError(f"enfuse failed (exit code {done.returncode}) on {', '.join(map(str, inputs))}: {message}")
    return output


def fuse(frames: Sequence[np.ndarray]) -> np.ndarray:
    """Fuse numpy frames (the baselines' convention: grey or BGR, uint8 or float in [0, 1], one
    shape, at least 5x5 pixels); returns the shape and dtype of the frames. Float frames travel
    as 16-bit images."""
    from mfif.evaluation.baselines import as_stack

    cv2 = require("cv2", extra="eval", purpose="passing frames to enfuse")

    as_stack(frames)  # the shared input checks (count, shapes, dtypes, NaN, range)
    first = frames[0]
    height, width = first.shape[:2]
    channels = first.shape[2] if first.ndim == 3 else 1
    if min(height, width) < MIN_SIZE:
        raise InputError(f"enfuse needs frames of at least {MIN_SIZE}x{MIN_SIZE} pixels (its contrast window); "
                         f"got {height}x{width}")
    if channels not in (1, 3):
        raise InputError(f"enfuse takes grey or 3-channel colour frames; got {channels} channels")
    is_float = first.dtype != np.uint8
    with tempfile.TemporaryDirectory(prefix="mfif-enfuse-") as folder:
        paths = []
        for index, frame in enumerate(frames):
            data = frame.reshape(height, width, channels)
            if is_float:
                data = np.rint(np.clip(data, 0.0, 1.0) * 65535.0).astype(np.uint16)
            path = Path(folder) / f"frame{index}.png"
            if not cv2.imwrite(str(path), data):
                raise DataError(f"cannot write the temporary frame {path} for enfuse")
            paths.append(path)
        # PNG: OpenCV misreads enfuse's 16-bit grey TIFF; a grey+alpha PNG arrives as BGRA.
        output = fuse_files(paths, Path(folder) / "fused.png")
        fused = cv2.imread(str(output), cv2.IMREAD_UNCHANGED)
    if fused is None:
        raise DataError("enfuse wrote an output image that OpenCV cannot read")
    if fused.ndim == 3:
        fused = fused[:, :, 0] if channels == 1 else fused[:, :, :3]
    if fused.shape[:2] != (height, width):
        raise DataError(f"enfuse returned a {fused.shape[1]}x{fused.shape[0]} image for {width}x{height} frames")
    if is_float:
        return (fused.astype(np.float64) / 65535.0).astype(first.dtype).reshape(first.shape)
    return fused.astype(np.uint8).reshape(first.shape)
