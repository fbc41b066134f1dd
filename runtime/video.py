"""Where fused frames go, named by URI as jetson-utils' ``videoOutput`` names them::

    from mfif import Fuser, VideoOutput

    fuser = Fuser()
    with VideoOutput("fused.avi") as output:          # or "display://0" for a window
        for fused in fuser.stream("file://near.avi", "file://far.avi"):
            output.write(fused)

- ``"out.mp4"`` or ``"file://out.mp4"``: a video file, by suffix MJPG in ``.avi``, mp4v in ``.mp4``,
  ``.m4v``, ``.mov``, ``.mkv``. It is opened at the first frame (its size) and written under a
  temporary name, renamed to the real one by ``close()`` (also after Ctrl-C), so an interrupted
  run never leaves a truncated file under the name nor destroys an earlier one.
- ``"display://0"``: a window; q, Esc or closing it sets ``is_open`` to False. It needs an OpenCV
  with GUI support (not the pip ``opencv-python-headless`` that ``mfif[cpu]`` installs) and a
  display.
- ``"frames/%04d.png"``: an image sequence (jetson-utils' ``images/%i.jpg``), frame 0, 1, ... each
  written atomically; any image suffix mfif.imageio writes.

``codec`` (jetson-utils' ``--output-codec``) overrides the suffix's choice: ``mjpeg``, ``mpeg4``
(mp4v) or ``h264``. H.264 is written where the platform has an encoder: OpenCV's FFmpeg (a build
with one; pip wheels have only V4L2 hardware encoders) or OpenCV's GStreamer (``nvv4l2h264enc`` on
a Jetson, ``x264enc``, ``openh264enc``); it is looked for when the output is made, and its absence
is an error that says what to use instead. ``bitrate`` (bits per second) goes to a GStreamer H.264
encoder, the only writers here that take one.

OpenCV is imported when an output is made.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

import numpy as np

from mfif.errors import BackendUnavailableError, ConfigError, DataError, InputError
from mfif.lazy import require

VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v"}
CODECS = {"mjpeg": "MJPG", "mpeg4": "mp4v", "h264": "avc1"}   # --output-codec names (jetson-utils') -> FourCC
H264_ENCODERS = ("nvv4l2h264enc", "x264enc", "openh264enc")  # GStreamer's, in the order tried
MUXERS = {".mp4": "mp4mux", ".m4v": "mp4mux", ".mov": "qtmux", ".mkv": "matroskamux", ".avi": "avimux"}
DISPLAY = "display://"
FILE = "file://"
CLOSE_KEYS = (27, ord("q"))  # Esc, q


def gstreamer_h264(path: str | Path, encoder: str, bitrate: int | None = None) -> str:
    """The GStreamer pipeline OpenCV's writer feeds (appsrc, BGR frames) to write H.264 into
    ``path`` with ``encoder``; ``bitrate`` in bits per second."""
    path = Path(path)
    rate = {"nvv4l2h264enc": bitrate, "x264enc": None if bitrate is None else max(1, bitrate // 1000),
            "openh264enc": bitrate}[encoder]
    options = "" if rate is None else f" bitrate={rate}"
    if encoder == "nvv4l2h264enc":  # Jetson: the hardware encoder reads NV12 from NVMM memory
        convert = "videoconvert ! video/x-raw, format=BGRx ! nvvidconv ! video/x-raw(memory:NVMM), format=NV12"
    else:
        convert = "videoconvert ! video/x-raw, format=I420"
    if encoder == "x264enc":
        options += " speed-preset=ultrafast tune=zerolatency"
    return (f"appsrc ! {convert} ! {encoder}{options} ! h264parse ! {MUXERS[path.suffix.lower()]} ! "
            f"filesink location={path}")


def has_gui(cv2) -> bool:
    """Whether this OpenCV was built with a GUI backend (GTK, Qt, Win32, Cocoa); the pip headless
    wheels report ``GUI: NONE``."""
    found = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return bool(found) and found.group(1).upper() != "NONE"


class VideoOutput:
    """``VideoOutput(uri, fps=30.0, codec=None, bitrate=None)``: a video file, an image sequence or
    a window for fused frames (see the module help). ``write(frame)`` takes uint8 frames, HxWx3 BGR
    or HxW grey, all of one size."""

    def __init__(self, uri: str | Path, fps: float = 30.0, codec: str | None = None,
                 bitrate: int | None = None) -> None:
        self.uri = str(uri)
        self.codec, self.bitrate, self.pattern, self._h264 = codec, bitrate, None, None
        if not (isinstance(fps, (int, float)) and 0 < fps < 1000):
            raise ConfigError(f"fps must be a number of frames per second in (0, 1000), not {fps!r}")
        self.fps = float(fps)
        self.frames = 0
        self.is_open = True
        self._cv2 = require("cv2", extra="cpu", purpose="writing and showing video")
        self._writer = None
        self._shape: tuple[int, ...] | None = None
        self._partial = contextlib.ExitStack()
        if self.uri.startswith(DISPLAY):
            self.path = None
            if codec is not None or bitrate is not None:
                raise ConfigError(f"{self.uri} is a window: a codec or bitrate is for video files")
            self._open_display(self.uri[len(DISPLAY):])
            return
        if "://" in self.uri and not self.uri.startswith(FILE):
            raise ConfigError(f"unknown video output {self.uri!r}: give a file (out.mp4 or file://out.mp4) or a "
                              "window (display://0)")
        self.path = Path(self.uri[len(FILE):] if self.uri.startswith(FILE) else self.uri)
        if "%" in self.path.name:
            self._sequence()
            return
        if self.path.suffix.lower() not in VIDEO_CODECS:
            raise ConfigError(f"video output {self.path} needs one of the suffixes {', '.join(VIDEO_CODECS)}, or a "
                              "numbered image name such as frames/%04d.png for an image sequence")
        self._check_codec()

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else self.uri

    def _sequence(self) -> None:
        """An image sequence: ``path`` is a printf pattern with one integer field (%d, %04d, %i)."""
        from mfif.imageio import IMAGE_SUFFIXES

        self.pattern = re.sub(r"%(0?\d*)i", r"%\1d", str(self.path))
        try:
            first = self.pattern % 0
        except (TypeError, ValueError):
            first = None
        if first is None or "%" in first or Path(self.pattern).suffix.lower() not in IMAGE_SUFFIXES:
            raise ConfigError(f"image sequence {self.path}: expected one number field and an image suffix, e.g. "
                              f"frames/%04d.png (suffixes {', '.join(IMAGE_SUFFIXES)})")
        if self.codec is not None or self.bitrate is not None:
            raise ConfigError(f"image sequence {self.path}: a codec or bitrate is for video files; the image "
                              "suffix sets the format")

    def _check_codec(self) -> None:
        """Check codec and bitrate now; for H.264 find the writer that works here (fail before any frame)."""
        if self.codec is not None and self.codec not in CODECS:
            raise ConfigError(f"unknown codec {self.codec!r}; choose one of {', '.join(CODECS)}")
        if self.bitrate is not None and (not isinstance(self.bitrate, int) or self.bitrate < 1):
            raise ConfigError(f"bitrate must be a whole number of bits per second >= 1, not {self.bitrate!r}")
        if self.bitrate is not None and self.codec != "h264":
            raise ConfigError(f"bitrate {self.bitrate}: only the H.264 encoders take a bitrate (codec 'h264'); "
                              f"{self.codec or 'the ' + VIDEO_CODECS[self.path.suffix.lower()] + ' default'} has a "
                              "fixed quality")
        self._h264 = self._find_h264() if self.codec == "h264" else None

    def _find_h264(self) -> tuple:
        """(name, api, encoder) of the first H.264 writer that opens here: FFmpeg's avc1 (not with a
        bitrate: OpenCV's FFmpeg writer takes none), then each GStreamer encoder; probed on a tiny
        file in a temporary folder."""
        import tempfile

        cv2 = self._cv2
        gstreamer = cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER)
        tried = []
        with tempfile.TemporaryDirectory(prefix="mfif-h264-") as folder:
            probe = Path(folder) / f"probe{self.path.suffix.lower()}"
            candidates = [] if self.bitrate is not None else [("ffmpeg", cv2.CAP_FFMPEG, None)]
            candidates += [(encoder, cv2.CAP_GSTREAMER, encoder) for encoder in H264_ENCODERS] if gstreamer else []
            for name, api, encoder in candidates:
                target = str(probe) if encoder is None else gstreamer_h264(probe, encoder, self.bitrate)
                writer = cv2.VideoWriter(target, api, cv2.VideoWriter_fourcc(*"avc1") if encoder is None else 0,
                                         self.fps, (64, 64), True)
                opened = writer.isOpened()
                writer.release()
                if opened:
                    return name, api, encoder
                tried.append(name)
        raise BackendUnavailableError(
            f"no H.264 encoder for {self.path} in this OpenCV {cv2.__version__} (tried: "
            f"{', '.join(tried) or 'none'}; GStreamer {'yes' if gstreamer else 'no'})"
            + ("; a bitrate needs a GStreamer encoder" if self.bitrate is not None else "")
            + ": pip's OpenCV wheels have no software H.264 encoder, only V4L2 hardware ones that need such a "
              "device. Use codec 'mpeg4' (.mp4) or 'mjpeg' (.avi), or an OpenCV with GStreamer (JetPack's on a "
              "Jetson: nvv4l2h264enc)")

    def _open_display(self, index: str) -> None:
        cv2 = self._cv2
        if not index.isdigit():
            raise ConfigError(f"display output {self.uri!r}: expected display://N with N a number, e.g. display://0")
        if not has_gui(cv2):
            raise BackendUnavailableError(
                f"{self.uri}: no display with this OpenCV {cv2.__version__}: it has no GUI support (GUI: NONE, as "
                "the pip opencv-python-headless that mfif[cpu] installs). For a window install a GUI build "
                "(pip uninstall opencv-python-headless && pip install opencv-python) or, on a Jetson, use "
                "JetPack's OpenCV; or write a file instead: VideoOutput('fused.mp4')")
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise ConfigError(f"{self.uri}: no display here (DISPLAY and WAYLAND_DISPLAY are unset: a headless "
                              "session or ssh without -X); write a file instead: VideoOutput('fused.mp4')")
        self._window = f"mfif {self.uri}"
        try:
            cv2.namedWindow(self._window, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise BackendUnavailableError(f"{self.uri}: OpenCV could not open a window: {exc}") from exc

    def write(self, frame: np.ndarray) -> None:
        """Show or append one frame. A closed output (``is_open`` False) ignores frames."""
        if not self.is_open:
            return
        if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and
                (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 3))):
            got = f"shape {frame.shape} {frame.dtype}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise InputError(f"{self.name} takes uint8 HxWx3 (BGR) or HxW frames, got {got}; convert float frames "
                             "in [0, 1] with (frame * 255 + 0.5).astype(np.uint8)")
        if self._shape is not None and frame.shape != self._shape:
            raise InputError(f"{self.name} is {self._shape} per frame; got a frame of shape {frame.shape}: a video "
                             "keeps one size (crop or resize the frames to it)")
        self._shape = frame.shape
        if self.path is None:
            self._show(frame)
        elif self.pattern is not None:
            from mfif.imageio import write_image

            write_image(self.pattern % self.frames, frame)
        else:
            if self._writer is None:
                self._open_file(frame)
            self._writer.write(frame)
        self.frames += 1

    def _show(self, frame: np.ndarray) -> None:
        cv2 = self._cv2
        cv2.imshow(self._window, frame)
        key = cv2.waitKey(1) & 0xFF
        if key in CLOSE_KEYS or cv2.getWindowProperty(self._window, cv2.WND_PROP_VISIBLE) < 1:
            self.close()

    def _open_file(self, frame: np.ndarray) -> None:
        from mfif.files import atomic_path

        cv2 = self._cv2
        partial = self._partial_path = self._partial.enter_context(atomic_path(self.path))
        height, width = frame.shape[:2]
        codec = CODECS[self.codec] if self.codec else VIDEO_CODECS[self.path.suffix.lower()]
        if self._h264 is not None and self._h264[2] is not None:  # H.264 through a GStreamer encoder
            _, api, encoder = self._h264
            codec = f"H.264 ({encoder})"
            self._writer = cv2.VideoWriter(gstreamer_h264(partial, encoder, self.bitrate), api, 0, self.fps,
                                           (width, height), frame.ndim == 3)
        else:
            self._writer = cv2.VideoWriter(str(partial), cv2.CAP_FFMPEG if self._h264 else cv2.CAP_ANY,
                                           cv2.VideoWriter_fourcc(*codec), self.fps, (width, height), frame.ndim == 3)
        if not self._writer.isOpened():
            self._writer = None
            error = DataError(f"OpenCV cannot write {self.path} with codec {codec} at {width}x{height}")
            self._partial.__exit__(DataError, error, None)  # removes the temporary file, keeps an earlier one
            raise error

    def close(self) -> None:
        """Finish the file (renamed to its real name) or close the window; safe to call twice."""
        if not self.is_open:
            return
        self.is_open = False
        if self.path is None:
            with contextlib.suppress(self._cv2.error):
                self._cv2.destroyWindow(self._window)
        elif self._writer is not None:
            self._writer.release()
            try:
                self._verify(self._partial_path)
            except DataError as error:
                self._partial.__exit__(DataError, error, None)  # removes the temporary file, keeps an earlier one
                raise
            self._partial.close()  # the rename

    def _verify(self, path: Path) -> None:
        """OpenCV's writer fails silently (a full disk leaves a short file): read the finished file
        back and make sure it holds every frame written."""
        cv2 = self._cv2
        capture = cv2.VideoCapture(str(path))
        try:
            readable = 0
            if capture.isOpened():
                while readable < self.frames and capture.grab():
                    readable += 1
        finally:
            capture.release()
        if readable != self.frames:
            raise DataError(f"writing {self.path} failed: {self.frames} frames were written but the file holds "
                            f"{readable} readable ones (a full disk, or the folder went away); an earlier file "
                            "there is untouched")

    def __enter__(self) -> "VideoOutput":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # an output dropped without close() still gets its file
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return f"VideoOutput({self.uri!r}, frames={self.frames}, open={self.is_open})"
