"""Streaming fusion: a pipeline of three stages that overlap, linked by small bounded queues.

    capture thread ──(frame groups)──> inference thread ──(fused frames)──> your loop

- Capture reads one group per output frame: a frame from each synchronized source (cameras are
  ``grab()``-bed together first, then decoded, to keep them as close in time as OpenCV allows), or
  ``bracket`` consecutive frames of one focus-bracketing source.
- When every source is live (cameras, /dev/videoN, network streams, GStreamer pipelines), the
  OLDEST queued item is dropped when the next stage is slow (latency over completeness) and
  counted in ``dropped``. Files never drop: the stages wait for each other, and a file paired with
  a live source is read in step with it.
- The stream ends cleanly at the end of a file, raises SourceError naming the source when a live
  source stops delivering or when no frame arrives within ``timeout`` seconds, and stops its
  threads and releases the sources on Ctrl-C, on ``break`` and on ``close()``. With
  ``reconnect=N`` a lost network source (a camera rebooting) is reopened, up to N attempts with
  a growing wait, and counted in ``reconnects``.

OpenCV is imported here, when a stream opens (a Jetson's system OpenCV brings GStreamer/CSI).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfif.errors import ConfigError, SourceError
from mfif.lazy import require

NETWORK_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
_END = object()


@dataclass
class _Failure:
    error: BaseException


class _SourceLost(SourceError):
    """A live source stopped delivering; the capture thread may reconnect it."""

    def __init__(self, message: str, index: int):
        super().__init__(message)
        self.index = index


RECONNECT_FIRST_DELAY = 0.5   # seconds before the first reconnection attempt; doubles each time
RECONNECT_MAX_DELAY = 8.0


@dataclass(frozen=True)
class Source:
    """One video source: ``kind`` is 'camera', 'device', 'gstreamer', 'network' or 'file';
    ``label`` names it where the spec alone would not (a csi:// camera's pipeline)."""

    spec: str | int
    kind: str
    live: bool
    label: str = ""

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if self.kind == "camera":
            return f"camera {self.spec}"
        if self.kind == "gstreamer":
            text = str(self.spec)
            return f"GStreamer pipeline '{text if len(text) <= 60 else text[:57] + '...'}'"
        return f"{self.kind} {self.spec}" if self.kind != "file" else str(self.spec)

    def open(self, cv2, timeout: float = 10.0):
        if self.kind == "gstreamer":
            if not cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
                raise SourceError(f"{self.name}: this OpenCV ({cv2.__version__}) has no GStreamer support; pip wheels "
                                  "lack it. On a Jetson use the system OpenCV from JetPack (do not pip-install opencv)")
            capture = cv2.VideoCapture(str(self.spec), cv2.CAP_GSTREAMER)
        elif self.kind == "device":
            capture = cv2.VideoCapture(str(self.spec), cv2.CAP_V4L2)
        elif self.kind == "network":  # FFmpeg's own open/read timeouts, so a dead stream cannot hang a read
            milliseconds = int(timeout * 1000)
            capture = cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, milliseconds,
                                                                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, milliseconds])
        else:
            capture = cv2.VideoCapture(self.spec)
        if not capture.isOpened():
            capture.release()
            hint = {"file": "not a video OpenCV can decode", "camera": "no such camera, or it is in use",
                    "device": "no such device, no permission, or in use",
                    "network": "unreachable, wrong URL or credentials"}.get(self.kind, "see GStreamer's messages")
            raise SourceError(f"cannot open {self.name}: {hint}")
        if self.live:
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver from queueing stale frames (where supported)
        return capture


CSI_DEFAULTS = {"width": 1920, "height": 1080, "framerate": 30, "flip": 0}


def csi_pipeline(sensor: int, width: int = 1920, height: int = 1080, framerate: int = 30, flip: int = 0) -> str:
    """The GStreamer pipeline of a Jetson CSI camera (Argus), converted to BGR for OpenCV."""
    return (f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
            f"framerate={framerate}/1, format=NV12 ! nvvidconv flip-method={flip} ! video/x-raw, format=BGRx ! "
            "videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1")


def _csi_source(uri: str, rest: str) -> Source:
    """csi://N[?width=W&height=H&framerate=F&flip=M] as its nvarguscamerasrc pipeline."""
    sensor, _, query = rest.partition("?")
    options = dict(CSI_DEFAULTS)
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        if key not in options or not value.isdigit():
            raise ConfigError(f"source {uri!r}: option {item!r} is not one of {', '.join(f'{k}=N' for k in options)}")
        options[key] = int(value)
    if not sensor.isdigit():
        raise ConfigError(f"source {uri!r}: expected csi://N with N the sensor index, e.g. csi://0")
    return Source(csi_pipeline(int(sensor), **options), "gstreamer", True, label=f"CSI camera {uri}")


