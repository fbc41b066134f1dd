"""Streaming with real OpenCV video files written by the tests: synchronization, bracketing,
dropping for live sources only, clean ends, errors that name the source, temporal smoothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import demo_frames, focus_measure_onnx, read_video, write_video

from mfif.errors import ConfigError, InputError, SourceError
from mfif.runtime import Fuser
from mfif.evaluation.temporal import flicker
from mfif.runtime.stream import describe_source

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fuser():
    return Fuser()


def noisy_sequence(frame: np.ndarray, count: int, seed: int, sigma: float = 3.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(frame + rng.normal(0, sigma, frame.shape), 0, 255).astype(np.uint8) for _ in range(count)]


def make_pair_videos(folder: Path, count: int = 12, size=(72, 96), count_b: int | None = None, suffix=".avi"):
    a, b, _ = demo_frames(*size)
    path_a = write_video(folder / f"a{suffix}", noisy_sequence(a, count, seed=1))
    path_b = write_video(folder / f"b{suffix}", noisy_sequence(b, count if count_b is None else count_b, seed=2))
    return path_a, path_b


def mfif_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("mfif-") and t.is_alive()]


def test_two_files_give_every_frame_in_order(tmp_path, fuser):
    path_a, path_b = make_pair_videos(tmp_path)
    stream = fuser.stream(path_a, path_b)
    results = list(stream)
    expected = [fuser(x, y) for x, y in zip(read_video(path_a), read_video(path_b))]
    assert len(results) == len(expected) == 12
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)
    assert stream.dropped == 0 and stream.frames_out == 12 and stream.frame_count == 12
    assert stream.source_fps == pytest.approx(25.0)
    assert not stream.live and mfif_threads() == []


def test_mp4_files_of_different_lengths_end_with_the_shorter(tmp_path, fuser):
    path_a, path_b = make_pair_videos(tmp_path, count=9, count_b=6, suffix=".mp4")
    stream = fuser.stream(str(path_a), str(path_b))
    assert len(list(stream)) == 6
    assert stream.ended_by == str(path_b)


def test_a_focus_bracketing_source(tmp_path, fuser):
    a, b, _ = demo_frames(64, 80)
    frames = [frame for pair in zip(noisy_sequence(a, 5, 1), noisy_sequence(b, 5, 2)) for frame in pair][:9]
    path = write_video(tmp_path / "bracket.avi", frames)
    decoded = read_video(path)
    results = list(fuser.stream(path))  # 9 frames, 2 focus positions: 4 fused, the odd one left over
    assert len(results) == 4
    for index, got in enumerate(results):
        np.testing.assert_array_equal(got, fuser(decoded[2 * index], decoded[2 * index + 1]))
    three = list(fuser.stream(path, bracket=3))
    assert len(three) == 3
    np.testing.assert_array_equal(three[1], fuser.fuse(decoded[3:6]))


def test_files_never_drop_even_with_a_slow_consumer(tmp_path, fuser):
    path_a, path_b = make_pair_videos(tmp_path, count=10)
    stream = fuser.stream(path_a, path_b, queue_size=1)
    count = 0
    for _ in stream:
        time.sleep(0.03)
        count += 1
    assert count == 10 and stream.dropped == 0


def test_a_live_source_drops_the_oldest_and_reports_its_end_as_a_disconnect(tmp_path, fuser):
    path_a, path_b = make_pair_videos(tmp_path, count=40, size=(48, 64))
    stream = fuser.stream(path_a, path_b, live=True)
    received = []
    with pytest.raises(SourceError, match=r"a\.avi stopped delivering frames after 40 frames"):
        for fused in stream:
            received.append(fused)
            time.sleep(0.05)
    assert stream.dropped > 0
    assert stream.frames_out + stream.dropped == stream.frames_read == 40
    last = fuser(read_video(path_a)[-1], read_video(path_b)[-1])  # the newest frames are never the ones dropped
    np.testing.assert_array_equal(received[-1], last)
    assert mfif_threads() == []


def test_missing_unreadable_and_empty_sources(tmp_path, fuser):
    with pytest.raises(SourceError, match="video file not found"):
        fuser.stream(tmp_path / "missing.mp4", tmp_path / "missing2.mp4")
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(SourceError, match="garbage.avi"):
        list(fuser.stream(garbage, garbage, timeout=20))
    with pytest.raises(SourceError, match="cannot open camera 97"):
        list(fuser.stream(97, 98, timeout=20))
    with pytest.raises(ConfigError, match="a video source is"):
        fuser.stream(None, "x")
    with pytest.raises(ConfigError, match="bracket=3 is for one focus-bracketing source"):
        fuser.stream(garbage, garbage, bracket=3)
    assert mfif_threads() == []


def test_a_video_with_no_frames(tmp_path, fuser):
    import cv2

    empty = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    writer.release()
    with pytest.raises(SourceError, match="empty.avi"):
        list(fuser.stream(empty))


def test_a_source_that_never_opens_times_out(tmp_path, fuser):
    fifo = tmp_path / "stalled"
    os.mkfifo(fifo)  # opening a pipe with no writer blocks inside OpenCV
    start = time.perf_counter()
    try:
        with pytest.raises(SourceError, match=r"did not open within 1 s"):
            list(fuser.stream(fifo, fifo, timeout=1.0))
        assert time.perf_counter() - start < 6
    finally:
        _unblock(fifo)  # a stuck open holds OpenCV's video I/O locks; let the daemon capture thread go
    assert mfif_threads() == []


def _unblock(fifo: Path, seconds: float = 20.0) -> None:
    deadline = time.perf_counter() + seconds
    while mfif_threads() and time.perf_counter() < deadline:
        try:
            handle = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # fails while nobody is opening it
        except OSError:
            time.sleep(0.02)
            continue
        try:
            os.write(handle, b"\0" * 1024)
        except OSError:
            pass
        os.close(handle)
        time.sleep(0.02)


def test_sources_of_different_sizes(tmp_path, fuser):
    a, b, _ = demo_frames(48, 64)
    path_a = write_video(tmp_path / "a.avi", [a] * 3)
    path_b = write_video(tmp_path / "b.avi", [b[:40, :56].copy()] * 3)
    with pytest.raises(InputError, match=r"frame 0 is \(48, 64, 3\), frame 1 is \(40, 56, 3\)"):
        list(fuser.stream(path_a, path_b))
    assert mfif_threads() == []


def test_break_and_close_stop_the_threads(tmp_path, fuser):
    path_a, path_b = make_pair_videos(tmp_path, count=30)
    for index, _ in enumerate(fuser.stream(path_a, path_b)):
        if index == 1:
            break
    time.sleep(0.1)
    assert mfif_threads() == []
    with fuser.stream(path_a, path_b, max_frames=5) as stream:
        assert len(list(stream)) == 5


def test_source_kinds():
    assert describe_source(0) == describe_source("0")
    assert describe_source(0).live and describe_source(0).kind == "camera"
    assert describe_source("/dev/video2").kind == "device"
    assert describe_source("rtsp://10.0.0.2:8554/cam").live
    argus = describe_source("nvarguscamerasrc sensor-id=0 ! nvvidconv ! video/x-raw,format=BGRx ! appsink")
    assert argus.kind == "gstreamer" and argus.live
    assert not describe_source("filesrc location=a.mp4 ! decodebin ! appsink").live
    assert describe_source(0, live=False).live is False


def test_source_uris_as_jetson_inference_names_them(tmp_path):
    csi = describe_source("csi://1?width=1280&height=720&framerate=60")
    assert csi.kind == "gstreamer" and csi.live and csi.name == "CSI camera csi://1?width=1280&height=720&framerate=60"
    assert csi.spec.startswith("nvarguscamerasrc sensor-id=1 ! ") and "width=1280, height=720, framerate=60/1" in csi.spec
    assert csi.spec.endswith("format=BGR ! appsink drop=true max-buffers=1")
    assert "width=1920, height=1080, framerate=30/1" in describe_source("csi://0").spec
    assert describe_source("v4l2:///dev/video2") == describe_source("/dev/video2")
    video = write_video(tmp_path / "a.avi", [np.zeros((8, 8, 3), np.uint8)] * 2)
    assert describe_source(f"file://{video}") == describe_source(video) and not describe_source(f"file://{video}").live
    assert describe_source("rtsp://10.0.0.2:8554/cam").kind == "network"
    with pytest.raises(SourceError, match="video file not found: missing.avi"):
        describe_source("file://missing.avi")
    for uri, message in [("csi://front", "expected csi://N"), ("csi://0?exposure=3", "'exposure=3' is not one of width=N"),
                         ("v4l2://video0", "three slashes"), ("display://0", r"an output: VideoOutput\('display://0'\)"),
                         ("webcam://0", "unknown source scheme in 'webcam://0'")]:
        with pytest.raises(ConfigError, match=message):
            describe_source(uri)


def test_a_csi_camera_without_gstreamer_support_names_the_camera(fuser):
    import cv2

    if cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
        pytest.skip("this OpenCV has GStreamer")
    with pytest.raises(SourceError, match=r"CSI camera csi://0: this OpenCV .* has no GStreamer support"):
        list(fuser.stream("csi://0", "csi://1"))


def test_readme_camera_loop_in_five_lines_runs_on_video_files(tmp_path):
    """README's loop, run as it is written, on two generated MJPG files named as it names them."""
    text = (REPO / "README.md").read_text()
    block = next(part.split("```")[0] for part in text.split("```python\n") if "VideoOutput(" in part.split("```")[0])
    assert len([line for line in block.splitlines() if line.strip()]) == 5
    path_a, path_b = make_pair_videos(tmp_path, count=6)
    path_a.rename(tmp_path / "near.avi")
    path_b.rename(tmp_path / "far.avi")
    result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    fused = read_video(tmp_path / "fused.avi")
    expected = [Fuser()(a, b) for a, b in zip(read_video(tmp_path / "near.avi"), read_video(tmp_path / "far.avi"))]
    assert len(fused) == len(expected) == 6
    for got, want in zip(fused, expected):  # MJPG's loss only
        assert got.shape == want.shape and np.abs(got.astype(int) - want).mean() < 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["far.avi", "fused.avi", "near.avi"]


