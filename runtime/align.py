"""Alignment of real captures before fusing: focus breathing, two-camera rigs, hand-held stacks.

Estimation (once per rig, or per frame set for stills and stacks) and application (every frame):

- :func:`estimate_rig` finds, for every source, the transform from the reference frame to that
  source and a per-channel gain and offset. Pairs: B to A (the output is in A's frame). Three or
  more frames (a stack): each frame to its neighbour, chained to the middle frame, because
  neighbouring focus planes look most alike. The geometry comes from OpenCV's ECC, coarse to fine
  on a pyramid that starts at half resolution, on grey images whose channels are each normalized
  to zero mean and unit deviation (so that a different exposure or white balance of a camera does
  not bias it); a phase correlation of the coarsest level starts it. Every estimate carries its
  ECC correlation and a residual; one that fails or is implausible falls back to identity with an
  :class:`AlignmentWarning` naming the source, never a wild warp.
- :class:`Warper` applies a :class:`Rig`: sampling maps computed once per transform, then one
  ``cv2.remap`` per source per frame into buffers reused across frames, photometric correction by
  a lookup table, and a coverage mask per source. Pixels a warped source does not cover are filled
  from the reference frame and get weight 0 in the fusion (see :class:`AlignStage`).
- A :class:`Rig` saves to and loads from a small versioned JSON file (``mfif align``).

The transforms are 3x3 matrices that map a pixel of the reference frame to where the same scene
point lies in the source (the sampling direction of ``cv2.remap``). OpenCV is imported when used.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from mfif.errors import ConfigError, InputError, RigError
from mfif.lazy import require

MODELS = ("translation", "similarity", "affine", "homography")
DEFAULT_MODEL = "similarity"   # focus breathing and most rigs; chosen by measurement (docs/alignment.md)
MODES = ("off", "each", "once")
# Resampling of the warped sources. Bicubic keeps 2.5 dB more of a sharp source than bilinear in
# the fused result but costs 4x as much (10.8 against 2.8 ms CPU for a 640x480 colour pair): stills
# and stacks ('each') use it, streams (a rig, 'once') bilinear, to stay within their frame budget.
# Measured by python -m mfif.benchmarks.alignment (docs/alignment.md).
INTERPOLATIONS = {"linear": "INTER_LINEAR", "cubic": "INTER_CUBIC", "lanczos": "INTER_LANCZOS4"}
RIG_FORMAT = "mfif-rig"
RIG_VERSION = 1

# Estimation. The pyramid starts at half resolution, or at full resolution where the half would be
# under MIN_FINEST_SIDE (small frames), and at most MAX_WORK_SIDE on the long side; it halves down to
# about MIN_WORK_SIDE. ECC runs on every level, coarse to fine.
MAX_WORK_SIDE = 1024
MIN_FINEST_SIDE = 256
MIN_WORK_SIDE = 96
PHOTOMETRIC_SMOOTHING = 4.0        # Gaussian sigma at the coarsest level before comparing values
ECC_ITERATIONS = (30, 10)          # coarsest level, finer levels
ECC_EPSILON = 1e-3
ECC_SMOOTHING = 5                  # ECC's own Gaussian pre-filter (kernel size)
PHASE_TRUSTED = 0.2                # phase correlation peak above which its shift alone starts ECC
MIN_ALIGN_SIDE = 16                # smaller frames are not aligned (identity, with a warning)
FLAT_DEVIATION = 2.0               # a frame whose channels all vary less than this (8-bit levels) is flat
# Fallback thresholds: a transform outside these is not a plausible camera motion between sources.
MIN_CORRELATION = 0.5
SCALE_RANGE = (0.8, 1.25)
MAX_ROTATION_DEG = 10.0
MAX_ANISOTROPY = 1.1               # ratio of the singular values of the linear part (affine, homography)
MAX_SHIFT = 0.2                    # corner displacement, as a fraction of the frame diagonal
MIN_OVERLAP = 0.5                  # fraction of the reference frame the source must cover
# A source whose corners all move less than REGISTERED_PX (full-resolution pixels) is already
# registered and is not warped; a gain and offset that change no value in 16..240 by more than
# REGISTERED_LEVELS (8-bit) are not applied. The estimates on the registered pair sets of
# ../shared/data stay below these (docs/alignment.md), so such pairs fuse bit-identically.
REGISTERED_PX = 0.5
REGISTERED_LEVELS = 2.0

# ECC's motion types; a similarity is estimated as an affine and projected (ECC has no similarity).
_ECC_MOTION = {"translation": "MOTION_TRANSLATION", "similarity": "MOTION_AFFINE", "affine": "MOTION_AFFINE",
               "homography": "MOTION_HOMOGRAPHY"}


class AlignmentWarning(UserWarning):
    """An estimate fell back to identity (flat frame, too little overlap, no convergence, an
    implausible transform); the message names the source and the reason."""


def _cv2():
    return require("cv2", extra="cpu", purpose="aligning frames")


# ---- transforms ------------------------------------------------------------------------------

def _corners(width: int, height: int) -> np.ndarray:
    return np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]], np.float64)


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points with a 3x3 matrix."""
    matrix = np.asarray(matrix, np.float64)
    mapped = points @ matrix[:2, :2].T + matrix[:2, 2]
    depth = points @ matrix[2, :2] + matrix[2, 2]
    return mapped / depth[:, None]


