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


def image_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header, without decoding; None for other formats or a
    header that cannot be read (decoding then reports the problem)."""
    raw = data[:1 << 16].tobytes()
    if raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) >= 24:
        return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    if raw[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 9 <= len(raw) and raw[position] == 0xFF:
        marker = raw[position + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame segment
            return int.from_bytes(raw[position + 7:position + 9], "big"), int.from_bytes(raw[position + 5:position + 7], "big")
        position += 2 + int.from_bytes(raw[position + 2:position + 4], "big")
    return None


def read_image(path: str | Path, mode: str = "unchanged", max_pixels: int | None = None) -> np.ndarray:
    """Read an image as uint8: ``mode`` is 'unchanged' (grey stays HxW, colour is HxWx3 BGR),
    'grey' (HxW) or 'colour' (HxWx3 BGR). An alpha channel is dropped; 16-bit is scaled to 8.
    ``max_pixels`` refuses larger images before decoding them (PNG and JPEG; after decoding for
    other formats)."""
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
    size = image_size(data)
    if max_pixels and size and size[0] * size[1] > max_pixels:
        _too_large(path, *size, max_pixels)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except (MemoryError, cv2.error) as exc:
        what = f" of {size[0]}x{size[1]} pixels" if size else ""
        raise DataError(f"cannot decode image {path}{what}: {str(exc).strip().splitlines()[-1] or 'out of memory'}; "
                        "downscale it, or free memory") from exc
    if max_pixels and image is not None and image.shape[0] * image.shape[1] > max_pixels:
        _too_large(path, image.shape[1], image.shape[0], max_pixels)
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


def _too_large(path: Path, width: int, height: int, max_pixels: int) -> None:
    raise DataError(f"image {path} is {width}x{height} ({width * height / 1e6:.1f} megapixels), over the limit of "
                    f"{max_pixels / 1e6:.1f} megapixels (max_pixels={max_pixels}); downscale it or raise the limit")


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


def list_images(folder: str | Path) -> list[Path]:
    """The image files in ``folder`` (a focus stack), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"stack folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass(frozen=True)
class Pair:
    """One multi-focus pair: two sources and an optional ground truth, named ``<name>_A.*``,
    ``<name>_B.*``, ``<name>_GT.*`` (the shared layout) or ``<name>_1.*``, ``<name>_2.*`` (the
    numbered layout of the Liu 2020 reference set)."""

    name: str
    a: Path
    b: Path
    ground_truth: Path | None = None


def find_pairs(folder: str | Path) -> list[Pair]:
    """All pairs in ``folder``, sorted by name, in the shared layout or (when the folder has no
    ``_A``/``_B`` files) the numbered one; a ground truth ``<name>_GT.*`` (or ``_gt``) is optional.
    A source without its partner is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"pair folder not found: {folder}")
    roles: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and "_" in path.stem:
            name, role = path.stem.rsplit("_", 1)
            roles.setdefault(name, {})[role.upper()] = path
    found_roles = {role for parts in roles.values() for role in parts}
    first, second = ("1", "2") if found_roles & {"1", "2"} and not found_roles & {"A", "B"} else ("A", "B")
    pairs = []
    for name, parts in sorted(roles.items()):
        if not parts.keys() & {first, second, "GT"}:
            continue
        missing = [role for role in (first, second) if role not in parts]
        if missing:
            have = ", ".join(p.name for p in parts.values())
            raise DataError(f"pair '{name}' in {folder} lacks its _{missing[0]} image (found: {have}): add or remove it")
        pairs.append(Pair(name, parts[first], parts[second], parts.get("GT")))
    if not pairs:
        raise DataError(f"no pairs named <name>_A.<ext> / <name>_B.<ext> (or <name>_1 / <name>_2) in {folder}")
    return pairs


def read_pair(pair: Pair, mode: str = "unchanged") -> tuple[list[np.ndarray], np.ndarray | None]:
    """A pair's two sources, read as ``mode`` says (see :func:`read_image`), and its ground truth
    in the sources' mode (None without one). Images of different sizes or modes are a DataError
    naming both."""
    a, b = read_image(pair.a, mode), read_image(pair.b, mode)
    if a.shape != b.shape:
        raise DataError(f"pair '{pair.name}': {pair.a.name} is {_size(a)} but {pair.b.name} is {_size(b)}; "
                        "both sources of a pair must have one size and one mode (grey or colour)")
    truth = None
    if pair.ground_truth is not None:
        truth = read_image(pair.ground_truth, "grey" if a.ndim == 2 else "colour")
        if truth.shape != a.shape:
            raise DataError(f"pair '{pair.name}': its ground truth {pair.ground_truth.name} is {_size(truth)}, the "
                            f"sources are {_size(a)}")
    return [a, b], truth


def write_pair(folder: str | Path, name: str, sources: list[np.ndarray], truth: np.ndarray | None = None,
               roles: tuple[str, str] = ("A", "B"), suffix: str = ".png") -> list[Path]:
    """Write a pair in the layout :func:`find_pairs` reads: ``<name>_A``, ``<name>_B`` (or other
    ``roles``) and ``<name>_GT`` when ``truth`` is given."""
    folder = Path(folder)
    paths = [write_image(folder / f"{name}_{role}{suffix}", image) for role, image in zip(roles, sources)]
    if truth is not None:
        paths.append(write_image(folder / f"{name}_GT{suffix}", truth))
    return paths


def _size(image: np.ndarray) -> str:
    """'640x480 colour' (width x height, then grey or colour)."""
    return f"{image.shape[1]}x{image.shape[0]} {'colour' if image.ndim == 3 else 'grey'}"
