"""Streams from a real RTSP server started on 127.0.0.1 by the test (GStreamer's RTSP server):
files paired with a live stream never drop, --max-frames counts fused frames, a lost server ends
the stream with a clean SourceError, and reconnection rides out a server restart."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import demo_frames, write_video

from mfif.errors import SourceError
from mfif.runtime import Fuser

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).with_name("rtsp_server.py")
WIDTH, HEIGHT, FPS = 64, 48, 25


def _server_available() -> str | None:
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    try:
        result = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return f"no system Python at {SYSTEM_PYTHON}"
    if result.returncode:
        return ("GStreamer's RTSP server is not installed (apt-get install gir1.2-gst-rtsp-server-1.0 "
                "python3-gst-1.0 gstreamer1.0-plugins-good)")
    return None


pytestmark = pytest.mark.skipif(bool(_server_available()), reason=_server_available() or "")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RtspServer:
    def __init__(self, port: int):
        self.port = port
        self.url = f"rtsp://127.0.0.1:{port}/cam"
        self.process: subprocess.Popen | None = None

    def start(self) -> "RtspServer":
        self.process = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), str(self.port), str(WIDTH), str(HEIGHT), str(FPS)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            self.stop()
            pytest.fail(f"the RTSP server did not start: {line!r} {self.process.stderr.read()[-500:]}")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def server():
    running = RtspServer(free_port()).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def fuser():
    return Fuser()


def test_a_file_paired_with_a_live_stream_never_drops(tmp_path, server, fuser):
    a = demo_frames(HEIGHT, WIDTH)[0]
    path = write_video(tmp_path / "a.avi", [a] * 30)
    stream = fuser.stream(str(path), server.url, queue_size=1)
    received = 0
    for _ in stream:
        received += 1
        time.sleep(0.01)
    assert received == 30 and stream.dropped == 0
    assert stream.ended_by == str(path)


def test_max_frames_counts_fused_frames_when_a_live_stream_drops(server, fuser):
    stream = fuser.stream(server.url, server.url, max_frames=6, queue_size=1)
    received = 0
    for _ in stream:
        received += 1
        time.sleep(0.2)               # slower than the 25 fps source: the stream drops meanwhile
    assert received == stream.frames_out == 6
    assert stream.dropped > 0 and stream.frames_read > 6


def test_a_killed_server_ends_the_stream_with_a_clean_error(server, fuser):
    stream = fuser.stream(server.url, bracket=2, timeout=3)
    received = 0
    started = time.perf_counter()
    with pytest.raises(SourceError, match=rf"network {server.url}|no frame from network {server.url}"):
        for _ in stream:
            received += 1
            if received == 5:
                server.stop()
    assert received >= 5
    assert time.perf_counter() - started < 20


def test_reconnect_rides_out_a_server_restart(server, fuser):
    stream = fuser.stream(server.url, bracket=2, timeout=3, reconnect=6, max_frames=30)
    received, restarted = [], False
    for fused in stream:
        received.append(fused)
        if len(received) == 5 and not restarted:
            server.stop()
            time.sleep(1.5)           # the camera reboots
            server.start()
            restarted = True
    assert len(received) == 30
    assert stream.reconnects >= 1 and stream.stats["reconnects"] == stream.reconnects
    assert all(frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8 for frame in received)
