"""The benchmark tools: statistics, argument checks, and small real runs of the latency benchmark
and the soak on the shipped default model (ONNX Runtime, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mfif.benchmarks.latency import main as latency_main
from mfif.sizes import parse_resolution
from mfif.benchmarks.report import arithmetic_floor_ms, latency_summary, stability_warning
from mfif.errors import ConfigError


def test_latency_summary_matches_numpy():
    samples = np.random.default_rng(0).gamma(4.0, 2.0, 500)
    summary = latency_summary(samples)
    assert summary["count"] == 500
    assert summary["min"] == samples.min() and summary["max"] == samples.max()
    assert summary["median"] == pytest.approx(np.median(samples))
    for p in (90, 95, 99):
        assert summary[f"p{p}"] == pytest.approx(np.percentile(samples, p))
    assert summary["throughput"] == pytest.approx(1000.0 / samples.mean())
    assert summary["min"] <= summary["median"] <= summary["p90"] <= summary["p95"] <= summary["p99"] <= summary["max"]


def test_latency_summary_needs_samples():
    with pytest.raises(ValueError, match="no latency samples"):
        latency_summary([])


def test_stability_warning_only_for_a_wide_spread():
    steady = latency_summary(np.full(100, 10.0) + np.random.default_rng(1).normal(0, 0.1, 100))
    assert stability_warning(steady) is None
    spiky = latency_summary(np.r_[np.full(95, 10.0), np.full(5, 40.0)])
    warning = stability_warning(spiky)
    assert warning is not None and "jetson_clocks" in warning and "p99/median" in warning


def test_arithmetic_floor():
    # 1000 MACs per pixel on a 1000x1000 frame at 1e9 MAC/s takes one second.
    assert arithmetic_floor_ms(1000, 1000, 1000, 1e9) == pytest.approx(1000.0)


@pytest.mark.parametrize("text, expected", [("640x480", (480, 640)), ("1080p", (1080, 1920)), (" 33X17 ", (17, 33))])
def test_parse_resolution(text, expected):
    assert parse_resolution(text) == expected


@pytest.mark.parametrize("text", ["640", "axb", "4x4", "640x480x3"])
def test_parse_resolution_rejects_bad_values(text):
    with pytest.raises(ConfigError, match=text.strip()):
        parse_resolution(text)


def test_every_size_option_reads_width_by_height():
    from mfif.benchmarks.gpu_check import parse_size

    assert parse_size("1920x1080") == parse_resolution("1920x1080") == (1080, 1920)
    assert parse_resolution("52x40", option="--synthetic-size") == (40, 52)


def test_latency_benchmark_end_to_end(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("matplotlib")
    out = tmp_path / "lat.json"
    code = latency_main(["--resolution", "96x64,128x96", "--iterations", "3", "--warmup", "1",
                         "--baselines", "average", "--stream-frames", "6",
                         "--json", str(out), "--plot", str(tmp_path / "lat.png")])
    assert code == 0
    report = json.loads(out.read_text())
    models = [row for row in report["results"] if row["kind"] == "model"]
    assert [(row["width"], row["height"]) for row in models] == [(96, 64), (128, 96)]
    for row in models:
        assert row["latency_ms"]["count"] == 3 and row["latency_ms"]["min"] > 0
        assert set(row["stages_ms"]) == {"preprocess", "h2d", "compute", "d2h", "postprocess"}
        assert row["device"].startswith("CPUExecutionProvider")
    assert [row["model"] for row in report["results"] if row["kind"] == "baseline"] == ["average", "average"]
    assert report["streams"][0]["frames"] == 6 and report["streams"][0]["fps"] > 0
    assert report["machine"]["cpu_cores"] >= 1 and "onnxruntime" in report["machine"]["versions"]
    assert (tmp_path / "lat.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "median" in printed and "ratio of median latency" in printed


def test_latency_benchmark_rejects_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="iterations"):
        latency_main(["--iterations", "0", "--json", str(tmp_path / "x.json")])


def test_latency_benchmark_takes_trtexec_options(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("matplotlib")
    out, times = tmp_path / "lat.json", tmp_path / "times.json"
    code = latency_main(["--resolution", "96x64", "--warmUp", "30", "--iterations", "4", "--noDataTransfers",
                         "--exportTimes", str(times), "--baselines", "average", "--json", str(out),
                         "--plot", str(tmp_path / "lat.png")])
    assert code == 0
    (row,) = [row for row in json.loads(out.read_text())["results"] if row["kind"] == "model"]
    assert row["latency_ms"]["count"] == 4 and row["latency_counts"] == "compute" and not row["cuda_graph"]
    records = json.loads(times.read_text())
    assert [r["iteration"] for r in records] == [0, 1, 2, 3]
    for record in records:   # --noDataTransfers: latency is the compute stage of that very call
        assert record["latencyMs"] == record["computeMs"] < record["fuseMs"]
        assert (record["model"], record["precision"], record["width"], record["height"]) == ("focusmap", "fp32", 96, 64)
    assert row["latency_ms"]["max"] == max(r["latencyMs"] for r in records)
    assert (tmp_path / "lat.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "average" in printed and "(vs focusmap fp32 onnxruntime)" in printed   # precision in the ratios


def test_latency_benchmark_duration_and_iterations_both_hold(tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "lat.json"
    latency_main(["--resolution", "64x48", "--warmup", "1", "--iterations", "2", "--duration", "0.4",
                  "--json", str(out), "--plot", str(tmp_path / "lat.png")])
    (row,) = json.loads(out.read_text())["results"]
    summary = row["latency_ms"]
    assert summary["count"] > 2                                          # the duration, not the 2 iterations
    assert summary["mean"] * summary["count"] >= 0.8 * 400               # timed calls fill the 0.4 s
    assert row["latency_counts"] == "fuse call"


@pytest.mark.parametrize("argv, message", [
    (["--warmUp", "100", "--warmup", "3"], "give the warm-up once: --warmUp 100 (milliseconds, as trtexec)"),
    (["--duration", "0"], "--duration must be > 0 seconds"),
    (["--useCudaGraph", "--backend", "torch"], "--useCudaGraph: the torch backend cannot replay CUDA graphs"),
    (["--useCudaGraph", "--device", "cpu"], "--useCudaGraph: the onnxruntime backend on the CPU cannot"),
])
def test_latency_benchmark_refuses_conflicting_options_by_name(tmp_path, argv, message):
    with pytest.raises(ConfigError) as error:
        latency_main([*argv, "--json", str(tmp_path / "x.json")])
    assert message in str(error.value)
    assert not (tmp_path / "x.json").exists()


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_use_cuda_graph_asks_onnxruntime_for_it_and_never_runs_without():
    ort = pytest.importorskip("onnxruntime")
    from mfif.benchmarks.latency import cuda_graph_options
    from mfif.errors import BackendUnavailableError
    from mfif.runtime.backends import load_backend

    options = cuda_graph_options("onnxruntime", "cuda:1")
    assert options["providers"][0] == ("CUDAExecutionProvider", {"device_id": 1, "enable_cuda_graph": "1"})
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider; the refusal below is for CPU-only builds")
    with pytest.raises(BackendUnavailableError, match="asked for CUDAExecutionProvider"):
        load_backend(None, "onnxruntime", **cuda_graph_options("onnxruntime", "auto"))


def _rows(resolutions, floor=True):
    rows = []
    for label, scale in (("fp32", 1.0), ("int8", 1.3)):
        for height, width in resolutions:
            median = scale * height * width / 3e4
            rows.append({"kind": "model", "model": "focusmap", "precision": label, "backend": "onnxruntime",
                         "height": height, "width": width, "floor_ms": median / 20 if floor else None,
                         "latency_ms": {"median": median, "p90": median * 1.1, "p99": median * 1.3}})
    return rows


def test_latency_plot_has_readable_ticks_whiskers_and_explains_the_floor():
    pytest.importorskip("matplotlib")
    from mfif.benchmarks.latency import latency_figure

    figure = latency_figure(_rows([(480, 640), (720, 1280), (1080, 1920)]))
    axis = figure.axes[0]
    figure.canvas.draw()
    ticks = [label.get_text() for label in axis.get_yticklabels() if label.get_text()]
    assert ticks and all("^" not in tick and "$" not in tick for tick in ticks)   # 10, 20, 50, not 10^1
    assert {"20", "50", "100"} & set(ticks)
    assert [label.get_text() for label in axis.get_xticklabels()] == ["640x480", "1280x720", "1920x1080"]
    legend = [text.get_text() for text in axis.get_legend().get_texts()]
    assert legend[:2] == ["focusmap fp32 onnxruntime", "focusmap int8 onnxruntime"]
    assert {"whisker to p90", "whisker to p99", "floor: MACs / CPU matmul rate"} <= set(legend)
    assert len(axis.collections) >= 4          # p90 and p99 whiskers per series
    no_floor = latency_figure(_rows([(480, 640), (720, 1280)], floor=False))
    assert "floor: MACs / CPU matmul rate" not in [t.get_text() for t in no_floor.axes[0].get_legend().get_texts()]


def test_latency_plot_with_one_resolution_is_a_bar_chart():
    pytest.importorskip("matplotlib")
    from mfif.benchmarks.latency import latency_figure

    axis = latency_figure(_rows([(480, 640)])).axes[0]
    assert len(axis.patches) == 2                     # one bar per model, precision and backend
    assert [label.get_text() for label in axis.get_xticklabels()] == ["focusmap fp32 onnxruntime",
                                                                       "focusmap int8 onnxruntime"]
    assert axis.get_xlabel() == "640x480 (one resolution)"


def test_soak_reports_drops_memory_and_latency(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("cv2")
    from mfif.benchmarks.soak import main as soak_main

    out = tmp_path / "soak.json"
    soak_main(["--frames", "40", "--warmup", "10", "--resolution", "96x64", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["frames_fused"] == 40 and result["dropped"] == 0 and result["pass"]["no_drops"]
    assert result["memory"]["end_mb"] > 0 and "growth" in result["memory"]
    assert result["fuse_ms_first_block"]["count"] == 20 == result["fuse_ms_last_block"]["count"]
    assert "dropped 0" in capsys.readouterr().out
    first, last = result["fuse_ms_first_block"]["median"], result["fuse_ms_last_block"]["median"]
    assert result["median_drift"] == pytest.approx(last / first - 1.0)
    assert result["pass"]["latency_stable"] == (abs(last / first - 1.0) <= 0.15)


@pytest.mark.parametrize("resolution", ["abc", "0x0", "320x"])
def test_soak_rejects_a_bad_resolution_clearly(resolution, capsys):
    from mfif.benchmarks.soak import main as soak_main

    with pytest.raises(SystemExit) as ended:
        soak_main(["--frames", "40", "--warmup", "10", "--resolution", resolution])
    assert ended.value.code == 2
    assert f"resolution {resolution!r} is" in capsys.readouterr().err


def test_versus_enfuse_times_both_sides_on_a_small_folder(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("cv2")
    from mfif.benchmarks.versus_enfuse import main as versus_main
    from mfif.evaluation.enfuse import available
    from mfif.imageio import write_image
    from mfif.scenes import demo_pair

    if not available():
        pytest.skip("enfuse is not installed (apt-get install enfuse)")
    for name, (height, width) in (("one", (48, 64)), ("two", (40, 56))):
        a, b, _ = demo_pair(height, width, seed=len(name))
        write_image(tmp_path / "pairs" / f"{name}_A.png", a)
        write_image(tmp_path / "pairs" / f"{name}_B.png", b)
    out = tmp_path / "versus.json"
    assert versus_main([str(tmp_path / "pairs"), "--repeat", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["pairs"] == 2 and result["repeat"] == 2
    assert len(result["mfif_runs"]) == 2 == len(result["enfuse_runs"])
    assert result["mfif_seconds"] == float(np.median(result["mfif_runs"])) > 0
    assert result["ratio"] == pytest.approx(result["mfif_seconds"] / result["enfuse_seconds"])
    assert "median of 2 runs each" in capsys.readouterr().out


def test_versus_enfuse_rejects_bad_options(tmp_path):
    from mfif.benchmarks.versus_enfuse import main as versus_main
    from mfif.errors import DataError

    with pytest.raises(SystemExit):
        versus_main([str(tmp_path), "--repeat", "0"])
    with pytest.raises(DataError):
        versus_main([str(tmp_path / "missing"), "--repeat", "1"])


def test_focusmap_settings_benchmark(tmp_path):
    """benchmarks/focusmap_settings.py: one row per --setting over the checkpoint's config."""
    pytest.importorskip("torch")
    import json

    from mfif.benchmarks.focusmap_settings import main as settings_main
    from mfif.imageio import write_pair
    from mfif.scenes import multi_focus, scene
    from mfif.train.checkpoint import save_checkpoint
    from mfif.train.models import build_model

    folder = tmp_path / "pairs"
    for index in range(2):
        sharp = scene(40, 56, seed=index)
        write_pair(folder, f"p{index}", multi_focus(sharp, "blobs", seed=index), sharp)
    checkpoint = save_checkpoint(tmp_path / "fm.safetensors", build_model("focusmap", features=4, levels=2, scale=2))
    out = tmp_path / "settings.json"
    assert settings_main([str(checkpoint), "--pairs", str(folder), "--no-validation", "--setting", "",
                          "--setting", "temperature=0.1,guide_radius=0", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["config"]["temperature"] for r in rows] == [1.0, 0.1] and rows[1]["config"]["guide_radius"] == 0
    assert all(0 < r["qabf"]["all"] <= 1 and "pairs" in r["qabf"] for r in rows)


def test_fusion_diagnostics_tell_a_choice_from_a_blend(tmp_path, capsys):
    """benchmarks/fusion_diagnostics.py: picking a source hedges nowhere, the average everywhere;
    a method that copies pixels gives a repeated frame back exactly."""
    from mfif.benchmarks.fusion_diagnostics import hedged_share, identity_psnr, main as diagnostics_main
    from mfif.errors import DataError
    from mfif.imageio import write_pair
    from mfif.scenes import multi_focus, scene

    a, b = multi_focus(scene(48, 64, seed=3), "blobs", seed=3)
    assert hedged_share(a, b, a) == 0.0
    assert hedged_share(a, b, ((a.astype(np.float64) + b) / 2)) == 1.0
    assert identity_psnr(lambda frames: frames[0], a) == float("inf")
    blurred = identity_psnr(lambda frames: np.clip(frames[0].astype(np.int16) + 3, 0, 255), a)
    assert 35 < blurred < 39                                   # an error of 3 grey levels: 38.6 dB
    with pytest.raises(DataError, match="never differ"):
        hedged_share(a, a, a)

    folder = tmp_path / "pairs"
    write_pair(folder, "p0", [a, b], None)
    assert diagnostics_main([str(folder), "--methods", "average"]) == 0
    assert "| p0 | average | inf | 1.000 |" in capsys.readouterr().out
    assert diagnostics_main([str(folder), "--pair", "nope"]) == 2
    assert "--pair nope" in capsys.readouterr().err