def test_video_output_files_are_atomic_and_errors_name_the_values(tmp_path):
    from mfif.errors import BackendUnavailableError, DataError
    from mfif.runtime.video import VideoOutput, has_gui

    a, b, _ = demo_frames(48, 64)
    target = tmp_path / "out" / "fused.mp4"
    target.parent.mkdir()
    target.write_bytes(b"an earlier file")
    output = VideoOutput(f"file://{target}", fps=12)
    for frame in (a, b, a):
        output.write(frame)
    assert target.read_bytes() == b"an earlier file"  # until close, the frames go to a temporary file
    with pytest.raises(InputError, match=r"is \(48, 64, 3\) per frame; got a frame of shape \(48, 60, 3\)"):
        output.write(a[:, :60])
    with pytest.raises(InputError, match=r"takes uint8 .* got shape \(48, 64, 3\) float32"):
        output.write(a.astype(np.float32))
    output.close()
    output.close()
    assert output.frames == 3 and not output.is_open and len(read_video(target)) == 3
    assert sorted(p.name for p in target.parent.iterdir()) == ["fused.mp4"]
    with VideoOutput(tmp_path / "grey.avi") as grey:
        grey.write(a[:, :, 0].copy())
    assert read_video(tmp_path / "grey.avi")[0].shape == (48, 64, 3)  # OpenCV decodes MJPG to BGR
    with pytest.raises(ConfigError, match="needs one of the suffixes .avi, .mp4"):
        VideoOutput("fused.gif")
    with pytest.raises(ConfigError, match="unknown video output 'rtsp://host/x'"):
        VideoOutput("rtsp://host/x")
    with pytest.raises(ConfigError, match="expected display://N"):
        VideoOutput("display://left")
    with pytest.raises(DataError, match=r"cannot create the folder"):
        VideoOutput(target / "x.avi").write(a)  # below a file: no folder can be made
    import cv2

    if not has_gui(cv2):  # the pip headless wheel, as here
        with pytest.raises(BackendUnavailableError, match="no GUI support .*opencv-python-headless"):
            VideoOutput("display://0")