def describe_source(spec, live: bool | None = None) -> Source:
    """Classify a source. URIs as jetson-utils names them: csi://N (a Jetson CSI camera through
    nvarguscamerasrc; options ?width=&height=&framerate=&flip=), v4l2:///dev/videoN, file://PATH,
    rtsp:// (and the other network schemes). Without a scheme: an int or digit string is a camera
    index; '/dev/videoN' a V4L2 device; a string with '!' a GStreamer pipeline; else a file."""
    if isinstance(spec, Path):
        spec = str(spec)
    if isinstance(spec, bool) or not isinstance(spec, (int, str)) or spec == "":
        raise ConfigError(f"a video source is a file path, a camera index, /dev/videoN, a GStreamer pipeline or "
                          f"a URI (csi://0, v4l2:///dev/video0, file://a.mp4, rtsp://...); got {spec!r}")
    scheme, separator, rest = spec.partition("://") if isinstance(spec, str) else ("", "", "")
    scheme = scheme.lower()
    if isinstance(spec, int) or spec.isdigit():
        source = Source(int(spec), "camera", True)
    elif spec.startswith("/dev/video"):
        source = Source(spec, "device", True)
    elif "!" in spec:
        source = Source(spec, "gstreamer", "filesrc" not in spec)
    elif spec.lower().startswith(NETWORK_PREFIXES):
        source = Source(spec, "network", True)
    elif separator and scheme == "csi":
        source = _csi_source(spec, rest)
    elif separator and scheme == "v4l2":
        if not rest.startswith("/dev/"):
            raise ConfigError(f"source {spec!r}: expected v4l2:///dev/videoN (three slashes: the device path)")
        source = Source(rest, "device", True)
    elif separator and scheme != "file":
        hint = " (display:// is an output: VideoOutput('display://0'))" if scheme == "display" else ""
        raise ConfigError(f"unknown source scheme in {spec!r}{hint}; sources are csi://N, v4l2:///dev/videoN, "
                          f"file://PATH, {', '.join(NETWORK_PREFIXES)} URLs, camera indices, GStreamer pipelines or "
                          "file paths")
    else:
        path = rest if separator else spec
        if not Path(path).exists() or Path(path).is_dir():  # exists(): a named pipe is a valid source too
            raise SourceError(f"video file not found: {path}")
        source = Source(path, "file", False)
    return source if live is None else Source(source.spec, source.kind, bool(live), source.label)


