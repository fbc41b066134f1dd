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
DISPLAY = "display://"
FILE = "file://"
CLOSE_KEYS = (27, ord("q"))  # Esc, q


def has_gui(cv2) -> bool:
    """Whether this OpenCV was built with a GUI backend (GTK, Qt, Win32, Cocoa); the pip headless
    wheels report ``GUI: NONE``."""
    found = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return bool(found) and found.group(1).upper() != "NONE"


class VideoOutput:
    """``VideoOutput(uri, fps=30.0)``: a video file or a window for fused frames (see the module
    help). ``write(frame)`` takes uint8 frames, HxWx3 BGR or HxW grey, all of one size."""

    def __init__(self, uri: str | Path, fps: float = 30.0) -> None:
        self.uri = str(uri)
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
            self._open_display(self.uri[len(DISPLAY):])
            return
        if "://" in self.uri and not self.uri.startswith(FILE):
            raise ConfigError(f"unknown video output {self.uri!r}: give a file (out.mp4 or file://out.mp4) or a "
                              "window (display://0)")
        self.path = Path(self.uri[len(FILE):] if self.uri.startswith(FILE) else self.uri)
        if self.path.suffix.lower() not in VIDEO_CODECS:
            raise ConfigError(f"video output {self.path} needs one of the suffixes {', '.join(VIDEO_CODECS)}")

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else self.uri

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
        codec = VIDEO_CODECS[self.path.suffix.lower()]
        self._writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*codec), self.fps, (width, height),
                                       frame.ndim == 3)
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