def corner_error(matrix: np.ndarray, other: np.ndarray, width: int, height: int) -> float:
    """RMS distance (pixels) between where two transforms put the four corners of a frame."""
    corners = _corners(width, height)
    return float(np.sqrt(((apply_matrix(matrix, corners) - apply_matrix(other, corners)) ** 2).sum(1).mean()))


def similarity_matrix(scale: float = 1.0, rotation_deg: float = 0.0, shift: tuple[float, float] = (0.0, 0.0),
                      center: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The 3x3 similarity that scales by ``scale`` and turns by ``rotation_deg`` about ``center``,
    then shifts by ``shift`` (pixels)."""
    angle = math.radians(rotation_deg)
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    cx, cy = center
    return np.array([[c, -s, cx + shift[0] - c * cx + s * cy],
                     [s, c, cy + shift[1] - s * cx - c * cy],
                     [0.0, 0.0, 1.0]])


def _halve(matrix: np.ndarray, levels: int) -> np.ndarray:
    """The matrix for images ``levels`` pyrDown steps smaller (pixel i there is pixel 2i here);
    negative ``levels`` go the other way."""
    factor = 2.0 ** -levels
    scale = np.diag([factor, factor, 1.0])
    return scale @ matrix @ np.diag([1 / factor, 1 / factor, 1.0])


def _project(matrix: np.ndarray, model: str, width: int, height: int) -> np.ndarray:
    """The transform of ``model`` nearest to ``matrix`` over a width x height frame: least squares
    on where both put the frame's corners and centre (so the fit holds across the frame, not only
    at the origin)."""
    matrix = np.asarray(matrix, np.float64) / matrix[2, 2]
    if model in ("affine", "homography"):
        return matrix if model == "homography" else np.vstack([matrix[:2], [0.0, 0.0, 1.0]])
    points = np.vstack([_corners(width, height), [[(width - 1) / 2, (height - 1) / 2]]])
    target = apply_matrix(matrix, points)
    result = np.eye(3)
    if model == "translation":
        result[:2, 2] = (target - points).mean(axis=0)
        return result
    x, y = points[:, 0], points[:, 1]
    ones, zeros = np.ones_like(x), np.zeros_like(x)
    # x' = a x - b y + tx,  y' = b x + a y + ty
    system = np.vstack([np.c_[x, -y, ones, zeros], np.c_[y, x, zeros, ones]])
    (a, b, tx, ty), *_ = np.linalg.lstsq(system, np.r_[target[:, 0], target[:, 1]], rcond=None)
    result[:2] = [[a, -b, tx], [b, a, ty]]
    return result


# ---- estimates and rigs ---------------------------------------------------------------------

@dataclass
class SourceTransform:
    """How one source maps onto the reference frame.

    ``matrix``: 3x3, maps a reference pixel to the source pixel showing the same point.
    ``gain``/``offset``: per channel (B, G, R or grey), in 8-bit levels: the corrected source is
    ``gain * source + offset``. ``correlation``: ECC correlation of the estimate (1 is perfect;
    for a stack frame, of its link to its neighbour). ``residual_px``: RMS distance between where
    the estimate puts the frame corners and where the estimate the other way round (source to
    reference) puts them back: how far two estimates disagree, in pixels. ``status``:
    'reference', 'aligned', 'registered' (close enough to identity to use as it is) or
    'fallback: <reason>'."""

    matrix: np.ndarray
    gain: tuple[float, ...] = ()
    offset: tuple[float, ...] = ()
    correlation: float | None = None
    residual_px: float | None = None
    status: str = "aligned"

    def __post_init__(self):
        self.matrix = np.asarray(self.matrix, np.float64).reshape(3, 3)

    @property
    def scale(self) -> float:
        """Magnification of the source relative to the reference (sqrt of the linear part's determinant)."""
        return float(math.sqrt(abs(np.linalg.det(self.matrix[:2, :2] / self.matrix[2, 2]))))

    @property
    def rotation_deg(self) -> float:
        m = self.matrix / self.matrix[2, 2]
        return float(math.degrees(math.atan2(m[1, 0] - m[0, 1], m[0, 0] + m[1, 1])))

    def shift(self, width: int, height: int) -> tuple[float, float]:
        """Where the reference frame's centre lies in the source, minus the centre (pixels)."""
        centre = np.array([[(width - 1) / 2, (height - 1) / 2]])
        dx, dy = (apply_matrix(self.matrix, centre) - centre)[0]
        return float(dx), float(dy)

    def displacement_px(self, width: int, height: int) -> float:
        """The largest distance a frame corner moves."""
        corners = _corners(width, height)
        return float(np.sqrt(((apply_matrix(self.matrix, corners) - corners) ** 2).sum(1)).max())

    def photometric_change(self) -> float:
        """The most the gain and offset change a value in 16..240 (8-bit levels)."""
        return max((abs((g - 1) * v + o) for g, o in zip(self.gain, self.offset) for v in (16.0, 240.0)), default=0.0)

    @property
    def geometric_identity(self) -> bool:
        return bool(np.array_equal(self.matrix, np.eye(3)))

    @property
    def photometric_identity(self) -> bool:
        return all(g == 1.0 for g in self.gain) and all(o == 0.0 for o in self.offset)

    def to_dict(self) -> dict:
        # Full precision: a loaded rig warps exactly like the estimated one.
        return {"matrix": [[float(v) for v in row] for row in self.matrix],
                "gain": [float(g) for g in self.gain], "offset": [float(o) for o in self.offset],
                "correlation": None if self.correlation is None else round(float(self.correlation), 6),
                "residual_px": None if self.residual_px is None else round(float(self.residual_px), 4),
                "status": self.status}


@dataclass
class Rig:
    """The transforms of a fixed set of sources (two cameras, the positions of a focus bracket, the
    frames of a stack): ``frame_size`` (width, height) and ``channels`` they were estimated on,
    the index of the ``reference`` source (its transform is the identity), the ``model``, and one
    :class:`SourceTransform` per source. Save with :meth:`save`, load with :meth:`load`."""

    frame_size: tuple[int, int]
    channels: int
    reference: int
    model: str
    sources: list[SourceTransform] = field(default_factory=list)
    path: Path | None = None   # where it was loaded from, for messages

    @property
    def count(self) -> int:
        return len(self.sources)

    def _name(self) -> str:
        return f"rig {self.path}" if self.path else "the rig"

    def check(self, frames: Sequence[np.ndarray]) -> None:
        """RigError unless ``frames`` match the sources and frame size the rig was made for."""
        if len(frames) != self.count:
            raise RigError(f"{self._name()} is for {self.count} sources, but {len(frames)} frames were given: "
                           "use the rig made for these sources (mfif align) or estimate a new one")
        height, width = frames[0].shape[:2]
        if (width, height) != tuple(self.frame_size):
            raise RigError(f"{self._name()} was made for {self.frame_size[0]}x{self.frame_size[1]} frames, but these "
                           f"are {width}x{height}: calibrate the rig at the resolution you fuse at")
        channels = 1 if frames[0].ndim == 2 else frames[0].shape[2]
        if channels != self.channels and not all(t.photometric_identity for t in self.sources):
            raise RigError(f"{self._name()} corrects {self.channels}-channel frames, but these have {channels} "
                           "channels: make the rig from frames like the ones you fuse")

    def to_dict(self) -> dict:
        return {"format": RIG_FORMAT, "version": RIG_VERSION, "frame_size": list(self.frame_size),
                "channels": self.channels, "reference": self.reference, "model": self.model,
                "matrix_maps": "reference pixel -> source pixel", "offset_units": "8-bit levels",
                "sources": [source.to_dict() for source in self.sources]}

    @classmethod
    def from_dict(cls, data: dict, path: Path | None = None) -> "Rig":
        where = f"rig file {path}" if path else "rig"
        if not isinstance(data, dict) or data.get("format") != RIG_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise RigError(f"{where} is not an mfif rig (format {found!r}, expected {RIG_FORMAT!r}); make one with mfif align")
        version = data.get("version")
        if version != RIG_VERSION:
            raise RigError(f"{where} has version {version!r}; this mfif reads rig version {RIG_VERSION}: "
                           "re-estimate the rig with this mfif (mfif align) or upgrade mfif")
        try:
            width, height = (int(v) for v in data["frame_size"])
            channels, reference, model = int(data["channels"]), int(data["reference"]), str(data["model"])
            sources = [SourceTransform(np.array(s["matrix"], np.float64), tuple(map(float, s.get("gain", ()))),
                                       tuple(map(float, s.get("offset", ()))), s.get("correlation"),
                                       s.get("residual_px"), str(s.get("status", "aligned")))
                       for s in data["sources"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise RigError(f"{where} is incomplete or malformed ({type(exc).__name__}: {exc}); re-create it with mfif align") from exc
        if model not in MODELS:
            raise RigError(f"{where} has model {model!r}; expected one of {', '.join(MODELS)}")
        if len(sources) < 2 or not 0 <= reference < len(sources):
            raise RigError(f"{where} has {len(sources)} sources and reference {reference}; a rig needs 2 or more "
                           "sources and a reference among them")
        if width < 1 or height < 1:
            raise RigError(f"{where} has frame size {width}x{height}")
        for index, source in enumerate(sources):
            if not np.isfinite(source.matrix).all() or abs(source.matrix[2, 2]) < 1e-12:
                raise RigError(f"{where}: the matrix of source {index} is not a valid transform: {source.matrix.tolist()}")
            if len(source.gain) != len(source.offset) or len(source.gain) not in (0, channels):
                raise RigError(f"{where}: source {index} has {len(source.gain)} gains and {len(source.offset)} offsets "
                               f"for {channels} channels")
        return cls((width, height), channels, reference, model, sources, path)

    def save(self, path: str | Path) -> Path:
        """Write the rig as JSON (atomically: a temporary file, then a rename)."""
        from mfif.files import write_bytes_atomic

        text = json.dumps(self.to_dict(), indent=2)
        # one line per matrix row and per short list of numbers: a rig file people read
        text = re.sub(r"\[\s+([-+\deE.,\s]+?)\s+\]", lambda m: "[" + ", ".join(v.strip(",") for v in m.group(1).split()) + "]", text)
        return write_bytes_atomic(path, (text + "\n").encode())

    @classmethod
    def load(cls, path: str | Path) -> "Rig":
        path = Path(path)
        if not path.is_file():
            raise RigError(f"rig file not found: {path}; make one with: mfif align SOURCES... -o {path.name}")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RigError(f"rig file {path} is not readable JSON ({exc}); re-create it with mfif align") from exc
        return cls.from_dict(data, path)

    def describe(self, names: Sequence[str] | None = None) -> str:
        """A table of the transforms and residuals, one source per row."""
        width, height = self.frame_size
        names = list(names) if names is not None else [f"source {k}" for k in range(self.count)]
        size = max(8, *(len(name) for name in names))
        rows = [f"{'source':<{size}} {'shift x':>8} {'shift y':>8} {'scale':>8} {'rot deg':>8} {'gain':>17} "
                f"{'corr':>6} {'resid px':>8}  status"]
        for name, source in zip(names, self.sources):
            dx, dy = source.shift(width, height)
            gain = "/".join(f"{g:.3f}" for g in source.gain) if source.gain else "-"
            corr = f"{source.correlation:.3f}" if source.correlation is not None else "-"
            resid = f"{source.residual_px:.3f}" if source.residual_px is not None else "-"
            rows.append(f"{name:<{size}} {dx:8.2f} {dy:8.2f} {source.scale:8.5f} {source.rotation_deg:8.3f} {gain:>17} "
                        f"{corr:>6} {resid:>8}  {source.status}")
        return "\n".join(rows)


# ---- estimation ------------------------------------------------------------------------------

def reference_index(count: int) -> int:
    """The reference of ``count`` sources: the first of a pair, the middle frame of a stack."""
    return (count - 1) // 2


class _Pyramid:
    """One frame prepared for estimation: per-channel normalized grey images from half resolution
    (full resolution for small frames) down to about MIN_WORK_SIDE (level 0 is the finest; ``first``
    is its pyrDown depth), and the coarsest level in colour for the photometric estimate."""

    def __init__(self, frame: np.ndarray):
        cv2 = _cv2()
        image = frame if frame.ndim == 2 or frame.shape[2] > 1 else frame[:, :, 0]
        if image.dtype != np.uint8:
            image = image.astype(np.float32) * np.float32(255.0)
        self.size = (image.shape[1], image.shape[0])
        self.first = 0
        while max(image.shape[:2]) > MAX_WORK_SIDE or (self.first == 0 and max(image.shape[:2]) >= 2 * MIN_FINEST_SIDE):
            image = cv2.pyrDown(image)
            self.first += 1
        mean, deviation = cv2.meanStdDev(image)
        self.deviation = float(deviation.max())
        weights = np.where(deviation[:, 0] > FLAT_DEVIATION / 4, 1.0 / np.maximum(deviation[:, 0], 1e-6), 0.0)
        weights /= max(1, int((weights > 0).sum()))
        image = image.astype(np.float32)
        grey = (image @ weights.astype(np.float32) if image.ndim == 3 else image * np.float32(weights[0]))
        grey -= np.float32((mean[:, 0] * weights).sum())
        self.levels = [grey]
        colour = image
        while max(self.levels[-1].shape) >= 2 * MIN_WORK_SIDE:
            self.levels.append(cv2.pyrDown(self.levels[-1]))
            colour = cv2.pyrDown(colour)
        self.colour = colour  # the coarsest level, float32 in 8-bit levels

    @property
    def flat(self) -> bool:
        return self.deviation < FLAT_DEVIATION


class _Fallback(Exception):
    pass


def _check_plausible(matrix: np.ndarray, width: int, height: int) -> None:
    """Raise _Fallback naming what makes ``matrix`` an implausible transform between two sources."""
    if not np.isfinite(matrix).all():
        raise _Fallback("the estimate is not finite")
    linear = matrix[:2, :2] / matrix[2, 2]
    singular = np.linalg.svd(linear, compute_uv=False)
    scale = math.sqrt(abs(np.linalg.det(linear)))
    rotation = math.degrees(math.atan2(linear[1, 0] - linear[0, 1], linear[0, 0] + linear[1, 1]))
    if np.linalg.det(linear) <= 0 or not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        raise _Fallback(f"implausible scale {scale:.3f} (expected {SCALE_RANGE[0]}-{SCALE_RANGE[1]})")
    if abs(rotation) > MAX_ROTATION_DEG:
        raise _Fallback(f"implausible rotation {rotation:.1f} degrees (at most {MAX_ROTATION_DEG:g})")
    if singular[0] / singular[1] > MAX_ANISOTROPY:
        raise _Fallback(f"implausible shear or stretch (singular values {singular[0]:.3f}, {singular[1]:.3f})")
    corners = _corners(width, height)
    mapped = apply_matrix(matrix, corners)
    moved = np.sqrt(((mapped - corners) ** 2).sum(1)).max()
    if moved > MAX_SHIFT * math.hypot(width, height):
        raise _Fallback(f"implausible displacement: a corner moves {moved:.0f} px")
    quad = mapped[[0, 1, 3, 2]].astype(np.float32)
    cv2 = _cv2()
    if not cv2.isContourConvex(quad):
        raise _Fallback("the transform folds the frame")
    frame = _corners(width, height)[[0, 1, 3, 2]].astype(np.float32)
    overlap, _ = cv2.intersectConvexConvex(frame, quad)
    if overlap < MIN_OVERLAP * (width - 1) * (height - 1):
        raise _Fallback(f"too little overlap ({overlap / ((width - 1) * (height - 1)):.0%} of the frame)")


def _ecc_level(cv2, template: np.ndarray, image: np.ndarray, matrix: np.ndarray, model: str,
               iterations: int) -> tuple[np.ndarray, float]:
    """One ECC run: the ``model`` transform from ``template`` pixels to ``image`` pixels, from ``matrix``."""
    warp = (matrix if model == "homography" else matrix[:2]).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations, ECC_EPSILON)
    try:
        correlation, warp = cv2.findTransformECC(template, image, warp, getattr(cv2, _ECC_MOTION[model]), criteria,
                                                 None, ECC_SMOOTHING)
    except cv2.error:
        raise _Fallback("ECC did not converge (the frames may show different scenes or barely overlap)") from None
    result = np.eye(3)
    result[:warp.shape[0]] = warp
    return _project(result, model, *template.shape[::-1]), float(correlation)


def _ecc(reference: _Pyramid, source: _Pyramid, model: str) -> tuple[np.ndarray, float, float | None]:
    """Coarse-to-fine ECC; returns (matrix at full resolution, correlation, residual_px). The
    finest level is estimated both ways (reference to source and back); the result is their mean
    and the residual the RMS distance between where they put the frame corners."""
    cv2 = _cv2()
    top = len(reference.levels) - 1
    coarse_ref, coarse_src = reference.levels[top], source.levels[top]
    window = cv2.createHanningWindow(coarse_ref.shape[::-1], cv2.CV_32F)
    # The coarsest level starts from the phase correlation's shift. Where its peak is weak (under
    # PHASE_TRUSTED; true matches measured 0.35-1.1, false ones under 0.06) it also starts from
    # identity, and the better match goes on.
    (dx, dy), response = cv2.phaseCorrelate(coarse_ref, coarse_src, window)
    shifted = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])
    plausible = abs(dx) < coarse_ref.shape[1] / 4 and abs(dy) < coarse_ref.shape[0] / 4
    if plausible and response >= PHASE_TRUSTED:
        starts = [shifted]
    else:
        starts = [np.eye(3)] + ([shifted] if plausible and math.hypot(dx, dy) > 0.5 else [])
    results, failure = [], None
    for start in starts:
        try:
            results.append(_ecc_level(cv2, coarse_ref, coarse_src, start, model, ECC_ITERATIONS[0]))
        except _Fallback as exc:
            failure = exc
    if not results:
        raise failure
    matrix, correlation = max(results, key=lambda result: result[1])
    for level in range(top - 1, -1, -1):
        matrix = _halve(matrix, -1)
        matrix, correlation = _ecc_level(cv2, reference.levels[level], source.levels[level], matrix, model,
                                         ECC_ITERATIONS[1])
    width, height = reference.size
    full = _halve(matrix, -reference.first)  # levels[0] is ``first`` pyrDown steps below full resolution
    try:
        backward, _ = _ecc_level(cv2, source.levels[0], reference.levels[0], np.linalg.inv(matrix), model,
                                 ECC_ITERATIONS[1])
        returned = _halve(np.linalg.inv(backward), -reference.first)
    except (_Fallback, np.linalg.LinAlgError):
        return full, correlation, None
    # The mean of the two directions: the bias the sources' different focus gives one direction
    # (its template is sharp where the other is blurred) is partly reversed in the other.
    residual = corner_error(full, returned, width, height)
    return _project((full + returned / returned[2, 2]) / 2, model, width, height), correlation, residual


