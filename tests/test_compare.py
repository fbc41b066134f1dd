"""``mfif compare``: two models, or one model on two devices, run on the same frames through the
real ONNX Runtime (and torch where installed); max error, PSNR and the exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mfif.cli import COMMANDS
from mfif.cli import main as mfif_main

MODELS = Path(__file__).resolve().parent.parent / "runtime" / "models"
pytest.importorskip("onnxruntime")


def compare(capsys, *argv) -> tuple[int, str]:
    code = mfif_main(["compare", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_compare_is_a_command():
    assert COMMANDS["compare"][0] == "mfif.runtime.compare_cli"


def test_fp16_variant_is_within_one_grey_level(capsys, tmp_path):
    # The shipped model's sharp weight maps (temperature 0.03) let FP16 rounding tip a near-tie
    # pixel: at most one grey level there, a few millionths on average.
    code, text = compare(capsys, MODELS / "focusmap.onnx", MODELS / "focusmap_fp16.onnx", "--resolution",
                         "160x120,96x64", "--atol", "4e-3", "--json", tmp_path / "c.json")
    assert code == 0, text
    assert "A: " in text and "(fp32) on onnxruntime" in text and "(fp16) on onnxruntime" in text
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["pass"] and [row["input"] for row in report["results"]] == ["demo pair 160x120", "demo pair 96x64"]
    for row in report["results"]:
        assert 0 < row["max_abs"] <= 4e-3 and row["mean_abs"] <= min(row["max_abs"], 1e-5)
        assert row["psnr_db"] > 80 and row["weights_max_abs"] > 0


def test_int8_variant_fails_a_tight_tolerance_and_passes_a_loose_one(capsys):
    code, text = compare(capsys, MODELS / "focusmap.onnx", MODELS / "focusmap_int8.onnx", "--resolution", "160x120",
                         "--atol", "1e-6")
    assert code == 1 and "FAIL: largest difference of the fused frames" in text and "> --atol 1e-06" in text
    code, text = compare(capsys, MODELS / "focusmap.onnx", MODELS / "focusmap_int8.onnx", "--resolution", "160x120",
                         "--atol", "0.1")
    assert code == 0 and text.rstrip().splitlines()[-1].startswith("PASS")
    code, text = compare(capsys, MODELS / "focusmap.onnx", MODELS / "focusmap_int8.onnx", "--resolution", "160x120",
                         "--atol", "0.1", "--weights-atol", "1e-6")
    assert code == 1 and "weight maps past --weights-atol" in text


def test_one_file_on_two_devices_and_identical_outputs(capsys, tmp_path):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: 'auto' is not the CPU here")
    code, text = compare(capsys, "default", "--device", "cpu", "auto", "--resolution", "96x64", "--images",
                         *write_pair(tmp_path), "--json", tmp_path / "c.json")
    assert code == 0, text
    (row,) = json.loads((tmp_path / "c.json").read_text())["results"]
    assert row["input"] == "a.png + b.png"
    assert row["max_abs"] == 0 and row["psnr_db"] is None           # identical: PSNR infinite, null in JSON
    assert "PSNR inf dB" in text


def test_the_torch_backend_agrees_with_onnx_runtime(capsys):
    pytest.importorskip("torch")
    weights = MODELS.parent.parent / "train" / "weights" / "focusmap.safetensors"
    code, text = compare(capsys, MODELS / "focusmap.onnx", weights, "--resolution", "96x64", "--atol", "1e-5")
    assert code == 0, text
    assert "on torch" in text


def write_pair(folder: Path) -> list[Path]:
    from mfif.imageio import write_image
    from mfif.scenes import demo_pair

    a, b, _ = demo_pair(64, 96)
    return [write_image(folder / "a.png", a), write_image(folder / "b.png", b)]


@pytest.mark.parametrize("argv, message", [
    (["default"], "both sides are default on backend auto, device auto"),
    (["a.onnx", "b.onnx", "c.onnx"], "one or two model files, not 3"),
    (["default", "--device", "cpu", "cpu", "cpu"], "--device takes one value (both sides) or two"),
    (["default", "--device", "cpu", "auto", "--atol", "-1"], "--atol must be a finite number >= 0, not -1.0"),
    (["default", "--device", "cpu", "auto", "--images", "a.png"], "--images needs two or more images"),
    (["default", "--device", "cpu", "auto", "--resolution", "9x"], "resolution '9x' is not WIDTHxHEIGHT"),
])
def test_usage_errors_name_the_values(capsys, argv, message):
    code, text = compare(capsys, *argv)
    assert code == 2 and message in text
