"""Image files and pair folders. Images at the boundary are numpy uint8 arrays, HxW (grey) or
HxWx3 in OpenCV's BGR order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfif.errors import ConfigError, DataError
from mfif.files import check_writable_folder, write_bytes_atomic
from mfif.lazy import require

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def _cv2():
    return require("cv2", extra="cpu", purpose="reading and writing images")


def read_image(path: str | Path, mode: str = "unchanged") -> np.ndarray:
    """Read an image as uint8: ``mode`` is 'unchanged' (grey stays HxW, colour is HxWx3 BGR),
    'grey' (HxW) or 'colour' (HxWx3 BGR). An alpha channel is dropped; 16-bit is scaled to 8."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    cv2 = _cv2()
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    if jpeg_is_truncated(data):
        raise DataError(f"image {path} is a truncated JPEG ({data.size} bytes, no end-of-image marker after its "
                        "last scan): the file was cut short while copying or writing; copy it again")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise DataError(f"cannot decode image {path} ({data.size} bytes): not an image or corrupted")
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataError(f"image {path} has sample type {image.dtype}; 8- or 16-bit images are supported")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if mode == "grey" and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif mode == "colour" and image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif mode not in ("unchanged", "grey", "colour"):
        raise ValueError(f"mode must be 'unchanged', 'grey' or 'colour', not {mode!r}")
    return np.ascontiguousarray(image)


def jpeg_is_truncated(data: np.ndarray) -> bool:
    """True for JPEG bytes cut short: no end-of-image marker (FF D9) after the last start-of-scan
    (FF DA). OpenCV 4.x decodes such files without an error and fills the missing rows with grey
    or black. Markers cannot occur inside the entropy-coded data (an FF there is stuffed with 00),
    so an embedded thumbnail's end marker, which comes before the main scans, does not count."""
    if data.size < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return False
    raw = data.tobytes()
    return raw.rfind(b"\xff\xd9") < raw.rfind(b"\xff\xda")


def check_image_output(path: str | Path) -> Path:
    """Fail early, before any fusing, when ``path`` cannot be written: a suffix OpenCV has no
    writer for, or a folder that cannot be created or written to."""
    path = Path(path)
    if not path.suffix:
        raise ConfigError(f"output image {path} has no suffix: add one such as .png, .tif or .jpg")
    if path.suffix.lower() not in IMAGE_SUFFIXES or not _cv2().haveImageWriter(str(path)):
        raise ConfigError(f"cannot write images of type {path.suffix!r} ({path}): use one of "
                          f"{', '.join(s for s in IMAGE_SUFFIXES if _cv2().haveImageWriter('x' + s))}")
    check_writable_folder(path.parent)
    return path


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write a uint8 image atomically (a temporary name, then a rename: a failure never leaves a
    truncated file nor destroys an earlier one); the suffix picks the format. Creates the parent
    folder."""
    path = Path(path)
    cv2 = _cv2()
    suffix = path.suffix or ".png"
    # PNG: zlib level 1, faster to write than OpenCV's default level 3 and still lossless.
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1] if suffix.lower() == ".png" else []
    try:
        ok, encoded = cv2.imencode(suffix, image, params)
    except cv2.error as exc:
        raise DataError(f"cannot encode an image of shape {image.shape} and dtype {image.dtype} as {suffix!r} "
                        f"for {path}: {str(exc).strip().splitlines()[-1]}") from exc
    if not ok:
        raise DataError(f"cannot encode an image of shape {image.shape} and dtype {image.dtype} as {suffix!r}")
    return write_bytes_atomic(path, encoded)


@dataclass(frozen=True)
class Pair:
    """One multi-focus pair in the shared layout: ``<name>_A.*``, ``<name>_B.*`` and an
    optional ground truth ``<name>_GT.*`` (or ``<name>_gt.*``)."""

    name: str
    a: Path
    b: Path
    ground_truth: Path | None = None


def find_pairs(folder: str | Path) -> list[Pair]:
    """All pairs in ``folder``, sorted by name. A source without its partner is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"pair folder not found: {folder}")
    parts: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or "_" not in path.stem:
            continue
        name, role = path.stem.rsplit("_", 1)
        role = role.upper()
        if role in ("A", "B", "GT"):
            parts.setdefault(name, {})[role] = path
    pairs = []
    for name, found in sorted(parts.items()):
        missing = [role for role in ("A", "B") if role not in found]
        if missing:
            have = ", ".join(str(p.name) for p in found.values())
            raise DataError(f"pair '{name}' in {folder} lacks its _{missing[0]} image (found: {have})")
        pairs.append(Pair(name, found["A"], found["B"], found.get("GT")))
    if not pairs:
        raise DataError(f"no pairs named <name>_A.<ext> / <name>_B.<ext> in {folder}")
    return pairs
