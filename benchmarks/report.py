"""Shared pieces of the benchmarks: trtexec-style latency statistics, the machine's description,
and its measured arithmetic rate (for the arithmetic floor of a model)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

PERCENTILES = (50, 90, 95, 99)
# trtexec warns when the spread says clocks or load were not stable; we use the coefficient of
# variation of the latencies and the p99/median ratio.
UNSTABLE_CV = 0.10
UNSTABLE_P99_RATIO = 1.5


def latency_summary(milliseconds) -> dict[str, float]:
    """min, mean, median, p90, p95, p99, max, std (ms) and throughput (per second) of samples."""
    samples = np.asarray(list(milliseconds), dtype=np.float64)
    if samples.size == 0:
        raise ValueError("no latency samples: run at least one iteration after warm-up")
    summary = {
        "count": int(samples.size),
        "min": float(samples.min()),
        "mean": float(samples.mean()),
        "median": float(np.median(samples)),
        "max": float(samples.max()),
        "std": float(samples.std()),
    }
    for p in PERCENTILES[1:]:
        summary[f"p{p}"] = float(np.percentile(samples, p))
    summary["throughput"] = 1000.0 / summary["mean"] if summary["mean"] > 0 else float("inf")
    return summary


def stability_warning(summary: dict[str, float]) -> str | None:
    """A trtexec-like warning when the spread is too wide to trust the figures, else None."""
    cv = summary["std"] / summary["mean"] if summary["mean"] > 0 else 0.0
    ratio = summary["p99"] / summary["median"] if summary["median"] > 0 else 1.0
    if cv <= UNSTABLE_CV and ratio <= UNSTABLE_P99_RATIO:
        return None
    return (f"latency spread is wide (coefficient of variation {cv:.1%}, p99/median {ratio:.2f}): the machine "
            "was not stable (other load, frequency scaling or thermal throttling). Close other programs and "
            "re-run; on a Jetson run 'sudo jetson_clocks' (and pick the MAXN power mode with nvpmodel) first.")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_names() -> list[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        return []


def machine_description() -> dict:
    versions = {}
    for package in ("numpy", "onnxruntime", "onnxruntime-gpu", "opencv-python-headless", "opencv-python",
                    "torch", "tensorrt", "cuda-python", "mfif"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu": _cpu_name(),
        "cpu_cores": os.cpu_count(),
        "gpus": _gpu_names(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "jetson": Path("/etc/nv_tegra_release").exists(),
    }


def measure_cpu_rate(size: int = 1024, repeats: int = 5) -> float:
    """Multiply-accumulates per second of a float32 matrix product on the CPU (best of repeats)."""
    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return size ** 3 / best


def arithmetic_floor_ms(macs_per_pixel: float, height: int, width: int, macs_per_second: float) -> float:
    """The time the model's multiply-accumulates take at the machine's measured rate."""
    return macs_per_pixel * height * width / macs_per_second * 1000.0


def write_json(path: str | Path, payload: dict) -> Path:
    from mfif.files import write_bytes_atomic

    return write_bytes_atomic(path, json.dumps(payload, indent=2, default=str).encode())


def run_command(parser, run, argv: list[str] | None) -> int:
    """Parse ``argv`` and call ``run(args)``, as ``mfif`` does for its commands: an MfifError is
    one line 'error: ...' and exit 2, an interrupt exit 130."""
    from mfif.errors import MfifError

    args = parser.parse_args(argv)
    try:
        return int(run(args) or 0)
    except MfifError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
