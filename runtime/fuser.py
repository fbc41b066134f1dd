"""``runtime.Fuser``: OpenCV frames in, one all-in-focus frame out.

The per-frame path reuses buffers made for the current frame geometry (the backend's input
buffer, output staging, padding indices), so a camera loop allocates nothing big per frame, and
every step is a handful of vectorized numpy calls: scale and transpose straight into the backend's
(1, K, C, H, W) float32 input (pinned memory on a GPU), pad to the model's size multiple by
reflection at the bottom and right edges (so nothing shifts), run, then crop, round and transpose
back from the backend's output views.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mfif.errors import ConfigError, InferenceError, InputError
from mfif.runtime.align import DEFAULT_MODEL as DEFAULT_ALIGN_MODEL
from mfif.runtime.align import AlignStage, Rig
from mfif.runtime.backends import load_backend
from mfif.runtime.backends.base import BACKEND_STAGES, Backend
from mfif.runtime.model_info import ModelInfo
from mfif.runtime.device_frames import is_device_frame
from mfif.runtime.gpu_fuse import fuse_on_gpu

STAGES = ("preprocess", *BACKEND_STAGES, "postprocess")
# Working memory of a fuse call, in bytes per (padded) pixel and source, beyond the frames and the
# output: the float32 planar sources, the model's activations and the output staging. Measured with
# the shipped focusmap on ONNX Runtime (CPU): 109-118 bytes per pixel for a pair of 6-16 megapixels.
WORKING_BYTES_PER_PIXEL_PER_SOURCE = 60
DEFAULT_MEMORY_LIMIT = 1.25 * 2**30
LUMA = (0.114, 0.587, 0.299)   # BGR weights of ITU-R BT.601 luma, as cv2.COLOR_BGR2GRAY uses
CB_SCALE, CR_SCALE = 0.564, 0.713  # Cb = 0.564 (B - Y), Cr = 0.713 (R - Y)
FLOAT_TOLERANCE = 1.0 / 255.0   # float frames may stray this far outside [0, 1] (rounding)


@dataclass(frozen=True)
class Stats:
    """Timings of the fuse calls, in milliseconds per stage, like jetson-inference's profiler.

    ``last_ms`` is the latest frame, ``mean_ms`` the mean over the last ``window`` frames, and
    ``fps`` = 1000 / mean total: what the fuser alone sustains (a stream's own rate also counts
    capture and the consumer). Stages a backend does not have (no transfers on a CPU) read 0."""

    frames: int
    window: int
    last_ms: dict[str, float]
    mean_ms: dict[str, float]
    fps: float

    def __str__(self) -> str:
        if not self.frames:
            return "no frames fused yet"
        rows = [f"{'stage':<12} {'last ms':>9} {'mean ms':>9}"]
        rows += [f"{stage:<12} {self.last_ms[stage]:9.2f} {self.mean_ms[stage]:9.2f}" for stage in (*STAGES, "total")]
        rows.append(f"{self.fps:.1f} fused frames/s over the last {min(self.frames, self.window)} frames")
        return "\n".join(rows)


class _Plan:
    """Buffers and padding indices for one frame geometry; rebuilt only when the geometry changes."""

    def __init__(self, key: tuple, info: ModelInfo, backend: Backend):
        count, height, width, frame_channels, dtype = key
        self.key = key
        self.count, self.height, self.width = count, height, width
        self.frame_channels, self.dtype = frame_channels, dtype
        model_channels = info.channels or frame_channels
        # How frame channels meet model channels: as they are, grey copied to 3, or colour by luma.
        if model_channels == frame_channels:
            self.mode = "direct"
        elif frame_channels == 1 and model_channels == 3:
            self.mode = "grey_to_colour"
        elif frame_channels == 3 and model_channels == 1:
            self.mode = "luma"
        else:
            raise InputError(f"model {info.model} takes {model_channels}-channel frames; got {frame_channels} channels")
        self.channels = model_channels
        multiple = info.pad_to
        self.padded_height = -(-height // multiple) * multiple
        self.padded_width = -(-width // multiple) * multiple
        shape = (1, count, model_channels, self.padded_height, self.padded_width)
        self.sources = backend.input_buffer(shape)  # preprocess writes every element, padding included
        self.staging = np.empty((model_channels, self.padded_height, self.padded_width), np.float32)
        self.plane = np.empty((height, width), np.float32)
        # Reflection (without repeating the edge) for the rows and columns added at the bottom/right;
        # clipped so that a frame thinner than the padding repeats its edge instead.
        self.pad_rows = np.clip(2 * height - 2 - np.arange(height, self.padded_height), 0, height - 1)
        self.pad_cols = np.clip(2 * width - 2 - np.arange(width, self.padded_width), 0, width - 1)
        self.smoothed: np.ndarray | None = None  # the EMA of the weight maps, for temporal smoothing
        self.fresh: np.ndarray | None = None
        self.product: np.ndarray | None = None


def _describe(frame) -> str:
    if isinstance(frame, np.ndarray):
        return f"shape {frame.shape} {frame.dtype}"
    return f"a {type(frame).__name__}"


def check_frames(frames: Sequence[np.ndarray]) -> tuple[int, int, int, int, np.dtype]:
    """Validate a set of frames; return (count, height, width, channels, dtype)."""
    if isinstance(frames, np.ndarray) and frames.ndim != 4:
        raise InputError(f"fuse() takes a list of frames (or one K x H x W x C stack), got one array of "
                         f"{_describe(frames)}; for two frames call fuser(a, b)")
    try:
        count = len(frames)
    except TypeError:
        raise InputError(f"fuse() takes a sequence of frames (a list of arrays), got {_describe(frames)}") from None
    if count < 2:
        raise InputError(f"fusion needs at least 2 frames, got {count}")
    first = None
    for index, frame in enumerate(frames):
        if frame is None:
            raise InputError(f"frame {index} is None: cv2.imread returns None when it cannot read a file, and "
                             "VideoCapture.read when a source has no frame; check the path or the camera")
        if not isinstance(frame, np.ndarray):
            raise InputError(f"frame {index} is {_describe(frame)}; frames are numpy arrays (uint8 or float32)")
        if frame.size == 0:
            raise InputError(f"frame {index} is empty (shape {frame.shape}): the source gave no image")
        if frame.dtype not in (np.uint8, np.float32):
            raise InputError(f"frame {index} has dtype {frame.dtype}; pass uint8 (0..255) or float32 in [0, 1], "
                             "e.g. frame.astype(np.float32) / 65535 for 16-bit or frame.astype(np.float32) for float64")
        if not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 3))):
            hint = " (drop alpha with frame[:, :, :3])" if frame.ndim == 3 and frame.shape[2] == 4 else ""
            raise InputError(f"frame {index} has shape {frame.shape}; expected HxW (grey) or HxWx3 (BGR){hint}")
        if first is None:
            first = frame
            continue
        if frame.shape != first.shape:
            grey = [f.ndim == 2 or f.shape[2] == 1 for f in (first, frame)]
            if grey[0] != grey[1]:
                raise InputError(f"frame 0 is {'grey' if grey[0] else 'colour'} {first.shape} but frame {index} is "
                                 f"{'grey' if grey[1] else 'colour'} {frame.shape}: convert both to grey "
                                 "(cv2.COLOR_BGR2GRAY) or both to colour (cv2.COLOR_GRAY2BGR)")
            raise InputError(f"frames differ in shape: frame 0 is {first.shape}, frame {index} is {frame.shape}; "
                             "all sources must show the same view at the same size (resize or crop them first)")
        if frame.dtype != first.dtype:
            raise InputError(f"frames differ in dtype: frame 0 is {first.dtype}, frame {index} is {frame.dtype}")
    channels = 1 if first.ndim == 2 else first.shape[2]
    return count, first.shape[0], first.shape[1], channels, first.dtype


class Fuser:
    """Fuse multi-focus frames with a fusion model.

    >>> fuser = Fuser()                          # the shipped default model, best backend here
    >>> fused = fuser(frame_a, frame_b)          # uint8 HxWx3 BGR (or HxW, or float32 in [0, 1])
    >>> fused, weights = fuser.fuse([a, b, c], return_weights=True)

    ``model``: an ONNX file, a TensorRT engine (``.engine``/``.plan``), a ``.safetensors`` training
    checkpoint (torch backend, development), None for the default model, or a ready backend with
    its own options (``Fuser(OnnxRuntimeBackend("m.onnx", threads=1))``, see
    :mod:`mfif.runtime.backends`). For a path: ``backend`` 'auto' (by file type: ONNX Runtime with
    its best provider, TensorRT for an engine, torch for a checkpoint), 'onnxruntime', 'torch' or
    'tensorrt'; ``device`` 'auto', 'cpu', 'cuda' or 'cuda:N' (asking for a GPU that cannot be used
    is an error, never a silent CPU run).
    ``smoothing``: temporal smoothing of the weight maps for video, 0 (off) to <1 (see
    :attr:`smoothing`). ``align``: alignment of the sources before fusing (docs/alignment.md):
    'off' (default), 'each' (estimate on every frame set: stills, stacks), 'once' (estimate on the
    first frame set, then keep it: rigs, streams; :meth:`realign` re-estimates), a rig file from
    ``mfif align`` or a :class:`~mfif.runtime.align.Rig`; the output is in the reference's frame
    (A of a pair, the middle frame of a stack). ``align_model``: 'translation', 'similarity'
    (default), 'affine' or 'homography'. ``stats_window``: frames averaged in :attr:`stats`.

    Frames keep their dtype and shape: the result of uint8 HxWx3 frames is uint8 HxWx3. A grey
    frame given to a colour-only model is copied into the 3 channels and the result turned back to
    grey (BT.601 luma); colour frames given to a grey-only model are fused on their luma by the
    model, their chroma by taking per pixel the source with the stronger colour (|Cb|, |Cr|
    weighted), then turned back to BGR.

    Thread safety: one Fuser per thread. An instance reuses its buffers across calls, so it must
    not be used by two threads at once (that raises ConfigError); separate instances in separate
    threads are independent. :meth:`for_another_thread` makes the one for the next thread without
    loading the model again.
    """

    def __init__(self, model: str | Path | Backend | None = None, *, backend: str = "auto", device: str = "auto",
                 smoothing: float = 0.0, stats_window: int = 100, align: str | Path | Rig = "off",
                 align_model: str = DEFAULT_ALIGN_MODEL, memory_limit: float | None = DEFAULT_MEMORY_LIMIT,
                 max_pixels: int | None = None) -> None:
        if memory_limit is not None and not memory_limit > 0:
            raise ConfigError(f"memory_limit must be a number of bytes > 0 (or None: no limit), not {memory_limit}")
        if max_pixels is not None and max_pixels < 1:
            raise ConfigError(f"max_pixels must be >= 1 (or None: no limit), not {max_pixels}")
        self.memory_limit = memory_limit
        self.max_pixels = max_pixels
        self._alignment = AlignStage(align, align_model)
        if isinstance(model, Backend):
            if backend != "auto" or device != "auto":
                raise ConfigError(f"a ready backend runs where it was made ({model.name} on {model.device}); leave out "
                                  f"backend={backend!r} and device={device!r}, or pass a model path instead")
            self._backend = model
        else:
            self._backend = load_backend(model, backend, device)
        self.info: ModelInfo = self._backend.info
        self._plan: _Plan | None = None
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.smoothing = smoothing
        except ConfigError:
            if not isinstance(model, Backend):  # one made here holds device memory; one passed in is the caller's
                self._backend.close()
            raise
        self._times = np.zeros((max(1, int(stats_window)), len(STAGES) + 1))
        self._frames = 0

    def for_another_thread(self) -> "Fuser":
        """A Fuser for another thread on the same loaded model (ONNX Runtime session, TensorRT
        engine or torch module: not loaded again), with buffers, statistics and smoothing of its
        own."""
        fuser = copy.copy(self)
        fuser._backend = self._backend.for_another_thread()
        fuser._alignment = self._alignment.for_another_thread()
        fuser._plan = None
        fuser._lock = threading.Lock()
        fuser._times = np.zeros_like(self._times)
        fuser._frames = 0
        return fuser

    # ---- what runs -------------------------------------------------------------------------
    @property
    def backend_name(self) -> str:
        """'onnxruntime', 'torch' or 'tensorrt'."""
        return self._backend.name

    @property
    def device(self) -> str:
        """The provider or device that actually runs, e.g. 'CPUExecutionProvider (2 threads)'."""
        return self._backend.device

    @property
    def stats(self) -> Stats:
        """Per-stage timings (ms) of the last frame and the mean of the recent ones, and FPS."""
        filled = min(self._frames, len(self._times))
        keys = (*STAGES, "total")
        if not filled:
            zeros = dict.fromkeys(keys, 0.0)
            return Stats(0, len(self._times), zeros, dict(zeros), 0.0)
        last = self._times[(self._frames - 1) % len(self._times)]
        mean = self._times[:filled].mean(axis=0)
        return Stats(self._frames, len(self._times), dict(zip(keys, map(float, last))),
                     dict(zip(keys, map(float, mean))), float(1000.0 / mean[-1]) if mean[-1] > 0 else 0.0)

    def reset_stats(self) -> None:
        self._frames = 0
        self._times[:] = 0

    @property
    def smoothing(self) -> float:
        """Temporal smoothing of the weight maps for video: each frame's weights become
        ``s * previous + (1 - s) * new`` (an exponential moving average), and the fused frame is
        recomputed from them. 0 turns it off. Successive calls then depend on each other, so use it
        for consecutive frames of one video only; :meth:`reset_smoothing` starts afresh (a new
        frame size does too). Needs a model with weight maps (focusmap)."""
        return self._smoothing

    @smoothing.setter
    def smoothing(self, value: float) -> None:
        value = float(value)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"smoothing must be in [0, 1) (0 = off), not {value}")
        if value and not self.info.has_weight_map:
            raise ConfigError(f"smoothing needs a model with weight maps; {self.info.model} gives only "
                              f"{list(self.info.output_names)} (use focusmap)")
        self._smoothing = value

    def reset_smoothing(self) -> None:
        if self._plan is not None:
            self._plan.smoothed = None

    # ---- alignment ---------------------------------------------------------------------------
    @property
    def align(self) -> str:
        """'off', 'each', 'once' or 'rig'; assign any value ``Fuser(align=...)`` takes."""
        return self._alignment.mode

    @align.setter
    def align(self, value: str | Path | Rig) -> None:
        self._alignment = AlignStage(value, self._alignment.model, self._alignment._interpolation)

    @property
    def alignment(self) -> AlignStage:
        """The alignment stage: its ``rig`` (the transforms in use, after the first frame set),
        ``coverage`` and ``common_area()`` (the rectangle every source covers, for cropping)."""
        return self._alignment

    def realign(self) -> None:
        """Estimate the alignment afresh from the next frame set (a rig that moved)."""
        self._alignment.realign()

    # ---- fusing ----------------------------------------------------------------------------
    def __call__(self, a: np.ndarray, b: np.ndarray, *more: np.ndarray, return_weights: bool = False,
                 out: np.ndarray | None = None):
        """``fuser(a, b)`` or ``fuser(a, b, c, ...)``: same as :meth:`fuse`."""
        return self.fuse((a, b, *more), return_weights=return_weights, out=out)

    def fuse(self, frames: Sequence[np.ndarray], *, return_weights: bool = False, out: np.ndarray | None = None):
        """Fuse K >= 2 frames of one scene (same shape and dtype). Returns the fused frame (same
        dtype and shape as the inputs; written into ``out`` when given), or (fused, weights) with
        ``return_weights``: float32 (K, H, W) weights that sum to 1 over K (weight-map models)."""
        if self._closed:
            raise ConfigError(f"this Fuser was closed; make a new one ({self!r})")
        if not self._lock.acquire(blocking=False):
            raise ConfigError("this Fuser is already fusing in another thread; use one Fuser per thread")
        try:
            if len(frames) and is_device_frame(frames[0]):  # frames on the GPU: fused there (torch, TensorRT)
                if return_weights or self._smoothing or self._alignment.active:
                    raise ConfigError("weight maps, smoothing and alignment are for host frames; GPU frames give the "
                                      "fused frame (align=off)")
                return fuse_on_gpu(self._backend, self.info, frames, out)
            return self._fuse(frames, return_weights, out)
        finally:
            self._lock.release()

    def _fuse(self, frames, return_weights: bool, out):
        start = time.perf_counter()
        smoothing = self._smoothing  # read once: another thread may set it while this frame is fused
        count, height, width, channels, dtype = check_frames(frames)
        if self.info.sources and count != self.info.sources:
            raise InputError(f"model {self.info.model} takes exactly {self.info.sources} frames, got {count}")
        if return_weights and not self.info.has_weight_map:
            raise ConfigError(f"model {self.info.model} gives no weight map (outputs: {list(self.info.output_names)}); "
                              "use a weight-map model such as focusmap, or return_weights=False")
        if self.max_pixels and height * width > self.max_pixels:
            raise InputError(f"frames of {width}x{height} ({height * width / 1e6:.1f} megapixels) exceed max_pixels="
                             f"{self.max_pixels} ({self.max_pixels / 1e6:.1f} megapixels): downscale them or raise the limit")
        frames = self._alignment(frames)  # the sources in the reference's frame (unchanged when off)
        shape = frames[0].shape
        if out is not None and (not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype):
            raise InputError(f"out must be an array of shape {shape} and dtype {dtype}, like the frames; got {_describe(out)}")
        if out is None:
            out = np.empty(shape, dtype)
        tile = self._tile_side(frames, smoothing)
        if tile is None:
            weights, times = self._fuse_region(frames, out, return_weights, smoothing, (slice(0, height), slice(0, width)))
        else:
            weights, times = self._fuse_tiles(frames, out, return_weights, tile)
        end = time.perf_counter()

        row = self._times[self._frames % len(self._times)]
        row[:] = (*times, (end - start) * 1e3)
        self._frames += 1
        return (out, weights) if return_weights else out

    def _fuse_region(self, frames, out, return_weights: bool, smoothing: float, region: tuple[slice, slice]):
        """Fuse frames (the whole frame set, or views of one tile at ``region`` of it) into ``out``.
        Returns the weights (K, H, W, a copy) or None, and the stage times in milliseconds."""
        start = time.perf_counter()
        count, height, width, channels, dtype = len(frames), *frames[0].shape[:2], \
            1 if frames[0].ndim == 2 else frames[0].shape[2], frames[0].dtype
        key = (count, height, width, channels, dtype)
        if self._plan is None or self._plan.key != key:
            self._plan = _Plan(key, self.info, self._backend)
        plan = self._plan
        self._preprocess(plan, frames)
        prepared = time.perf_counter()

        # Pixels an aligned source does not cover hold the reference's values; with 3+ sources their
        # weight is moved to the covering sources and the frame blended again.
        coverage = self._alignment.coverage if self.info.has_weight_map else None
        reblend = coverage is not None and count > 2 and not smoothing
        fused, weights = self._backend.run(plan.sources, return_weights or bool(smoothing) or reblend)
        transfer = self._backend.last_timings
        ran = time.perf_counter()

        if coverage is not None and weights is not None:
            if not weights.flags.writeable:
                weights = weights.copy()
            self._alignment.mask_weights(weights[0, :, :height, :width], region)
            if reblend:
                fused = self._blend(plan, weights)
        if smoothing:
            fused, weights = self._smooth(plan, weights, smoothing)
        self._postprocess(plan, fused, frames, out)
        weights = weights[0, :, :height, :width].copy() if return_weights else None
        end = time.perf_counter()
        return weights, ((prepared - start) * 1e3, *(transfer.get(stage, 0.0) for stage in BACKEND_STAGES),
                         (end - ran) * 1e3)

    def _tile_side(self, frames, smoothing: float) -> int | None:
        """None when fusing the whole frame fits ``memory_limit`` (with the frames and the output);
        else the side of the square tiles that do. Tiles start on the model's pad grid and overlap
        by its receptive radius, so the result equals the whole frame's (docs/runtime.md)."""
        count, (height, width) = len(frames), frames[0].shape[:2]
        multiple = self.info.pad_to
        per_pixel = WORKING_BYTES_PER_PIXEL_PER_SOURCE * count
        padded = (-(-height // multiple) * multiple) * (-(-width // multiple) * multiple)
        budget = (self.memory_limit or 0) - sum(frame.nbytes for frame in frames) - frames[0].nbytes
        if self.memory_limit is None or padded * per_pixel <= budget:
            return None
        size = f"frames of {width}x{height} ({height * width / 1e6:.1f} megapixels, {count} sources)"
        limit = f"memory_limit={self.memory_limit / 2**30:.2f} GiB"
        if smoothing:
            raise ConfigError(f"{size} need {padded * per_pixel / 2**30:.2f} GiB to fuse whole, over {limit}; "
                              "temporal smoothing needs the whole frame: raise memory_limit or turn smoothing off")
        if not self.info.receptive_radius:
            raise InputError(f"{size} need {padded * per_pixel / 2**30:.2f} GiB to fuse whole, over {limit}, and "
                             f"model {self.info.model} does not record its receptive radius, which fusing in tiles "
                             "needs (a training checkpoint, or an ONNX file exported before mfif recorded it): raise "
                             "memory_limit, or fuse with an ONNX file from 'mfif export'")
        margin = -(-self.info.receptive_radius // multiple) * multiple
        side = (int((max(budget, 0) / per_pixel) ** 0.5) - 2 * margin) // multiple * multiple
        if side < 2 * multiple:
            raise InputError(f"{size} do not fit {limit} even in tiles: the frames and the output alone take "
                             f"{(self.memory_limit - budget) / 2**30:.2f} GiB; raise memory_limit or downscale the frames")
        return side

    def _fuse_tiles(self, frames, out, return_weights: bool, side: int):
        """Fuse in square tiles of ``side`` (plus the receptive radius around each, cut off again)."""
        height, width = frames[0].shape[:2]
        multiple = self.info.pad_to
        margin = -(-self.info.receptive_radius // multiple) * multiple
        weights = np.empty((len(frames), height, width), np.float32) if return_weights else None
        times = np.zeros(len(STAGES))
        for top in range(0, height, side):
            for left in range(0, width, side):
                rows = slice(max(0, top - margin), min(height, top + side + margin))
                cols = slice(max(0, left - margin), min(width, left + side + margin))
                views = [frame[rows, cols] for frame in frames]
                tile_out = np.empty(views[0].shape, out.dtype)
                tile_weights, tile_times = self._fuse_region(views, tile_out, return_weights, 0.0, (rows, cols))
                times += tile_times
                core = (slice(top - rows.start, min(top + side, height) - rows.start),
                        slice(left - cols.start, min(left + side, width) - cols.start))
                out[top:top + side, left:left + side] = tile_out[core]
                if weights is not None:
                    weights[:, top:top + side, left:left + side] = tile_weights[(slice(None), *core)]
        return weights, tuple(times)

    def _preprocess(self, plan: _Plan, frames) -> None:
        """Frames -> plan.sources (1, K, C, Hp, Wp) float32 in [0, 1], reflect-padded."""
        height, width = plan.height, plan.width
        region = plan.sources[0, :, :, :height, :width]
        scale = np.float32(1.0 / 255.0) if plan.dtype == np.uint8 else np.float32(1.0)
        for k, frame in enumerate(frames):
            if plan.frame_channels == 1:
                np.multiply(frame if frame.ndim == 2 else frame[:, :, 0], scale, out=region[k, 0], dtype=np.float32)
                if plan.mode == "grey_to_colour":
                    region[k, 1:] = region[k, 0]
            elif plan.mode == "luma":
                np.multiply(frame[:, :, 0], np.float32(LUMA[0]) * scale, out=region[k, 0], dtype=np.float32)
                for c in (1, 2):
                    np.multiply(frame[:, :, c], np.float32(LUMA[c]) * scale, out=plan.plane, dtype=np.float32)
                    region[k, 0] += plan.plane
            else:
                for c in range(3):
                    np.multiply(frame[:, :, c], scale, out=region[k, c], dtype=np.float32)
        sources = plan.sources
        if len(plan.pad_rows):
            sources[..., height:, :width] = sources[..., plan.pad_rows, :width]
        if len(plan.pad_cols):
            sources[..., :, width:] = sources[..., :, plan.pad_cols]
        if plan.dtype == np.float32:  # the padding repeats inner values: the whole buffer has the frames' range
            low, high = float(sources.min()), float(sources.max())
            if not (-FLOAT_TOLERANCE <= low and high <= 1.0 + FLOAT_TOLERANCE):  # also catches NaN
                finite = np.isfinite(low) and np.isfinite(high)
                what = f"values in [{low:.4g}, {high:.4g}]" if finite else "NaN or infinite values"
                raise InputError(f"float32 frames must hold values in [0, 1]; got {what}. "
                                 "Divide 0..255 data by 255, or pass uint8 frames")

    def _smooth(self, plan: _Plan, weights: np.ndarray, smoothing: float) -> tuple[np.ndarray, np.ndarray]:
        """EMA of the weight maps, and the fused frame as the weighted sum of the sources."""
        if plan.smoothed is None:
            plan.smoothed = weights.copy()
            plan.fresh = np.empty_like(weights)
        else:
            plan.smoothed *= np.float32(smoothing)
            np.multiply(weights, np.float32(1.0 - smoothing), out=plan.fresh)
            plan.smoothed += plan.fresh
        return self._blend(plan, plan.smoothed), plan.smoothed

    def _blend(self, plan: _Plan, weights: np.ndarray) -> np.ndarray:
        """The fused frame (1, C, Hp, Wp) as the sum of the sources weighted by ``weights``."""
        if plan.product is None:
            plan.product = np.empty(plan.sources.shape[2:], np.float32)
        fused = plan.staging  # (C, Hp, Wp); postprocess reads it before overwriting it in place
        np.multiply(plan.sources[0, 0], weights[0, 0], out=fused)
        for k in range(1, plan.count):
            np.multiply(plan.sources[0, k], weights[0, k], out=plan.product)
            fused += plan.product
        return fused[None]

    def _postprocess(self, plan: _Plan, fused: np.ndarray, frames, out: np.ndarray) -> None:
        """fused (1, C, Hp, Wp) float32 -> ``out`` in the frames' dtype and shape."""
        height, width = plan.height, plan.width
        if plan.mode == "luma" or plan.dtype == np.float32:
            if not np.isfinite(float(fused.sum())):
                self._not_finite(frames)
        if plan.mode == "luma":
            return self._postprocess_luma(plan, fused[0, 0, :height, :width], frames, out)
        staging = plan.staging  # may be the very array ``fused`` views (smoothing): all steps work in place
        if plan.mode == "grey_to_colour":  # the 3-channel result of a grey frame -> grey (luma) in staging[0]
            for c in range(3):
                np.multiply(fused[0, c], np.float32(LUMA[c]), out=staging[c])
            staging[0] += staging[1]
            staging[0] += staging[2]
            source, channels = staging[:1], staging[:1]
        else:
            source, channels = fused[0], staging
        if plan.dtype == np.uint8:
            np.multiply(source, np.float32(255.0), out=channels)
            np.add(channels, np.float32(0.5), out=channels)  # round half up: the cast below truncates
            np.clip(channels, 0.0, 255.0, out=channels)
        else:
            np.clip(source, 0.0, 1.0, out=channels)
        targets = [out] if out.ndim == 2 else [out[:, :, c] for c in range(out.shape[2])]  # views, never copies
        try:
            with np.errstate(invalid="raise"):  # NaN cannot be cast to uint8: caught here at no extra cost
                for target, channel in zip(targets, channels):
                    np.copyto(target, channel[:height, :width], casting="unsafe")
        except FloatingPointError:
            self._not_finite(frames)

    def _not_finite(self, frames):
        raise InferenceError(f"model {self.info.model} ({self.info.precision}) produced NaN or infinite values "
                             f"on frames of shape {frames[0].shape}; with an FP16/INT8 model try the FP32 one")

    def _postprocess_luma(self, plan: _Plan, luma: np.ndarray, frames, out: np.ndarray) -> None:
        """Colour frames through a grey-only model: luma from the model, chroma per pixel from the
        source with the stronger colour (weights |C|), back to BGR. Rare path; allocates."""
        scale = 1.0 / 255.0 if plan.dtype == np.uint8 else 1.0
        lumas = plan.sources[0, :, 0, :plan.height, :plan.width]
        chroma = []
        for index, factor in ((0, CB_SCALE), (2, CR_SCALE)):  # Cb from blue, Cr from red
            values = np.stack([(frame[:, :, index] * np.float32(scale) - y) * np.float32(factor)
                               for frame, y in zip(frames, lumas)])
            magnitude = np.abs(values)
            norm = magnitude.sum(axis=0)
            chroma.append(np.divide((magnitude * values).sum(axis=0), norm, out=np.zeros_like(norm), where=norm > 0))
        cb, cr = chroma
        blue = luma + cb / CB_SCALE
        red = luma + cr / CR_SCALE
        green = (luma - LUMA[0] * blue - LUMA[2] * red) / LUMA[1]
        bgr = np.stack([blue, green, red], axis=-1)
        if plan.dtype == np.uint8:
            np.copyto(out, np.clip(bgr * 255.0 + 0.5, 0.0, 255.0), casting="unsafe")
        else:
            np.copyto(out, np.clip(bgr, 0.0, 1.0))

    # ---- streaming and lifetime ------------------------------------------------------------
    def stream(self, source_a, source_b=None, **options):
        """Fused frames from two synchronized sources, or from one focus-bracketing source whose
        consecutive frames alternate focus. See :class:`runtime.stream.Stream` for the options."""
        from mfif.runtime.stream import Stream

        return Stream(self, source_a, source_b, **options)

    def close(self) -> None:
        """Release the backend (device memory, sessions); fusing afterwards is an error."""
        self._closed = True
        self._plan = None  # its input buffer belonged to the backend
        self._backend.close()

    def __enter__(self) -> "Fuser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Fuser(model={self.info.model!r}, precision={self.info.precision!r}, "
                f"backend={self.backend_name!r}, device={self.device!r})")
