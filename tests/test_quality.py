"""The quality evaluation (``mfif evaluate``) end to end on small folders made here, and Piella's
Q/Qw."""

from __future__ import annotations

import csv
import math
import shutil
import sys

import cv2
import numpy as np
import pytest

from mfif.evaluation.quality import evaluate
from mfif.evaluation.scoring import find_results, folder_items, score
from mfif.evaluation import piella
from mfif.evaluation.baselines import average
from mfif.evaluation.methods import Method, get_methods
from mfif.cli import main
from mfif.errors import ConfigError, DataError, InputError
from mfif.imageio import find_pairs, write_pair
from mfif.scenes import multi_focus, scene

METRICS = ["QG", "PSNR", "PiellaQ"]
SIZE = (48, 64)


def make_pair(folder, name, seed, colour=True, roles=("A", "B"), truth=True, size=SIZE):
    sharp = scene(*size, seed=seed, colour=colour)
    frames = multi_focus(sharp, "blobs", seed=seed)
    write_pair(folder, name, frames, sharp if truth else None, roles)
    return frames, sharp


@pytest.fixture()
def pairs(tmp_path):
    """Three good pairs, one with sources of different sizes, one with an unreadable file."""
    folder = tmp_path / "pairs"
    folder.mkdir()
    for index in range(3):
        make_pair(folder, f"p{index}", index, colour=index != 1)
    frames = multi_focus(scene(*SIZE, seed=9), seed=9)
    cv2.imwrite(str(folder / "sizes_A.png"), frames[0])
    cv2.imwrite(str(folder / "sizes_B.png"), frames[1][:, :-3])
    cv2.imwrite(str(folder / "broken_A.png"), frames[0])
    (folder / "broken_B.png").write_bytes(b"\x89PNG truncated")
    return folder


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_end_to_end_tables_grid_failures_and_resume(pairs, tmp_path):
    out = tmp_path / "out"
    items = folder_items([pairs])
    methods = get_methods("average,gff")
    report = evaluate(items, methods, out, METRICS, progress=False)
    for name in ("per_pair.csv", "per_pair.md", "means.csv", "means.md", "grid_pairs.png"):
        assert (out / name).is_file(), name
    grid = cv2.imread(str(out / "grid_pairs.png"))
    assert grid.shape[0] > 2 * 200 and grid.shape[1] > 5 * 100  # 2 pairs x (A, B, truth, 2 methods)

    rows = read_csv(out / "per_pair.csv")
    assert len(rows) == 5 * 2
    failed = {r["pair"]: r["status"] for r in rows if r["status"] != "ok"}
    assert set(failed) == {"sizes", "broken"}
    assert "61x48" in failed["sizes"] or "48x61" in failed["sizes"]
    assert "broken_B.png" in failed["broken"]
    for row in rows:
        if row["status"] == "ok":
            assert all(math.isfinite(float(row[m])) for m in METRICS)
            assert float(row["time_ms"]) > 0

    means = {r["method"]: r for r in read_csv(out / "means.csv")}
    assert means["gff"]["pairs"] == "3" and means["gff"]["excluded"] == "2" and means["gff"]["failed"] == "2"
    ok = [r for r in rows if r["status"] == "ok" and r["method"] == "gff"]
    assert float(means["gff"]["QG"]) == pytest.approx(np.mean([float(r["QG"]) for r in ok]))
    # Focus selection must beat the average against the ground truth.
    assert float(means["gff"]["PSNR"]) > float(means["average"]["PSNR"]) + 3
    text = (out / "means.md").read_text()
    assert "## pairs" in text and "## Failed" in text and "nan" not in text.lower()
    assert report.computed == 10 and report.skipped == 0 and len(report.failures) == 4

    # Resume: scored rows are read back and skipped, failed ones are tried again.
    again = evaluate(items, methods, out, METRICS, progress=False)
    assert again.skipped == 6 and again.computed == 4
    assert read_csv(out / "means.csv") == list(means.values())
    # A metric asked for later is filled in for every pair.
    third = evaluate(items, methods, out, [*METRICS, "PiellaQw"], progress=False)
    assert third.skipped == 0
    assert all(r["PiellaQw"] for r in read_csv(out / "per_pair.csv") if r["status"] == "ok")


