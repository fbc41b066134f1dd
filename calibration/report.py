"""Accuracy of an INT8 model against its FP32 original on held-out pairs, both run through
``mfif.runtime.Fuser`` as a deployment runs them (ONNX Runtime; uint8 frames of any size in, uint8
fused images out): PSNR of the INT8 fused image against the FP32 one, and the change in Qabf (the
Xydeas-Petrovic gradient metric, on the reference grey conversion)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mfif.calibration.data import Sample
from mfif.errors import BackendUnavailableError
from mfif.export.onnx_export import output_psnr

GOAL_PSNR_DB = 40.0
GOAL_DELTA_QABF = 0.005


def _qabf():
    try:
        from mfif.evaluation.metrics import get_metric, reference_grey

        return get_metric("QG"), reference_grey
    except ImportError as exc:
        raise BackendUnavailableError(f"the Qabf metric (evaluation.metrics) cannot be imported: {exc}. "
                                      "Install it with: pip install 'mfif[eval]'") from exc


def accuracy_report(fp32: str | Path, int8: str | Path, samples: list[Sample], progress=None) -> dict:
    """Per-pair and mean PSNR (INT8 vs FP32 fused image) and Qabf of both, with the goal check."""
    from mfif.runtime import Fuser

    qabf, reference_grey = _qabf()
    fp32_fuser, int8_fuser = Fuser(fp32, backend="onnxruntime"), Fuser(int8, backend="onnxruntime")
    rows = []
    for sample in samples:
        want, got = fp32_fuser.fuse(sample.sources), int8_fuser.fuse(sample.sources)
        a, b = (reference_grey(s) for s in sample.sources[:2])
        q32 = float(qabf(a, b, reference_grey(want)))
        q8 = float(qabf(a, b, reference_grey(got)))
        rows.append({"pair": sample.name, "size": [int(n) for n in want.shape[:2]],
                     "psnr_db": output_psnr(want / 255.0, got / 255.0),
                     "qabf_fp32": q32, "qabf_int8": q8, "delta_qabf": q8 - q32})
        if progress is not None:
            progress.update(1)
    return summarize(rows)


def summarize(rows: list[dict]) -> dict:
    psnr = [row["psnr_db"] for row in rows]
    delta = [row["delta_qabf"] for row in rows]
    summary = {
        "pairs": len(rows),
        "psnr_db_mean": float(np.mean(psnr)) if rows else None,  # inf where outputs are identical
        "psnr_db_min": float(min(psnr)) if rows else None,
        "qabf_fp32_mean": float(np.mean([row["qabf_fp32"] for row in rows])) if rows else None,
        "qabf_int8_mean": float(np.mean([row["qabf_int8"] for row in rows])) if rows else None,
        "delta_qabf_mean": float(np.mean(delta)) if rows else None,
        "delta_qabf_max_abs": float(np.max(np.abs(delta))) if rows else None,
    }
    summary["goal"] = {"psnr_db_mean_min": GOAL_PSNR_DB, "delta_qabf_mean_abs_max": GOAL_DELTA_QABF,
                       "met": bool(rows) and summary["psnr_db_mean"] >= GOAL_PSNR_DB
                       and abs(summary["delta_qabf_mean"]) <= GOAL_DELTA_QABF}
    return {"summary": summary, "pairs": rows}


def write_report(path: str | Path, report: dict) -> Path:
    from mfif.files import write_bytes_atomic

    return write_bytes_atomic(path, (json.dumps(report, indent=2, default=_json_default) + "\n").encode())


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def format_table(report: dict) -> str:
    """A short text table of the accuracy (and sensitivity, when present)."""
    lines = [f"{'pair':<24} {'size':>11} {'PSNR dB':>8} {'Qabf fp32':>9} {'Qabf int8':>9} {'dQabf':>8}"]
    for row in report["accuracy"]["pairs"]:
        size = "x".join(str(v) for v in row["size"])
        lines.append(f"{row['pair'][:24]:<24} {size:>11} {row['psnr_db']:8.2f} {row['qabf_fp32']:9.4f} "
                     f"{row['qabf_int8']:9.4f} {row['delta_qabf']:+8.4f}")
    s = report["accuracy"]["summary"]
    if s["pairs"]:
        label = f"mean of {s['pairs']} pairs"
        lines.append(f"{label:<36} {s['psnr_db_mean']:8.2f} {s['qabf_fp32_mean']:9.4f} "
                     f"{s['qabf_int8_mean']:9.4f} {s['delta_qabf_mean']:+8.4f}")
        goal = s["goal"]
        lines.append(f"goal (mean PSNR >= {goal['psnr_db_mean_min']} dB, |mean dQabf| <= "
                     f"{goal['delta_qabf_mean_abs_max']}): {'met' if goal['met'] else 'NOT met'}")
    if report.get("sensitivity"):
        lines.append("\nper-layer sensitivity (only that layer in INT8), most sensitive first:")
        for row in report["sensitivity"]:
            lines.append(f"  {row['psnr_db']:8.2f} dB  {row['op']:<13} {row['layer']}")
    return "\n".join(lines)
