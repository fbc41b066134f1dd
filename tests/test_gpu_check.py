"""The GPU check script (python -m mfif.benchmarks.gpu_check): its dry run and argument handling
work anywhere; the checks themselves need a CUDA GPU and are not run here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mfif.benchmarks import gpu_check


def test_dry_run_lists_every_step_and_exits_0_without_a_gpu(capsys, tmp_path):
    out = tmp_path / "check.json"
    assert gpu_check.main(["--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for step in gpu_check.STEPS:
        assert step in text
    assert "640x480, 1920x1080, 3840x2160" in text and str(out) in text
    assert not out.exists()                                   # a dry run writes nothing


def test_dry_run_as_a_module_imports_no_torch():
    code = ("import sys; from mfif.benchmarks.gpu_check import main; rc = main(['--dry-run', '--only', 'latency', "
            "'--sizes', '1280x720']); assert 'torch' not in sys.modules; sys.exit(rc)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "latency" in run.stdout and "1280x720" in run.stdout and "environment" not in run.stdout


@pytest.mark.parametrize("argv, message", [
    (["--only", "nonsense"], "invalid choice"),
    (["--sizes", "1080"], "not WIDTHxHEIGHT"),
    (["--sizes", "8x8"], "too small"),
])
def test_bad_arguments_are_refused_with_the_reason(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        gpu_check.main(["--dry-run", *argv])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_iterations_must_be_positive(capsys):
    assert gpu_check.main(["--dry-run", "--iterations", "0"]) == 2
    assert "--iterations must be >= 1" in capsys.readouterr().err


def test_without_a_gpu_the_real_run_says_so(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: the real check would run")
    with pytest.raises(SystemExit, match="needs a CUDA GPU.*--dry-run"):
        gpu_check.main(["--out", str(tmp_path / "x.json")])


def test_percentiles_and_psnr():
    stats = gpu_check.percentiles([float(v) for v in range(1, 101)])
    assert (stats["median_ms"], stats["p90_ms"], stats["p99_ms"], stats["min_ms"], stats["runs"]) == (50, 90, 99, 1, 100)
    from mfif.export.onnx_export import output_psnr  # the PSNR the check reports

    assert output_psnr([0.0, 0.0], [0.0, 0.0]) == float("inf")
    assert round(output_psnr([0.0], [0.1]), 6) == 20.0
    json.dumps(stats)