def _photometric(reference: _Pyramid, source: _Pyramid, matrix: np.ndarray, channels: int) -> tuple[tuple, tuple]:
    """Per-channel gain and offset that map the source's values onto the reference's, from the
    deviations and means of both over their overlap at the coarsest level (smoothed further so that
    the sources' different focus does not read as contrast)."""
    cv2 = _cv2()
    depth = reference.first + len(reference.levels) - 1
    small = _halve(matrix, depth)
    ref, src = reference.colour, source.colour
    height, width = ref.shape[:2]
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpPerspective(src, small, (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.warpPerspective(np.ones(src.shape[:2], np.uint8), small, (width, height), flags=flags)
    inside = cv2.erode(inside, np.ones((5, 5), np.uint8))
    if inside.sum() < 0.25 * inside.size:
        return (1.0,) * channels, (0.0,) * channels
    ref_smooth = cv2.GaussianBlur(ref, (0, 0), PHOTOMETRIC_SMOOTHING).reshape(height, width, -1)
    src_smooth = cv2.GaussianBlur(warped, (0, 0), PHOTOMETRIC_SMOOTHING).reshape(height, width, -1)
    gains, offsets = [], []
    for c in range(channels):
        # Clipped values (near black or white in either source) do not follow gain * value + offset.
        usable = inside & cv2.inRange(ref_smooth[:, :, c], 8, 247) & cv2.inRange(src_smooth[:, :, c], 8, 247)
        if cv2.countNonZero(usable) < 0.1 * usable.size:
            usable = inside
        ref_mean, ref_dev = (float(v[0, 0]) for v in cv2.meanStdDev(ref_smooth[:, :, c], mask=usable))
        src_mean, src_dev = (float(v[0, 0]) for v in cv2.meanStdDev(src_smooth[:, :, c], mask=usable))
        gain = ref_dev / src_dev if min(ref_dev, src_dev) > FLAT_DEVIATION else 1.0
        gain = min(max(gain, 0.5), 2.0)
        gains.append(gain)
        offsets.append(ref_mean - gain * src_mean)
    return tuple(gains), tuple(offsets)


def _source_name(names: Sequence[str] | None, index: int, count: int) -> str:
    if names is not None:
        return f"{names[index]} (source {index})"
    return f"source {index} of {count}"


def _estimate_link(reference: _Pyramid, source: _Pyramid, model: str, name: str) -> SourceTransform:
    """The transform from the ``reference`` frame to ``source``, or identity (with a warning) when
    it cannot be estimated."""
    width, height = reference.size
    try:
        if min(width, height) < MIN_ALIGN_SIDE:
            raise _Fallback(f"the frames ({width}x{height}) are too small to align (at least {MIN_ALIGN_SIDE} px a side)")
        if reference.flat or source.flat:
            raise _Fallback(f"too little texture ({'reference' if reference.flat else 'this frame'} is flat)")
        matrix, correlation, residual = _ecc(reference, source, model)
        if correlation < MIN_CORRELATION:
            raise _Fallback(f"the frames do not match (ECC correlation {correlation:.2f} < {MIN_CORRELATION})")
        _check_plausible(matrix, width, height)
    except _Fallback as reason:
        warnings.warn(f"cannot align {name}: {reason}; using it unaligned (identity)", AlignmentWarning, stacklevel=3)
        return SourceTransform(np.eye(3), correlation=None, residual_px=None, status=f"fallback: {reason}")
    return SourceTransform(matrix, correlation=correlation, residual_px=residual)


def estimate_rig(frames: Sequence[np.ndarray], model: str = DEFAULT_MODEL, *, names: Sequence[str] | None = None,
                 photometric: bool = True) -> Rig:
    """Estimate the :class:`Rig` of a frame set (uint8 or float32 frames of one size, 2 or more).

    Two frames: B to A. More: each to its neighbour, chained to the middle frame. ``model`` is one
    of 'translation', 'similarity' (default), 'affine', 'homography'. ``names`` (one per frame)
    name the sources in warnings. ``photometric`` estimates a gain and offset per channel. A source
    whose estimate is within REGISTERED_PX of identity (and photometric identity) is marked
    'registered' and used as it is."""
    if model not in MODELS:
        raise ConfigError(f"alignment model must be one of {', '.join(MODELS)}, not {model!r}")
    count = len(frames)
    if count < 2:
        raise InputError(f"alignment needs at least 2 frames, got {count}")
    if names is not None and len(names) != count:
        raise InputError(f"{len(names)} names for {count} frames")
    shapes = {frame.shape for frame in frames}
    if len(shapes) != 1:
        raise InputError(f"frames to align differ in shape: {sorted(shapes)}")
    height, width = frames[0].shape[:2]
    channels = 1 if frames[0].ndim == 2 else frames[0].shape[2]
    reference = reference_index(count)
    pyramids = [_Pyramid(frame) for frame in frames]
    sources: list[SourceTransform | None] = [None] * count
    sources[reference] = SourceTransform(np.eye(3), (1.0,) * channels, (0.0,) * channels, status="reference")
    # Walk outwards from the reference: each frame is estimated against its neighbour nearer the middle.
    order = [(k, k + 1) for k in range(reference - 1, -1, -1)] + [(k, k - 1) for k in range(reference + 1, count)]
    for index, neighbour in order:
        link = _estimate_link(pyramids[neighbour], pyramids[index], model, _source_name(names, index, count))
        # reference pixel -> neighbour pixel -> this frame's pixel
        chained = _project(link.matrix @ sources[neighbour].matrix, model, width, height)
        sources[index] = replace(link, matrix=chained)
    for index, source in enumerate(sources):
        if index == reference:
            continue
        if photometric and not source.status.startswith("fallback"):  # no overlap known: nothing to compare
            source.gain, source.offset = _photometric(pyramids[reference], pyramids[index], source.matrix, channels)
        else:
            source.gain, source.offset = (1.0,) * channels, (0.0,) * channels
        _snap_registered(source, width, height)
    return Rig((width, height), channels, reference, model, list(sources))


def _snap_registered(source: SourceTransform, width: int, height: int) -> None:
    """Treat an estimate within the registration tolerance of identity as identity."""
    if source.displacement_px(width, height) < REGISTERED_PX and not source.geometric_identity:
        source.matrix = np.eye(3)
        if source.status == "aligned":
            source.status = "registered"
    if source.photometric_change() < REGISTERED_LEVELS:
        source.gain, source.offset = (1.0,) * len(source.gain), (0.0,) * len(source.offset)


# ---- application -----------------------------------------------------------------------------

def _plane(array: np.ndarray) -> np.ndarray:
    """An HxWx1 array as its HxW view (OpenCV returns HxW for one channel)."""
    return array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array


class Warper:
    """Applies a :class:`Rig` to frame sets. The sampling maps, lookup tables and coverage masks
    are made once here; :meth:`apply` then does per source one ``cv2.remap`` (fixed-point maps;
    ``interpolation`` 'linear', 'cubic' or 'lanczos') into a buffer reused across frames, the gain and offset (a lookup table for uint8), and
    fills the pixels the source does not cover from the reference frame. Sources that need nothing
    (the reference, registered ones) are passed through untouched.

    ``coverage``: float32 (K, H, W), 1 where a source covers the reference frame and 0 where it
    does not; None when every source covers all of it."""

    def __init__(self, rig: Rig, interpolation: str = "linear"):
        cv2 = _cv2()
        if interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, not {interpolation!r}")
        self.rig = rig
        self.interpolation = interpolation
        self._flag = getattr(cv2, INTERPOLATIONS[interpolation])
        width, height = rig.frame_size
        count = rig.count
        self._maps: list[tuple | None] = [None] * count
        self._uncovered: list[np.ndarray | None] = [None] * count
        self._buffers: list[np.ndarray | None] = [None] * count
        self._luts: list[np.ndarray | None] = [None] * count
        self._float_photometric: list[tuple | None] = [None] * count
        coverage = None
        columns = np.arange(width, dtype=np.float32)[None, :]   # broadcast against rows: no meshgrid
        rows = np.arange(height, dtype=np.float32)[:, None]
        for k, source in enumerate(rig.sources):
            if k == rig.reference:
                continue
            if not source.photometric_identity:
                levels = np.arange(256, dtype=np.float64)[:, None] * np.array(source.gain) + np.array(source.offset)
                self._luts[k] = np.clip(np.rint(levels), 0, 255).astype(np.uint8).reshape(256, 1, -1)
                self._float_photometric[k] = (np.array(source.gain, np.float32),
                                              np.array(source.offset, np.float32) / np.float32(255.0))
            if source.geometric_identity:
                continue
            m = (source.matrix / source.matrix[2, 2]).astype(np.float32)
            map_x = (m[0, 0] * columns + m[0, 2]) + m[0, 1] * rows
            map_y = (m[1, 0] * columns + m[1, 2]) + m[1, 1] * rows
            if m[2, 0] or m[2, 1]:  # a homography
                depth = (m[2, 0] * columns + 1.0) + m[2, 1] * rows
                map_x /= depth
                map_y /= depth
            tolerance = 1e-3
            inside = ((map_x >= -tolerance) & (map_x <= width - 1 + tolerance) &
                      (map_y >= -tolerance) & (map_y <= height - 1 + tolerance))
            self._maps[k] = cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)
            if not inside.all():
                self._uncovered[k] = (~inside).astype(np.uint8)
                if coverage is None:
                    coverage = np.ones((count, height, width), np.float32)
                coverage[k] = inside
        self.coverage = coverage
        self._total = np.empty((height, width), np.float32) if coverage is not None else None

    @property
    def identity(self) -> bool:
        """True when applying the rig changes nothing."""
        return all(m is None for m in self._maps) and all(lut is None for lut in self._luts)

    def _buffer(self, k: int, frame: np.ndarray) -> np.ndarray:
        buffer = self._buffers[k]
        if buffer is None or buffer.shape != frame.shape or buffer.dtype != frame.dtype:
            buffer = self._buffers[k] = np.empty_like(frame)
        return buffer

    def apply(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The frames in the reference's frame: a list holding the untouched frames and, for the
        sources that move or change, this warper's buffers (overwritten by the next call)."""
        cv2 = _cv2()
        reference = frames[self.rig.reference]
        aligned = list(frames)
        for k, frame in enumerate(frames):
            maps, lut = self._maps[k], self._luts[k]
            if maps is None and lut is None:
                continue
            buffer = self._buffer(k, frame)
            target, source = _plane(buffer), _plane(frame)
            if maps is not None:
                cv2.remap(source, maps[0], maps[1], self._flag, dst=target, borderMode=cv2.BORDER_REPLICATE)
                if frame.dtype != np.uint8 and self.interpolation != "linear":
                    np.clip(target, 0.0, 1.0, out=target)  # bicubic and Lanczos overshoot at edges
                source = target
            if lut is not None:
                if frame.dtype == np.uint8:
                    cv2.LUT(source, lut if target.ndim == 3 else lut[:, :, :1], dst=target)
                else:  # float32 frames in [0, 1]
                    gain, offset = self._float_photometric[k]
                    np.multiply(source, gain, out=target)
                    target += offset
                    np.clip(target, 0.0, 1.0, out=target)
            if self._uncovered[k] is not None:
                cv2.copyTo(_plane(reference), self._uncovered[k], dst=target)
            aligned[k] = buffer
        return aligned

    def mask_weights(self, weights: np.ndarray, region: tuple[slice, slice] = (slice(None), slice(None))) -> None:
        """Zero the weights (K, H, W view, float32) where a source does not cover the frame and
        renormalize them to sum to 1 over K, in place. ``region``: the rows and columns of the
        frame the weights cover (a tile)."""
        if self.coverage is None:
            return
        weights *= self.coverage[(slice(None), *region)]
        # A pixel where only uncovered sources had weight (a softmax can give exactly 0) goes to the
        # reference, which covers everything.
        weights[self.rig.reference] += np.float32(1e-6)
        total = np.sum(weights, axis=0, out=self._total[region])
        weights /= total

    def common_area(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) of a large axis-aligned rectangle that every source covers."""
        width, height = self.rig.frame_size
        if self.coverage is None:
            return 0, 0, width, height
        covered = self.coverage.min(axis=0) > 0
        top, bottom, left, right = 0, height, 0, width
        while top < bottom and left < right:
            area = covered[top:bottom, left:right]
            misses = [(~area[0]).sum(), (~area[-1]).sum(), (~area[:, 0]).sum(), (~area[:, -1]).sum()]
            worst = int(np.argmax(misses))
            if misses[worst] == 0:
                break
            if worst == 0:
                top += 1
            elif worst == 1:
                bottom -= 1
            elif worst == 2:
                left += 1
            else:
                right -= 1
        return left, top, max(0, right - left), max(0, bottom - top)


class AlignStage:
    """The alignment stage of a :class:`~mfif.runtime.Fuser` (``Fuser(align=...)``).

    ``align``: 'off'; 'each' (estimate on every frame set: stills, stacks); 'once' (estimate on the
    first frame set, then keep it: a rig, a bracketing camera); a rig file path; or a :class:`Rig`.
    ``model``: the transform model estimated ('similarity' by default). ``interpolation``: None
    picks 'cubic' for 'each' and 'linear' for the fixed transforms of streams (see INTERPOLATIONS)."""

    def __init__(self, align: str | Path | Rig = "off", model: str = DEFAULT_MODEL, interpolation: str | None = None):
        if model not in MODELS:
            raise ConfigError(f"alignment model must be one of {', '.join(MODELS)}, not {model!r}")
        if interpolation is not None and interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, not {interpolation!r}")
        self.model = model
        self._interpolation = interpolation
        self.names: Sequence[str] | None = None   # names of the sources, for warnings
        self.rig: Rig | None = None
        self._warper: Warper | None = None
        if isinstance(align, Rig):
            self.mode, self.rig = "rig", align
        elif isinstance(align, (str, Path)) and str(align) in MODES:
            self.mode = str(align)
        elif isinstance(align, (str, Path)) and (Path(align).suffix.lower() == ".json" or Path(align).is_file()):
            self.mode, self.rig = "rig", Rig.load(align)
        else:
            raise ConfigError(f"align must be 'off', 'each', 'once', a rig file (.json) or a Rig, not {align!r}")

    @property
    def active(self) -> bool:
        return self.mode != "off"

    def realign(self) -> None:
        """Estimate afresh from the next frame set (and keep that, unless the mode is 'each')."""
        if self.mode == "off":
            raise ConfigError("alignment is off for this Fuser; make it with align='once' or 'each' to realign")
        self.rig, self._warper = None, None

    def for_another_thread(self) -> "AlignStage":
        """The same settings and rig, with buffers of its own."""
        twin = AlignStage("off", self.model, self._interpolation)
        twin.mode, twin.rig = self.mode, self.rig
        return twin

    @property
    def interpolation(self) -> str:
        if self._interpolation is not None:
            return self._interpolation
        return "cubic" if self.mode == "each" else "linear"

    @interpolation.setter
    def interpolation(self, value: str | None) -> None:
        if value is not None and value not in INTERPOLATIONS:
            raise ConfigError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, not {value!r}")
        self._interpolation = value
        self._warper = None

    @property
    def warper(self) -> Warper | None:
        return self._warper

    def __call__(self, frames: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
        if self.mode == "off":
            return frames
        if self.rig is None or self.mode == "each":
            names = self.names if self.names is not None and len(self.names) == len(frames) else None
            self.rig = estimate_rig(frames, self.model, names=names)
        else:
            self.rig.check(frames)
        if self._warper is None or self._warper.rig is not self.rig:
            previous = self._warper
            self._warper = Warper(self.rig, self.interpolation)
            if previous is not None:   # keep the frame buffers of the previous transforms
                self._warper._buffers = previous._buffers
        return frames if self._warper.identity else self._warper.apply(frames)

    @property
    def coverage(self) -> np.ndarray | None:
        """float32 (K, H, W): 1 where a source covers the reference frame; None if all do (or off)."""
        return None if self._warper is None or self.mode == "off" else self._warper.coverage

    def mask_weights(self, weights: np.ndarray, region: tuple[slice, slice] = (slice(None), slice(None))) -> None:
        """Zero the weights (K, H, W) where a source does not cover the frame (``region``: the part
        of the frame they cover); renormalize."""
        if self.coverage is not None:
            self._warper.mask_weights(weights, region)

    def common_area(self) -> tuple[int, int, int, int] | None:
        """The rectangle (x, y, width, height) every source covers, after the latest frame set."""
        return None if self._warper is None or self.mode == "off" else self._warper.common_area()
