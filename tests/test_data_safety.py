"""Nothing lost, nothing silent: atomic image outputs on a full disk, folder runs that go on past a
bad pair and stop promptly on Ctrl-C, truncated JPEGs, outputs checked before any work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import demo_frames

from mfif.cli import main
from mfif.errors import ConfigError, DataError
from mfif.files import atomic_path, write_bytes_atomic
from mfif.imageio import check_image_output, jpeg_is_truncated, read_image, write_image

cv2 = pytest.importorskip("cv2")
REPO = Path(__file__).resolve().parent.parent

# Runs `mfif` with the file-size limit of a nearly full disk: a write past `limit` bytes fails with
# EFBIG (SIGXFSZ ignored), exactly as a real full disk fails a write part-way.
FULL_DISK = (
    "import resource, signal, sys\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    "limit = int(sys.argv[1])\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
    "from mfif.cli import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


def full_disk_run(limit: int, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", FULL_DISK, str(limit), *arguments], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def write_pair_files(folder: Path, name: str, size=(64, 80), seed: int = 0) -> None:
    a, b, _ = demo_frames(*size, seed=seed)
    write_image(folder / f"{name}_A.png", a)
    write_image(folder / f"{name}_B.png", b)


def test_a_full_disk_never_destroys_the_earlier_output(tmp_path):
    a, b, _ = demo_frames(120, 160)
    paths = [str(write_image(tmp_path / "a.png", a)), str(write_image(tmp_path / "b.png", b))]
    output = tmp_path / "fused.png"
    assert main(["fuse", *paths, "-o", str(output)]) == 0
    good = output.read_bytes()
    assert len(good) > 4000

    result = full_disk_run(2000, "fuse", *paths, "-o", str(output))
    assert result.returncode == 2
    assert f"cannot write {output}" in result.stderr and "untouched" in result.stderr
    assert output.read_bytes() == good                           # the earlier file survived
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "fused.png"]  # no partial left


def test_a_full_disk_in_a_folder_run_reports_each_pair_and_leaves_no_truncated_files(tmp_path):
    pairs = tmp_path / "pairs"
    for index in range(3):
        write_pair_files(pairs, f"p{index}", size=(120, 160), seed=index)
    out = tmp_path / "out"
    result = full_disk_run(2000, "fuse", str(pairs), "-o", str(out), "--jobs", "1")
    assert result.returncode == 1, result.stderr
    for index in range(3):
        assert f"p{index}: cannot write" in result.stderr
    assert "fused 0 of 3 pairs" in result.stdout
    assert list(out.iterdir()) == []                              # no 0-byte or truncated files


def test_an_interrupted_write_keeps_the_old_file(tmp_path):
    target = write_bytes_atomic(tmp_path / "data.bin", b"good")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as partial:
            partial.write_bytes(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]


def test_outputs_are_checked_before_any_fusing(tmp_path, capsys):
    a, b, _ = demo_frames(32, 32)
    paths = [str(write_image(tmp_path / "a.png", a)), str(write_image(tmp_path / "b.png", b))]
    with pytest.raises(ConfigError, match=r"cannot write images of type '\.xyz'.*\.png"):
        check_image_output(tmp_path / "fused.xyz")
    assert main(["fuse", *paths, "-o", str(tmp_path / "fused.xyz")]) == 2
    assert "cannot write images of type '.xyz'" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["fuse", *paths, "-o", str(blocker / "fused.png")]) == 2
    assert f"{blocker} is a file, not a folder" in capsys.readouterr().err
    pairs = tmp_path / "pairs"
    write_pair_files(pairs, "one")
    assert main(["fuse", str(pairs), "-o", str(blocker / "out")]) == 2
    assert f"cannot create the output folder {blocker / 'out'}: Not a directory" in capsys.readouterr().err


def test_truncated_jpeg_is_an_error_not_black_rows(tmp_path):
    image = demo_frames(96, 128)[0]
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    whole = encoded.tobytes()
    assert not jpeg_is_truncated(encoded)
    (tmp_path / "whole.jpg").write_bytes(whole + b"\x00" * 16 + b"trailer")  # data after the end marker is fine
    assert read_image(tmp_path / "whole.jpg").shape == image.shape
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(DataError, match=r"truncated JPEG \(\d+ bytes"):
        read_image(cut)
    write_image(tmp_path / "b.jpg", image)
    assert main(["fuse", str(cut), str(tmp_path / "b.jpg"), "-o", str(tmp_path / "fused.png")]) == 2
    assert not (tmp_path / "fused.png").exists()


def test_a_dangling_link_fails_its_pair_only(tmp_path, capsys):
    pairs = tmp_path / "pairs"
    write_pair_files(pairs, "good")
    write_pair_files(pairs, "broken", seed=1)
    (pairs / "broken_A.png").unlink()
    (pairs / "broken_A.png").symlink_to(tmp_path / "gone.png")
    out = tmp_path / "out"
    assert main(["fuse", str(pairs), "-o", str(out), "--jobs", "2"]) == 1
    captured = capsys.readouterr()
    assert "broken: image file not found" in captured.err
    assert "fused 1 of 2 pairs" in captured.out
    assert [p.name for p in out.iterdir()] == ["good.png"]


def test_ctrl_c_stops_a_folder_run_promptly_and_skip_existing_resumes(tmp_path):
    pairs = tmp_path / "pairs"
    count = 40
    for index in range(count):
        write_pair_files(pairs, f"p{index:02d}", size=(240, 320), seed=index)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "mfif.cli", "fuse", str(pairs), "-o", str(out), "--jobs", "1"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(list(out.glob("*.png"))) < 2:
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        interrupted = time.perf_counter()
        _, err = process.communicate(timeout=30)
        stopped_after = time.perf_counter() - interrupted
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert stopped_after < 1.0
    fused = sorted(p.name for p in out.iterdir())
    assert 2 <= len(fused) < count
    assert f"{len(fused)} of {count} pairs were fused" in err
    assert all(not name.startswith(".") for name in fused)         # no temporary files left behind
    before = {name: os.stat(out / name).st_mtime_ns for name in fused}

    result = subprocess.run(command + ["--skip-existing"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"skipping {len(fused)} pairs already fused" in result.stdout
    assert f"fused {count - len(fused)} of {count - len(fused)} pairs" in result.stdout
    assert len(list(out.glob("*.png"))) == count
    assert all(os.stat(out / name).st_mtime_ns == mtime for name, mtime in before.items())  # left alone


def test_a_bit_flipped_model_file_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    from mfif.errors import ModelFileError
    from mfif.runtime import Fuser
    from mfif.runtime.backends import MODELS_DIR

    shipped = MODELS_DIR / "focusmap.onnx"
    data = bytearray(shipped.read_bytes())
    weights = max(onnx.load(str(shipped)).graph.initializer, key=lambda tensor: len(tensor.raw_data)).raw_data
    start = bytes(data).find(weights)
    assert start > 0
    for index in range(5):                               # five float32 values, one low mantissa bit each
        data[start + 4 * index * 7] ^= 0x01
    corrupted = tmp_path / "focusmap.onnx"
    corrupted.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=rf"{corrupted} is corrupted: its graph and weights hash to"):
        Fuser(corrupted)
    frames = demo_frames(32, 48)[:2]
    assert Fuser(shipped)(*frames).shape == frames[0].shape  # the intact file loads


def test_export_records_the_graph_hash_that_the_runtime_checks(tmp_path):
    pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    from mfif.export.onnx_export import export_onnx
    from mfif.hashing import sha256_bytes
    from mfif.runtime.model_info import onnx_graph_bytes
    from mfif.train.models import build_model

    output = tmp_path / "tiny.onnx"
    export_onnx(build_model("focusmap"), output)
    recorded = {p.key: p.value for p in onnx.load(str(output)).metadata_props}["mfif.graph_sha256"]
    assert recorded == sha256_bytes(onnx_graph_bytes(output.read_bytes()))
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(output.read_bytes()[: output.stat().st_size // 2])
    from mfif.errors import ModelFileError

    with pytest.raises(ModelFileError, match="no complete ONNX graph"):
        onnx_graph_bytes(truncated.read_bytes())


@pytest.mark.parametrize("timeout", ["inf", "nan"])
def test_fuse_video_rejects_a_timeout_that_is_not_finite(tmp_path, capsys, timeout):
    from runtime_helpers import write_video

    a, b, _ = demo_frames(16, 16)
    paths = [str(write_video(tmp_path / "a.avi", [a] * 2)), str(write_video(tmp_path / "b.avi", [b] * 2))]
    assert main(["fuse", "--video", *paths, "-o", str(tmp_path / "f.avi"), "--timeout", timeout]) == 2
    assert f"timeout must be a finite number of seconds > 0, not {timeout}" in capsys.readouterr().err


def test_a_full_disk_during_a_video_write_is_an_error_and_keeps_the_earlier_video(tmp_path):
    from runtime_helpers import read_video, write_video

    a, b, _ = demo_frames(96, 128)
    rng = np.random.default_rng(0)
    noisy = [[np.clip(f + rng.normal(0, 20, f.shape), 0, 255).astype(np.uint8) for _ in range(60)] for f in (a, b)]
    sources = [str(write_video(tmp_path / "a.avi", noisy[0])), str(write_video(tmp_path / "b.avi", noisy[1]))]
    output = tmp_path / "fused.avi"
    assert main(["fuse", "--video", *sources, "-o", str(output), "--max-frames", "5"]) == 0
    good = output.read_bytes()
    assert len(read_video(output)) == 5

    result = full_disk_run(len(good) * 3, "fuse", "--video", *sources, "-o", str(output))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"writing {output} failed: 60 frames were written but the file holds" in result.stderr
    assert output.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.avi", "b.avi", "fused.avi"]


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp"])
def test_read_image_refuses_images_over_max_pixels(tmp_path, suffix):
    from mfif.imageio import image_size

    image = demo_frames(37, 91)[0]
    path = write_image(tmp_path / f"big{suffix}", image)
    size = image_size(np.fromfile(path, np.uint8))
    assert size == ((91, 37) if suffix != ".bmp" else None)    # PNG and JPEG headers are read without decoding
    with pytest.raises(DataError, match=rf"big\{suffix} is 91x37 \(0\.0 megapixels\), over the limit.*max_pixels=3000"):
        read_image(path, max_pixels=3000)
    assert read_image(path, max_pixels=91 * 37).shape == image.shape


def test_changing_smoothing_from_another_thread_while_fusing_is_safe():
    import threading

    from mfif.runtime import Fuser

    fuser = Fuser()
    frames = demo_frames(64, 96)[:2]
    stop = threading.Event()

    def toggle():
        while not stop.is_set():
            fuser.smoothing = 0.5
            fuser.smoothing = 0.0

    toggler = threading.Thread(target=toggle)
    toggler.start()
    try:
        results = [fuser(*frames) for _ in range(200)]
    finally:
        stop.set()
        toggler.join()
    assert len(results) == 200 and all(result.shape == frames[0].shape for result in results)