def test_scoring_existing_results(pairs, tmp_path):
    items = [i for i in folder_items([pairs]) if i.name.startswith("p")]
    results = tmp_path / "tool"
    results.mkdir()
    for item in items:
        frames, _ = item.load()
        cv2.imwrite(str(results / f"{item.name}_avg.png"), average(frames))
        cv2.imwrite(str(results / f"{item.name}.png"), frames[0])
    (results / "p0_A.png").write_bytes(b"")  # a source copy is not a result
    found = find_results(results, items)
    assert [r.label for r in found] == ["avg", "tool"]
    assert len(found[0].files) == 3
    (results / "p2_avg.png").unlink()  # a result gone missing is a failed row, not a crash
    report = evaluate(items, get_methods("average"), tmp_path / "out", METRICS, results=found, progress=False)
    for name in ("p0", "p1"):
        ours, theirs = report.rows[("pairs", name, "average")], report.rows[("pairs", name, "avg")]
        assert all(float(ours[m]) == pytest.approx(float(theirs[m])) for m in METRICS)
    assert report.rows[("pairs", "p2", "avg")]["status"].startswith("failed: image file not found")
    # The '<pair>.png' files hold source A: scored as that image.
    frames, truth = items[0].load()
    expected = score(frames, frames[0], truth, METRICS)
    assert {m: float(report.rows[("pairs", "p0", "tool")][m]) for m in METRICS} == pytest.approx(expected)
    with pytest.raises(ConfigError, match="results-prefix"):
        evaluate(items, get_methods("average"), tmp_path / "out2", METRICS,
                 results=find_results(results, items, label="average"), progress=False)


def test_numbered_layout_and_missing_partner(tmp_path):
    folder = tmp_path / "liu"
    folder.mkdir()
    make_pair(folder, "g_01", 0, colour=False, roles=("1", "2"), truth=False)
    make_pair(folder, "g_02", 1, colour=False, roles=("1", "2"), truth=False)
    assert [p.name for p in find_pairs(folder)] == ["g_01", "g_02"]
    (folder / "g_02_2.png").unlink()
    with pytest.raises(DataError, match="'g_02'.*lacks its _2"):
        find_pairs(folder)
    shared = tmp_path / "shared"
    shared.mkdir()
    make_pair(shared, "x", 0)
    (shared / "x_B.png").unlink()
    assert main(["evaluate", str(shared), "--out", str(tmp_path / "o"), "--quiet"]) == 2


