"""The ``mfif fuse`` command: README's quick start, images, stacks, folders of pairs, videos,
weight maps, and errors that end with a message instead of a traceback."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import demo_frames, exported, read_video, write_video

from mfif.cli import main
from mfif.imageio import read_image, write_image

REPO = Path(__file__).resolve().parent.parent


def test_readme_quick_start(tmp_path):
    """The command README gives, run by the installed ``mfif`` script in a fresh folder."""
    mfif = shutil.which("mfif") or pytest.skip("the mfif script is not installed (pip install -e .)")
    command = f"{mfif} fuse --demo demo && {mfif} fuse demo/demo_A.png demo/demo_B.png -o fused.png"
    assert command.replace(f"{mfif} ", "mfif ") in (REPO / "README.md").read_text()
    result = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    a, b = read_image(tmp_path / "demo/demo_A.png"), read_image(tmp_path / "demo/demo_B.png")
    fused = read_image(tmp_path / "fused.png")
    assert a.shape == b.shape == fused.shape == (480, 640, 3)
    assert not np.array_equal(a, b)
    assert "CPUExecutionProvider" in result.stdout and "wrote fused.png" in result.stdout


def test_images_with_weight_maps(tmp_path, capsys):
    a, b, _ = demo_frames(60, 80)
    paths = [write_image(tmp_path / "a.png", a), write_image(tmp_path / "b.png", b)]
    assert main(["fuse", *map(str, paths), "-o", str(tmp_path / "out/fused.png"), "--weights-out", str(tmp_path / "w.png"),
                 "--stats"]) == 0
    fused = read_image(tmp_path / "out/fused.png")
    assert fused.shape == a.shape
    weight_image = read_image(tmp_path / "w.png")
    assert weight_image.shape == (60, 80) and weight_image.dtype == np.uint8
    assert main(["fuse", *map(str, paths), "-o", str(tmp_path / "f2.png"), "--weights-out", str(tmp_path / "w.npy")]) == 0
    weights = np.load(tmp_path / "w.npy")
    assert weights.shape == (2, 60, 80)
    np.testing.assert_allclose(weights.sum(axis=0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(weight_image, np.clip(weights[0] * 255 + 0.5, 0, 255).astype(np.uint8))
    out = capsys.readouterr().out
    assert "postprocess" in out and "frames/s" in out


def test_a_stack(tmp_path, capsys):
    a, b, sharp = demo_frames(40, 56, colour=False)
    stack = tmp_path / "stack"
    for index, image in enumerate((a, b, sharp)):
        write_image(stack / f"{index:02d}.png", image)
    (stack / "notes.txt").write_text("not an image")
    assert main(["fuse", "--stack", str(stack), "-o", str(tmp_path / "fused.png"),
                 "--weights-out", str(tmp_path / "index.png")]) == 0
    assert read_image(tmp_path / "fused.png").shape == (40, 56)
    # 3+ sources: a colour per source mixed by weight over a legend band of swatches (issue 16; the
    # grey levels 0/127/255 this test used to expect are what the issue replaced).
    from mfif.runtime.cli import source_colours

    picture = read_image(tmp_path / "index.png")
    assert picture.shape[0] > 40 and picture.shape[1:] == (56, 3)
    legend = {tuple(pixel) for pixel in picture[40:].reshape(-1, 3)}
    assert {tuple(colour) for colour in source_colours(3)} <= legend
    assert "fused 3 images" in capsys.readouterr().out


def test_a_folder_of_pairs_reports_bad_pairs_and_goes_on(tmp_path, capsys):
    pairs = tmp_path / "pairs"
    for name, size in (("one", (40, 48)), ("two", (32, 40))):
        a, b, _ = demo_frames(*size)
        write_image(pairs / f"{name}_A.png", a)
        write_image(pairs / f"{name}_B.jpg", b)
    write_image(pairs / "bad_A.png", np.zeros((20, 20, 3), np.uint8))
    write_image(pairs / "bad_B.png", np.zeros((20, 24, 3), np.uint8))
    code = main(["fuse", str(pairs), "-o", str(tmp_path / "out"), "--weights-out", str(tmp_path / "weights")])
    captured = capsys.readouterr()
    assert code == 1
    assert read_image(tmp_path / "out/one.png").shape == (40, 48, 3)
    assert read_image(tmp_path / "out/two.png").shape == (32, 40, 3)
    assert (tmp_path / "weights/one_weights.png").is_file()
    assert not (tmp_path / "out/bad.png").exists()
    assert "bad: frames differ in shape: frame 0 is (20, 20, 3), frame 1 is (20, 24, 3)" in captured.err
    assert "fused 2 of 3 pairs" in captured.out
    (pairs / "bad_A.png").unlink()
    (pairs / "bad_B.png").unlink()
    assert main(["fuse", str(pairs), "-o", str(tmp_path / "out2")]) == 0
    # Another lossless format gives the same pixels; an unreadable file fails its pair only.
    (pairs / "broken_A.png").write_bytes(b"not an image")
    write_image(pairs / "broken_B.png", a)
    assert main(["fuse", str(pairs), "-o", str(tmp_path / "tif"), "--format", "tif"]) == 1
    assert np.array_equal(read_image(tmp_path / "tif/one.tif"), read_image(tmp_path / "out2/one.png"))
    assert "broken: cannot decode image" in capsys.readouterr().err
    # Parallel workers (one Fuser each) write the same pixels as one worker.
    assert main(["fuse", str(pairs), "-o", str(tmp_path / "one_job"), "--jobs", "1"]) == 1
    assert main(["fuse", str(pairs), "-o", str(tmp_path / "three_jobs"), "--jobs", "3"]) == 1
    for name in ("one", "two"):
        assert np.array_equal(read_image(tmp_path / f"one_job/{name}.png"), read_image(tmp_path / f"three_jobs/{name}.png"))
    capsys.readouterr()
    assert main(["fuse", str(pairs), "-o", str(tmp_path / "none"), "--jobs", "0"]) == 2
    assert "--jobs must be >= 1, not 0" in capsys.readouterr().err


def test_the_command_in_its_own_process_writes_everything_and_keeps_its_exit_code(tmp_path):
    """``mfif fuse`` ends its process without the interpreter's teardown: the outputs, the streams
    and the exit code must all survive that. Piped (no terminal), it prints no progress bar."""
    pairs = tmp_path / "pairs"
    for name, size in (("small", (24, 32)), ("large", (96, 128)), ("middle", (48, 64))):
        a, b, _ = demo_frames(*size)
        write_image(pairs / f"{name}_A.png", a)
        write_image(pairs / f"{name}_B.png", b)
    write_image(pairs / "odd_A.png", np.zeros((20, 20, 3), np.uint8))
    write_image(pairs / "odd_B.png", np.zeros((20, 24, 3), np.uint8))
    command = [sys.executable, "-m", "mfif.cli", "fuse", str(pairs), "-o", str(tmp_path / "out"), "--format", "tif"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "fused 3 of 4 pairs" in result.stdout and "odd: frames differ in shape" in result.stderr
    assert "pair/s" not in result.stderr
    for name, size in (("small", (24, 32)), ("large", (96, 128)), ("middle", (48, 64))):
        assert read_image(tmp_path / f"out/{name}.tif").shape == (*size, 3)
    bad = subprocess.run(command[:5] + ["-o", str(tmp_path / "x"), "--jobs", "-1"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "--jobs must be >= 1, not -1" in bad.stderr


def test_largest_pairs_go_first(tmp_path):
    from mfif.imageio import find_pairs
    from mfif.runtime.cli import largest_first

    for name, size in (("small", (16, 16)), ("large", (64, 80)), ("middle", (32, 40))):
        a, b, _ = demo_frames(*size)
        write_image(tmp_path / f"{name}_A.png", a)
        write_image(tmp_path / f"{name}_B.png", b)
    assert [pair.name for pair in largest_first(find_pairs(tmp_path))] == ["large", "middle", "small"]


def test_videos_and_a_bracketing_source(tmp_path, capsys):
    a, b, _ = demo_frames(48, 64)
    path_a = write_video(tmp_path / "a.avi", [a] * 8)
    path_b = write_video(tmp_path / "b.avi", [b] * 8)
    assert main(["fuse", "--video", str(path_a), str(path_b), "-o", str(tmp_path / "fused.mp4")]) == 0
    frames = read_video(tmp_path / "fused.mp4")
    assert len(frames) == 8 and frames[0].shape == (48, 64, 3)
    out = capsys.readouterr().out
    assert "fused 8 frames" in out and "wrote 8 to" in out
    bracket = write_video(tmp_path / "bracket.avi", [a, b] * 5)
    assert main(["fuse", "--video", str(bracket), "--bracket", "2", "--smoothing", "0.5", "-o", str(tmp_path / "fused.avi")]) == 0
    assert len(read_video(tmp_path / "fused.avi")) == 5


def test_video_with_jetson_utils_options_an_image_sequence_and_weight_maps(tmp_path, capsys):
    import cv2

    a, b, _ = demo_frames(48, 64)
    path_a = write_video(tmp_path / "a.avi", [a] * 8)
    path_b = write_video(tmp_path / "b.avi", [b] * 8)
    assert main(["fuse", "--video", str(path_a), str(path_b), "-o", str(tmp_path / "frames" / "%04d.png"),
                 "--weights-out", str(tmp_path / "weights.avi"), "--input-width", "80", "--input-height", "60",
                 "--input-rate", "12", "--headless", "--max-frames", "5"]) == 0
    frames = sorted((tmp_path / "frames").iterdir())
    assert [path.name for path in frames] == [f"{i:04d}.png" for i in range(5)]
    assert all(read_image(path).shape == (60, 80, 3) for path in frames)      # resized to --input-width/height
    weights = read_video(tmp_path / "weights.avi")
    assert len(weights) == 5 and weights[0].shape == (60, 80, 3)
    left, right = weights[0][:, :20].mean(), weights[0][:, -20:].mean()
    assert left > 170 > 85 > right          # A is sharp on the left: its weight (white = 1) is high there
    capture = cv2.VideoCapture(str(tmp_path / "weights.avi"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(12)                # --input-rate sets the output's rate
    capture.release()
    out = capsys.readouterr().out
    assert "wrote 5 to" in out and "weight maps to" in out


def test_weight_maps_of_a_three_position_bracket_are_colour_with_a_legend(tmp_path):
    from mfif.runtime.cli import source_colours

    a, b, sharp = demo_frames(48, 64)
    bracket = write_video(tmp_path / "bracket.avi", [a, b, sharp] * 3)
    assert main(["fuse", "--video", str(bracket), "--bracket", "3", "-o", str(tmp_path / "fused.avi"),
                 "--weights-out", str(tmp_path / "w" / "%i.png"), "--preview", "off"]) == 0
    pictures = [read_image(tmp_path / "w" / f"{i}.png") for i in range(3)]
    assert all(picture.shape[0] > 48 and picture.shape[1:] == (64, 3) for picture in pictures)
    legend = {tuple(pixel) for pixel in pictures[0][48:].reshape(-1, 3)}
    assert {tuple(colour) for colour in source_colours(3)} <= legend


def test_h264_output_where_this_opencv_has_an_encoder(tmp_path, capsys):
    from mfif.errors import BackendUnavailableError
    from mfif.runtime.video import VideoOutput

    a, b, _ = demo_frames(48, 64)
    path_a = write_video(tmp_path / "a.avi", [a] * 4)
    path_b = write_video(tmp_path / "b.avi", [b] * 4)
    argv = ["fuse", "--video", str(path_a), str(path_b), "-o", str(tmp_path / "fused.mp4"), "--output-codec", "h264",
            "--headless"]
    try:
        VideoOutput(tmp_path / "probe.mp4", codec="h264")
    except BackendUnavailableError:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "no H.264 encoder for" in err and "Use codec 'mpeg4' (.mp4) or 'mjpeg' (.avi)" in err
        assert not (tmp_path / "fused.mp4").exists()
        return
    assert main(argv) == 0 and len(read_video(tmp_path / "fused.mp4")) == 4


@pytest.mark.parametrize("argv, message", [
    (["--output-codec", "mpeg4", "--bitrate", "4000000"], "only the H.264 encoders take a bitrate"),
    (["--input-width", "80"], "give --input-width and --input-height together (got width 80, height None)"),
    (["--input-width", "4", "--input-height", "4"], "at least 8 pixels, not 4x4"),
    (["--weights-out", "{out}.npy"], "--weights-out is for images (one map per fused image) and, with --video"),
])
def test_video_option_errors_name_the_values(tmp_path, capsys, argv, message):
    a, _, _ = demo_frames(20, 24)
    video = write_video(tmp_path / "v.avi", [a] * 4)
    values = {"out": tmp_path / "out"}
    code = main(["fuse", "--video", str(video), "-o", str(tmp_path / "f.avi"), "--headless",
                 *(arg.format(**values) for arg in argv)])
    assert code == 2 and message in capsys.readouterr().err


def test_csi_sources_take_the_input_mode_in_their_uri():
    from mfif.runtime.cli import _csi_mode
    from mfif.runtime.stream import describe_source

    spec = _csi_mode("csi://0", (1280, 720), 60.0)
    assert spec == "csi://0?width=1280&height=720&framerate=60"
    assert "width=1280, height=720, framerate=60/1" in describe_source(spec).spec
    assert _csi_mode("csi://1?width=640&height=480", (1280, 720), None) == "csi://1?width=640&height=480"
    assert _csi_mode("a.mp4", (1280, 720), 30.0) == "a.mp4"


def test_video_output_sequences_and_gstreamer_pipelines(tmp_path):
    from mfif.errors import ConfigError
    from mfif.runtime.video import VideoOutput, gstreamer_h264

    for bad in ("f/%04d.gif", "f/%d_%d.png"):
        with pytest.raises(ConfigError, match="expected one number field and an image suffix"):
            VideoOutput(tmp_path / bad)
    with pytest.raises(ConfigError, match="a codec or bitrate is for video files"):
        VideoOutput(tmp_path / "f%03d.jpg", codec="h264")
    with pytest.raises(ConfigError, match="unknown codec 'vp9'; choose one of mjpeg, mpeg4, h264"):
        VideoOutput(tmp_path / "x.mp4", codec="vp9")
    # Bitrates in each encoder's unit: bit/s for nvv4l2h264enc and openh264enc, kbit/s for x264enc.
    assert "nvvidconv ! video/x-raw(memory:NVMM), format=NV12 ! nvv4l2h264enc bitrate=4000000 ! h264parse ! " \
           "mp4mux ! filesink location=" in gstreamer_h264(tmp_path / "a.mp4", "nvv4l2h264enc", 4_000_000)
    assert "x264enc bitrate=4000 speed-preset=ultrafast" in gstreamer_h264(tmp_path / "a.mkv", "x264enc", 4_000_000)
    assert "! matroskamux !" in gstreamer_h264(tmp_path / "a.mkv", "x264enc")
    assert "openh264enc ! h264parse ! qtmux" in gstreamer_h264(tmp_path / "a.mov", "openh264enc")


def test_another_model_and_backend(tmp_path, capsys):
    a, b, _ = demo_frames(30, 40, colour=False)
    paths = [write_image(tmp_path / "a.png", a), write_image(tmp_path / "b.png", b)]
    model = exported("xu2018", channels=1, filters=8)
    assert main(["fuse", *map(str, paths), "-o", str(tmp_path / "f.png"), "--model", str(model), "--backend", "onnxruntime",
                 "--threads", "1", "--device", "cpu"]) == 0
    assert "model xu2018 (fp32) on onnxruntime: CPUExecutionProvider (1 threads)" in capsys.readouterr().out
    assert main(["fuse", *map(str, paths), "-o", str(tmp_path / "f.png"), "--model", str(model), "--weights-out",
                 str(tmp_path / "w.png")]) == 2
    assert "gives no weight map" in capsys.readouterr().err


def test_a_folder_of_pairs_with_a_checkpoint_on_torch(tmp_path, capsys):
    """Only ONNX Runtime takes a thread count: a folder run on torch (several --jobs workers or
    one) gets none, and --threads there is an error that says so (issue 16)."""
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    pairs = tmp_path / "pairs"
    for name, size in (("one", (40, 48)), ("two", (32, 40))):
        a, b, _ = demo_frames(*size)
        write_image(pairs / f"{name}_A.png", a)
        write_image(pairs / f"{name}_B.png", b)
    checkpoint = str(REPO / "train/weights/focusmap.safetensors")
    assert main(["fuse", str(pairs), "-o", str(tmp_path / "two_jobs"), "--model", checkpoint, "--jobs", "2"]) == 0
    assert main(["fuse", str(pairs), "-o", str(tmp_path / "one_job"), "--model", checkpoint]) == 0
    assert "on torch" in capsys.readouterr().out
    for name in ("one", "two"):
        assert np.array_equal(read_image(tmp_path / f"two_jobs/{name}.png"), read_image(tmp_path / f"one_job/{name}.png"))
    assert main(["fuse", str(pairs), "-o", str(tmp_path / "x"), "--model", checkpoint, "--threads", "2"]) == 2
    assert "--threads sets ONNX Runtime's CPU threads" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Specified provider")
@pytest.mark.parametrize("argv, message", [
    ([], "give one of: images"),
    (["{a}"], "needs at least two"),
    (["{a}", "{missing}", "-o", "{out}"], "image file not found"),
    (["{a}", "{grey}", "-o", "{out}"], "but frame 1 is grey"),
    (["{a}", "{a}"], "with -o/--output"),
    (["{a}", "{a}", "--stack", "{dir}", "-o", "{out}"], "got images and --stack"),
    (["--stack", "{missing}", "-o", "{out}"], "stack folder not found"),
    (["--video", "{a}", "{a}", "{a}", "-o", "{out}.mp4"], "two synchronized sources or one"),
    (["--video", "{video}", "--weights-out", "{out}", "-o", "{out}.mp4"], "--weights-out is for images"),
    (["--video", "{video}", "-o", "{out}.gif"], "needs one of the suffixes"),
    (["--video", "{video}", "--preview", "on", "-o", "{out}.mp4"], "no display"),
    (["--video", "{missing}", "{video}", "-o", "{out}.mp4"], "video file not found"),
    (["{a}", "{a}", "-o", "{out}", "--model", "{missing}"], "model file not found"),
    (["{a}", "{a}", "-o", "{out}", "--device", "cuda"], "asked for CUDAExecutionProvider"),
])
def test_errors_end_with_a_message(tmp_path, capsys, argv, message):
    a, _, _ = demo_frames(20, 24)
    grey = demo_frames(20, 24, colour=False)[0]
    values = {"a": write_image(tmp_path / "a.png", a), "grey": write_image(tmp_path / "g.png", grey),
              "missing": tmp_path / "missing.png", "out": tmp_path / "out.png", "dir": tmp_path,
              "video": write_video(tmp_path / "v.avi", [a] * 4)}
    env = dict(os.environ)
    os.environ.pop("DISPLAY", None)
    os.environ.pop("WAYLAND_DISPLAY", None)
    try:
        code = main(["fuse", *(arg.format(**values) for arg in argv)])
    finally:
        os.environ.clear()
        os.environ.update(env)
    assert code == 2
    assert message in capsys.readouterr().err


def test_ctrl_c_during_a_video_leaves_a_playable_file(tmp_path):
    a, b, _ = demo_frames(48, 64)
    path_a = write_video(tmp_path / "a.avi", [a] * 400)
    path_b = write_video(tmp_path / "b.avi", [b] * 400)
    output = tmp_path / "fused.avi"
    process = subprocess.Popen([sys.executable, "-m", "mfif.cli", "fuse", "--video", str(path_a), str(path_b), "-o", str(output)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60  # the video grows under a hidden temporary name until it is closed
        while time.time() < deadline and sum(p.stat().st_size for p in tmp_path.glob(".fused.avi.*")) <= 10_000:
            time.sleep(0.05)
        assert not output.exists()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "interrupted" in err
    frames = read_video(output)
    assert 0 < len(frames) < 400 and frames[0].shape == (48, 64, 3)
    assert not list(tmp_path.glob(".fused.avi.*"))  # renamed to the real name, nothing left behind
    written = int(out.split("wrote ")[1].split()[0])
    assert abs(written - len(frames)) <= 1  # Ctrl-C may land between a write and its count