class Stream:
    """Fused frames from synchronized sources, made by ``fuser.stream(...)``::

        for fused in fuser.stream("left.mp4", "right.mp4"):
            writer.write(fused)

    ``source_b`` None means one focus-bracketing source: every ``bracket`` consecutive frames
    (focus positions, default 2) make one fused frame. ``live`` overrides the live/file guess
    (live sources drop, files never do). ``smoothing`` sets ``fuser.smoothing`` (temporal EMA of
    the weight maps) for this stream; the smoothing state starts afresh either way.
    ``return_weights`` yields (fused, weights). ``queue_size`` bounds each queue. ``timeout``: the
    longest wait for a source to open or for the next frame, in seconds. ``max_frames`` stops after
    that many fused frames (frames delivered to you, whatever was dropped). ``reconnect``: attempts
to reopen a lost network source (0: a loss ends the stream with SourceError). ``size``
(width, height) and ``rate`` (frames per second), as jetson-utils' --input-width/--input-height/
--input-rate: cameras and V4L2 devices are asked for that mode when opened, and frames of another
size from any source are resized to ``size`` (INTER_AREA), so every fused frame has it. The fuser
must not be used elsewhere while the stream runs.
    """

    def __init__(self, fuser, source_a, source_b=None, *, bracket: int | None = None, live: bool | None = None,
                 smoothing: float | None = None, return_weights: bool = False, queue_size: int = 2,
                 timeout: float = 10.0, max_frames: int | None = None, reconnect: int = 0,
                 size: tuple[int, int] | None = None, rate: float | None = None) -> None:
        if source_b is not None and bracket not in (None, 1):
            raise ConfigError(f"bracket={bracket} is for one focus-bracketing source; two sources were given")
        self.bracket = 1 if source_b is not None else (2 if bracket is None else int(bracket))
        if self.bracket < 1 or (source_b is None and self.bracket < 2):
            raise ConfigError(f"bracket must be >= 2 focus positions for a single source, not {bracket}")
        if queue_size < 1:
            raise ConfigError(f"queue_size must be >= 1, not {queue_size}")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ConfigError(f"timeout must be a finite number of seconds > 0, not {timeout}; to wait long for a "
                              "slow source give a large value such as 3600")
        if max_frames is not None and max_frames < 1:
            raise ConfigError(f"max_frames must be >= 1 or None, not {max_frames}")
        if reconnect < 0:
            raise ConfigError(f"reconnect must be >= 0 attempts (0 = off), not {reconnect}")
        if size is not None and not (len(size) == 2 and all(isinstance(v, int) and v >= 8 for v in size)):
            raise ConfigError(f"size must be (width, height), whole numbers of pixels >= 8, not {size!r}")
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise ConfigError(f"rate must be a number of frames per second > 0, not {rate!r}")
        self.size, self.rate = (tuple(size) if size else None), rate
        specs = [source_a] if source_b is None else [source_a, source_b]
        self.sources = [describe_source(spec, live) for spec in specs]
        self.live = any(source.live for source in self.sources)
        # Frames are dropped only when every source is live: a file paired with a camera is read in
        # step with the camera and loses nothing (the camera's driver buffers meanwhile).
        self.drops = all(source.live for source in self.sources)
        self.fuser = fuser
        self.smoothing = smoothing
        self.return_weights = return_weights
        self.timeout = float(timeout)
        self.max_frames = max_frames
        self.reconnect = int(reconnect)
        self.reconnects = 0                   # successful reconnections of network sources
        self._reconnecting = threading.Event()
        self._captured: queue.Queue = queue.Queue(maxsize=queue_size)
        self._results: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._open_result: BaseException | None = None  # what opening the sources raised, if anything
        self._threads: list[threading.Thread] = []
        self._started = False
        self.source_fps: float | None = None
        self.frame_count: int | None = None   # fused frames to expect from files, when known
        self.frames_read = 0                  # groups captured
        self.frames_fused = 0
        self.frames_out = 0
        self.dropped_captured = 0             # groups dropped before inference (live only)
        self.dropped_fused = 0                # fused frames dropped before the consumer (live only)
        self.ended_by: str | None = None      # the source whose end finished the stream
        self._start_time = 0.0
        self._end_time: float | None = None

    @property
    def name(self) -> str:
        return " + ".join(source.name for source in self.sources)

    @property
    def dropped(self) -> int:
        return self.dropped_captured + self.dropped_fused

    @property
    def stats(self) -> dict:
        end = self._end_time if self._end_time is not None else time.perf_counter()
        elapsed = end - self._start_time if self._started else 0.0
        return {"frames_read": self.frames_read, "frames_fused": self.frames_fused, "frames_out": self.frames_out,
                "dropped": self.dropped, "reconnects": self.reconnects, "elapsed_s": elapsed,
                "fps": self.frames_out / elapsed if elapsed > 0 else 0.0, "source_fps": self.source_fps}

    # ---- lifetime ----------------------------------------------------------------------------
    def start(self) -> "Stream":
        """Open the sources (in the capture thread, so a hanging open cannot hang the caller)."""
        if self._started:
            return self
        self._started = True
        self._start_time = time.perf_counter()
        if self.smoothing is not None:
            self.fuser.smoothing = self.smoothing
        self.fuser.reset_smoothing()
        cv2 = require("cv2", extra="cpu", purpose="reading video and camera sources")
        capture = threading.Thread(target=self._capture, args=(cv2,), name="mfif-capture", daemon=True)
        infer = threading.Thread(target=self._infer, name="mfif-inference", daemon=True)
        self._threads = [capture, infer]
        capture.start()
        try:
            if not self._opened.wait(self.timeout):
                raise SourceError(f"{self.name} did not open within {self.timeout:g} s (unreachable stream, or a "
                                  "device that does not answer); raise timeout= if it is only slow")
            if isinstance(self._open_result, BaseException):
                raise self._open_result
        except BaseException:  # also Ctrl-C while waiting: leave no thread behind
            self.close()
            raise
        infer.start()
        return self

    def close(self) -> None:
        """Stop the threads; the capture thread releases the sources as it leaves."""
        if self._started and self._end_time is None:
            self._end_time = time.perf_counter()
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout=2.0)  # a capture stuck inside a driver call stays behind (daemon)

    def __enter__(self) -> "Stream":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self):
        if self._stop.is_set():
            raise ConfigError(f"this stream of {self.name} has ended; a Stream runs once, make a new one")
        self.start()
        try:
            while True:
                try:
                    item = self._results.get(timeout=self.timeout)
                except queue.Empty:
                    if self._reconnecting.is_set():
                        continue
                    raise SourceError(f"no frame from {self.name} for {self.timeout:g} s after {self.frames_read} "
                                      "frames: the source stalled or disconnected") from None
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                self.frames_out += 1
                yield item
                if self.max_frames and self.frames_out >= self.max_frames:
                    return
        finally:
            self.close()

    # ---- the two worker threads ---------------------------------------------------------------
    def _put(self, target: queue.Queue, item, droppable: bool) -> int:
        """Queue an item; a droppable one evicts the oldest queued item instead of waiting.
        Returns the number of items dropped."""
        if droppable:
            dropped = 0
            while True:
                try:
                    target.put_nowait(item)
                    return dropped
                except queue.Full:
                    try:
                        target.get_nowait()
                        dropped += 1
                    except queue.Empty:
                        pass
        while not self._stop.is_set():
            try:
                target.put(item, timeout=0.1)
                return 0
            except queue.Full:
                continue
        return 0

    def _read_group(self, captures) -> list[np.ndarray] | None:
        """One frame per source (or ``bracket`` frames of the one source); None at the end."""
        if self.bracket > 1:
            frames = []
            for _ in range(self.bracket):
                ok, frame = captures[0].read()
                if not ok:
                    return self._ended(self.sources[0])
                frames.append(frame)
            return frames
        if self.live:
            for source, capture in zip(self.sources, captures):
                if not capture.grab():
                    return self._ended(source)
            results = [capture.retrieve() for capture in captures]
        else:
            results = [capture.read() for capture in captures]
        for source, (ok, _) in zip(self.sources, results):
            if not ok:
                return self._ended(source)
        return [frame for _, frame in results]

    def _ended(self, source: Source) -> None:
        if self.frames_read == 0:
            raise SourceError(f"{source.name} opened but yielded no frames (an empty or unreadable video, or a "
                              "camera that delivers nothing)")
        if source.live:
            raise _SourceLost(f"{source.name} stopped delivering frames after {self.frames_read} frames: "
                              "it disconnected or its stream ended", self.sources.index(source))
        self.ended_by = source.name
        return None

    def _capture(self, cv2) -> None:
        captures = []
        try:
            try:
                for source in self.sources:
                    captures.append(source.open(cv2, self.timeout))
                    self._ask_mode(cv2, source, captures[-1])
                fps = captures[0].get(cv2.CAP_PROP_FPS)
                self.source_fps = fps / self.bracket if fps and np.isfinite(fps) and fps > 0 else None
                if not self.live:
                    counts = [capture.get(cv2.CAP_PROP_FRAME_COUNT) for capture in captures]
                    if all(count > 0 for count in counts):
                        self.frame_count = int(min(counts)) // self.bracket
            except BaseException as exc:
                self._open_result = exc
                return
            finally:
                self._opened.set()
            while not self._stop.is_set():
                try:
                    group = self._read_group(captures)
                except _SourceLost as lost:
                    if self._reopen(cv2, captures, lost):
                        continue
                    raise
                if group is None:
                    break
                if self.size:
                    group = [frame if frame.shape[1::-1] == self.size else
                             cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA) for frame in group]
                self.frames_read += 1
                self.dropped_captured += self._put(self._captured, group, droppable=self.drops)
                if not self.drops and self.max_frames and self.frames_read >= self.max_frames:
                    break  # nothing drops, so these groups become exactly max_frames fused frames
            self._put(self._captured, _END, droppable=False)
        except BaseException as exc:
            self._put(self._captured, _Failure(exc), droppable=False)
        finally:
            for capture in captures:
                capture.release()

    def _ask_mode(self, cv2, source: Source, capture) -> None:
        """Ask a camera or V4L2 device for ``size`` and ``rate`` (drivers pick the nearest mode they
        have; frames of another size are resized after capture)."""
        if source.kind not in ("camera", "device"):
            return
        if self.size:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        if self.rate:
            capture.set(cv2.CAP_PROP_FPS, self.rate)

    def _reopen(self, cv2, captures, lost: _SourceLost) -> bool:
        """Reconnect a lost network source: up to ``reconnect`` attempts, waiting 0.5 s, 1 s, 2 s ...
        (at most 8 s) before each. True when it delivers again; else the error names the attempts."""
        source = self.sources[lost.index]
        if not self.reconnect or source.kind != "network":
            return False
        captures[lost.index].release()
        self._reconnecting.set()
        try:
            delay, waited = RECONNECT_FIRST_DELAY, 0.0
            for _attempt in range(self.reconnect):
                if self._stop.wait(delay):
                    return False
                waited += delay
                delay = min(2 * delay, RECONNECT_MAX_DELAY)
                try:
                    captures[lost.index] = source.open(cv2, self.timeout)
                except SourceError:
                    continue
                self.reconnects += 1
                return True
            lost.args = (f"{lost.args[0]}; {self.reconnect} reconnection attempts over {waited:g} s failed",)
            return False
        finally:
            self._reconnecting.clear()

    def _infer(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    item = self._captured.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is _END or isinstance(item, _Failure):
                    self._put(self._results, item, droppable=False)
                    return
                result = self.fuser.fuse(item, return_weights=self.return_weights)
                self.frames_fused += 1
                self.dropped_fused += self._put(self._results, result, droppable=self.drops)
        except BaseException as exc:
            self._put(self._results, _Failure(exc), droppable=False)