def test_degenerate_pairs_are_defined_or_excluded_never_nan(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    for name, shape in {"flat": (40, 40), "thin": (1, 60), "dot": (1, 1), "narrow": (30, 3)}.items():
        for role in "AB":
            cv2.imwrite(str(folder / f"{name}_{role}.png"), np.full(shape, 90, np.uint8))
    make_pair(folder, "good", 3, truth=False)
    report = evaluate(folder_items([folder]), get_methods("average,lp,decision"), tmp_path / "out",
                      ["QG", "QMI", "PiellaQ"], progress=False)
    status = {(k[1], k[2]): r["status"] for k, r in report.rows.items()}
    for name in ("thin", "dot", "narrow"):
        assert all("at least" in status[(name, m)] for m in ("average", "lp", "decision")), name
    means = read_csv(tmp_path / "out" / "means.csv")
    for row in means:
        for metric in ("QG", "QMI", "PiellaQ"):
            assert row[metric] == "" or math.isfinite(float(row[metric]))
    assert means[0]["excluded"] == str(sum(1 for k in ("flat", "thin", "dot", "narrow")
                                          if any(status[(k, m)] != "ok" for m in ("average", "lp", "decision"))))


def test_a_method_returning_nan_is_a_failed_row(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    make_pair(folder, "p", 0)
    broken = Method("broken", "broken", lambda frames: np.full(frames[0].shape, np.nan, np.float32))
    wrong = Method("wrong", "wrong", lambda frames: frames[0][:-1])
    report = evaluate(folder_items([folder]), [broken, wrong, *get_methods("average")], tmp_path / "out",
                      METRICS, progress=False)
    assert "NaN" in report.rows[("set", "p", "broken")]["status"]
    assert "shape" in report.rows[("set", "p", "wrong")]["status"]
    assert report.rows[("set", "p", "average")]["status"] == "ok"
    assert report.summary[0]["pairs"] == 0 and report.summary[0]["QG"] is None


def test_cli_synthetic_and_paper_tables(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["evaluate", "--synthetic", "2", "--synthetic-size", "40x52", "--methods", "average,dwt",
                 "--metrics", "PSNR,QG", "--out", str(out), "--quiet", "--grid", "1"]) == 0
    printed = capsys.readouterr().out
    assert "synthetic (2 pairs, 0 excluded)" in printed and "dwt" in printed
    assert (out / "grid_synthetic.png").is_file() and len(read_csv(out / "per_pair.csv")) == 4

    classic = tmp_path / "classic"
    classic.mkdir()
    for index, name in enumerate(("clock", "pepsi", "cameraman", "lab")):
        make_pair(classic, name, index, colour=False, truth=False)
    paper = tmp_path / "paper"
    assert main(["evaluate", str(classic), "--paper-tables", "--methods", "average", "--out", str(paper),
                 "--quiet", "--grid", "0"]) == 0
    text = (paper / "paper_tables.md").read_text()
    for heading in ("Table 1: clock", "Table 2: pepsi", "Table 3: cameraman",
                    "| method | IE | MI | Xydeas | Q | Qw | Qe |"):
        assert heading in text
    records = read_csv(paper / "paper_tables.csv")
    assert {r["method"] for r in records} == {"dwt", "lp", "gff", "average"} and len(records) == 12
    assert "lab" not in {r["pair"] for r in records}


@pytest.mark.parametrize("argv,match", [
    (["--synthetic", "1", "--metrics", "QX"], "unknown metric 'QX'"),
    (["--synthetic", "1", "--methods", "median"], "unknown method 'median'"),
    (["--synthetic", "1", "--synthetic-size", "big"], "WIDTHxHEIGHT"),
    (["--synthetic", "0"], "nothing to evaluate"),
])
def test_cli_bad_options(tmp_path, capsys, argv, match):
    assert main(["evaluate", *argv, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert match in capsys.readouterr().err


def test_piella_indices():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 40)).astype(np.float64)
    b = cv2.GaussianBlur(a, (0, 0), 2.0)
    for index in (piella.piella_q, piella.piella_qw):
        assert index(a, a, a) == pytest.approx(1.0)
        flat = np.full((16, 16), 9.0)
        assert index(flat, flat, flat) == pytest.approx(1.0)
        assert index(flat * 0, flat * 0, flat * 0) == pytest.approx(1.0)
        good, poor = index(a, b, a), index(a, b, (a + b) / 2)
        assert -1.0 <= poor < good <= 1.0
        with pytest.raises(InputError, match="at least 8x8"):
            index(a[:7], b[:7], a[:7])
        with pytest.raises(InputError, match="NaN"):
            index(a, b, np.full_like(a, np.nan))


def test_boundary_band_and_band_psnr():
    from mfif.evaluation.metrics.structural import band_psnr, boundary_band

    labels = np.zeros((30, 40), int)
    labels[:, 25:] = 1
    band = boundary_band(labels, radius=3)
    assert band[:, 22:28].all() and not band[:, :22].any() and not band[:, 28:].any()
    regions = np.stack([labels == 0, labels == 1]).astype(np.float32)
    assert (boundary_band(regions, radius=3) == band).all()
    truth = np.full((30, 40), 100.0)
    fused = truth.copy()
    fused[:, :5] = 0.0                                     # an error far from the border does not count
    assert band_psnr(fused, truth, band) == math.inf
    fused[:, 24] += 10.0                                   # one column of the 6-wide band off by 10
    assert band_psnr(fused, truth, band) == pytest.approx(10 * math.log10(255 ** 2 / (100 / 6)))
    with pytest.raises(InputError, match="empty"):
        band_psnr(fused, truth, np.zeros_like(band))
    with pytest.raises(InputError, match="band is"):
        band_psnr(fused, truth, band[:10])


def test_band_psnr_on_synthetic_pairs_only(pairs, tmp_path):
    """BandPSNR is scored where the focus regions are known (synthetic pairs), beside PSNR; pairs
    read from folders have truth but no band, so they have PSNR only. A fusion that fills the band
    with the blurred average scores lower there than one that copies the truth outside it."""
    from mfif.evaluation.scoring import synthetic_items

    items = synthetic_items(2, (64, 80), seed=3) + [i for i in folder_items([pairs]) if i.name == "p0"]
    report = evaluate(items, get_methods("average,decision"), tmp_path / "out", ["PSNR", "BandPSNR"], progress=False)
    for name in ("syn0003", "syn0004"):
        rows = {m: report.rows[("synthetic", name, m)] for m in ("average", "decision")}
        assert all(r["status"] == "ok" for r in rows.values())
        assert float(rows["average"]["BandPSNR"]) < float(rows["average"]["PSNR"])
        assert float(rows["decision"]["BandPSNR"]) > float(rows["average"]["BandPSNR"])
    assert report.rows[("pairs", "p0", "average")].get("BandPSNR") in (None, "")
    assert report.rows[("pairs", "p0", "average")]["PSNR"]
    means = {(e["set"], e["method"]): e for e in report.summary}
    assert means[("synthetic", "decision")]["BandPSNR"] > means[("synthetic", "average")]["BandPSNR"]
    again = evaluate(items, get_methods("average,decision"), tmp_path / "out", ["PSNR", "BandPSNR"], progress=False)
    assert again.skipped == 6      # resumed: every row complete, the folder pair without a band too


# ---------------------------------------------------------------------------------------------
# Evaluation that cannot mislead (issue 16)

def test_a_method_whose_package_is_missing_fails_before_the_first_pair(pairs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pywt", None)  # PyWavelets not installed
    out = tmp_path / "out"
    assert main(["evaluate", str(pairs), "--methods", "average,dwt", "--out", str(out), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "'pywt' is not installed" in error and "PyWavelets" in error and "mfif[eval]" in error
    assert not (out / "per_pair.csv").exists()


def test_per_method_means_beside_the_common_pairs(pairs, tmp_path):
    """A method failing on every pair empties the common-pairs table; each method's own means
    still show, in means.md, means_by_method.csv and the printed summary."""
    broken = Method("broken", "broken", lambda frames: np.full(frames[0].shape, np.nan, np.float32))
    out = tmp_path / "out"
    report = evaluate(folder_items([pairs]), [*get_methods("average,gff"), broken], out, METRICS, progress=False)
    assert all(e["pairs"] == 0 and e["QG"] is None for e in report.summary)
    own = {e["method"]: e for e in report.method_summary}
    assert own["average"]["pairs"] == own["gff"]["pairs"] == 3 and own["broken"]["pairs"] == 0
    assert own["gff"]["failed"] == 2 and own["broken"]["failed"] == 5 and "excluded" not in own["gff"]
    ok = [r for k, r in report.rows.items() if k[2] == "gff" and r["status"] == "ok"]
    assert own["gff"]["QG"] == pytest.approx(np.mean([float(r["QG"]) for r in ok]))
    by_method = {r["method"]: r for r in read_csv(out / "means_by_method.csv")}
    assert by_method["gff"]["pairs"] == "3" and float(by_method["gff"]["QG"]) == pytest.approx(own["gff"]["QG"])
    assert "Each method over the pairs it scored" in (out / "means.md").read_text()
    from mfif.evaluation.tables import format_summary

    printed = format_summary(report.summary, report.metrics, report.method_summary)
    assert "each method over the pairs it scored" in printed
    assert f"{own['gff']['QG']:.4f}" in printed
    # Nothing excluded: one table only.
    clean = evaluate([i for i in folder_items([pairs]) if i.name.startswith("p")], get_methods("average"),
                     tmp_path / "clean", METRICS, progress=False)
    assert "Each method" not in (tmp_path / "clean" / "means.md").read_text()
    assert "each method" not in format_summary(clean.summary, clean.metrics, clean.method_summary)


def test_resume_is_keyed_on_the_model_files_sha256(pairs, tmp_path):
    from mfif.hashing import sha256_file
    from mfif.runtime.backends import MODELS_DIR

    items = [i for i in folder_items([pairs]) if i.name.startswith("p")]
    model, out = tmp_path / "cand.onnx", tmp_path / "out"
    shutil.copyfile(MODELS_DIR / "focusmap.onnx", model)
    first = evaluate(items, get_methods(f"average,model:{model}"), out, METRICS, progress=False)
    assert first.computed == 6
    assert {r["model_sha256"] for k, r in first.rows.items() if k[2] == "cand"} == {sha256_file(model)}
    assert evaluate(items, get_methods(f"average,model:{model}"), out, METRICS, progress=False).skipped == 6
    shutil.copyfile(MODELS_DIR / "focusmap_fp16.onnx", model)  # another model under the same name
    again = evaluate(items, get_methods(f"average,model:{model}"), out, METRICS, progress=False)
    assert again.skipped == 3 and again.computed == 3          # the baseline kept, the model scored again
    rows = read_csv(out / "per_pair.csv")
    assert {r["model_sha256"] for r in rows if r["method"] == "cand"} == {sha256_file(model)}
    assert {r["model_sha256"] for r in rows if r["method"] == "average"} == {""}
    assert "model_sha256" not in (out / "per_pair.md").read_text()


def test_model_methods_take_every_file_the_fuser_runs(pairs, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from mfif.errors import ModelFileError
    from mfif.evaluation.methods import get_method
    from mfif.runtime.backends import MODELS_DIR

    checkpoint = MODELS_DIR.parent.parent / "train" / "weights" / "focusmap.safetensors"
    items = [i for i in folder_items([pairs]) if i.name == "p0"]
    report = evaluate(items, get_methods(f"model:{checkpoint}"), tmp_path / "out", METRICS, progress=False)
    assert report.labels == ["model-focusmap"] and report.rows[("pairs", "p0", "model-focusmap")]["status"] == "ok"
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(ModelFileError, match="mfif build"):   # the TensorRT loader's own check
        get_method(f"model:{engine}")
    with pytest.raises(ConfigError, match=r"\.onnx, \.safetensors, \.engine, \.plan"):
        get_method(f"model:{tmp_path / 'm.pt'}")


def test_quiet_and_piped_runs_need_no_tqdm(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # tqdm not installed
    argv = ["evaluate", "--synthetic", "2", "--synthetic-size", "40x52", "--methods", "average", "--metrics", "PSNR",
            "--grid", "0"]
    assert main([*argv, "--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert main([*argv, "--out", str(tmp_path / "piped")]) == 0   # stderr is no terminal here: a line per set
    error = capsys.readouterr().err
    assert "evaluate: set synthetic done (2 of 2 pairs" in error and "\r" not in error