def test_gstreamer_pipeline_without_gstreamer_support(fuser):
    import cv2

    if cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
        pytest.skip("this OpenCV has GStreamer")
    with pytest.raises(SourceError, match="no GStreamer support"):
        list(fuser.stream("videotestsrc is-live=true ! videoconvert ! appsink", bracket=2))


def test_temporal_smoothing_reduces_flicker(tmp_path):
    """A static scene with sensor noise, fused by a model that reacts to focus (and so to noise in
    flat areas): smoothing the weight maps must steady them and the fused frames. The figures are
    printed (pytest -s) for docs/runtime.md."""
    path_a, path_b = make_pair_videos(tmp_path, count=16, size=(96, 128))
    fuser = Fuser(focus_measure_onnx())
    figures = {}
    for smoothing in (0.0, 0.8):
        results = list(fuser.stream(path_a, path_b, smoothing=smoothing, return_weights=True))
        fused = [f for f, _ in results]
        weights = [w for _, w in results]
        figures[smoothing] = (flicker(fused), flicker(weights))
        np.testing.assert_allclose(weights[-1].sum(axis=0), 1.0, atol=1e-4)
    sources = flicker(read_video(path_a))
    print(f"\nflicker (grey levels): sources {sources:.3f}, fused {figures[0.0][0]:.3f} -> {figures[0.8][0]:.3f} "
          f"with smoothing 0.8; weight flicker {figures[0.0][1]:.5f} -> {figures[0.8][1]:.5f}")
    assert figures[0.8][1] < 0.6 * figures[0.0][1]
    assert figures[0.8][0] < figures[0.0][0]
    assert fuser.smoothing == 0.8


def test_ctrl_c_ends_a_stream_cleanly(tmp_path):
    path_a, path_b = make_pair_videos(tmp_path, count=200, size=(48, 64))
    code = (
        "import sys, threading, time\n"
        "from mfif import Fuser\n"
        f"stream = Fuser().stream({str(path_a)!r}, {str(path_b)!r})\n"
        "try:\n"
        "    for fused in stream:\n"
        "        print('frame', flush=True)\n"
        "        time.sleep(0.05)\n"
        "except KeyboardInterrupt:\n"
        "    time.sleep(0.2)\n"
        "    alive = [t.name for t in threading.enumerate() if t.name.startswith('mfif-')]\n"
        "    print('interrupted after', stream.frames_out, 'threads', alive, flush=True)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "frame"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "threads []" in out and "interrupted after" in out


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), 0.0, -1.0])
def test_timeouts_that_are_not_finite_positive_seconds_are_refused(tmp_path, fuser, timeout):
    path_a, path_b = make_pair_videos(tmp_path, count=2, size=(16, 16))
    with pytest.raises(ConfigError, match=rf"timeout must be a finite number of seconds > 0, not {timeout}"):
        fuser.stream(path_a, path_b, timeout=timeout)

