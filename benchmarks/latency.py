"""Latency and throughput of fusion, reported the way trtexec reports: warm-up, then a fixed
duration or iteration count; min, mean, median, p90, p95, p99, max and throughput; the split into
preprocessing, host-to-device, compute, device-to-host and postprocessing where the backend has
those stages; a warning when the spread says the machine was not stable.

Runs every (model x backend x resolution) asked for, plus, in the same run, the classical
baselines and the streaming pipeline's end-to-end rate, so ratios compare like with like. Writes
JSON (every figure and the machine) and a PNG plot of latency against resolution. Also ``mfif bench``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mfif.benchmarks.report import (arithmetic_floor_ms, latency_summary, machine_description, measure_cpu_rate,
                               stability_warning, write_json)
from mfif.device import DEVICE_HELP
from mfif.errors import ConfigError
from mfif.runtime.fuser import STAGES
from mfif.scenes import demo_pair

RESOLUTIONS = {"480p": (480, 640), "720p": (720, 1280), "1080p": (1080, 1920), "2160p": (2160, 3840)}


def parse_resolution(text: str) -> tuple[int, int]:
    """'640x480' (width x height) or a name from RESOLUTIONS -> (height, width)."""
    text = text.strip().lower()
    if text in RESOLUTIONS:
        return RESOLUTIONS[text]
    try:
        width, height = (int(part) for part in text.split("x"))
    except ValueError:
        raise ConfigError(f"resolution {text!r} is not WIDTHxHEIGHT (e.g. 640x480) nor one of {', '.join(RESOLUTIONS)}") from None
    if width < 8 or height < 8:
        raise ConfigError(f"resolution {text!r} is too small: width and height must be >= 8")
    return height, width


def time_calls(call, warmup: int, iterations: int | None, duration: float) -> list[float]:
    """Milliseconds per call after warm-up, for ``iterations`` calls or ``duration`` seconds."""
    for _ in range(warmup):
        call()
    samples: list[float] = []
    deadline = time.perf_counter() + duration
    while (len(samples) < iterations) if iterations else (time.perf_counter() < deadline or len(samples) < 3):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def model_macs_per_pixel(info) -> float | None:
    """MACs per output pixel from the model's definition (needs torch); None without it."""
    try:
        from mfif.train.models import build_model, macs_per_pixel
    except ImportError:
        return None
    model = build_model(info.model, **info.config)
    return macs_per_pixel(model, channels=info.channels or 3, sources=info.sources or 2)


def bench_model(model: str | None, backend: str, device: str, resolutions, args, cpu_rate: float) -> list[dict]:
    from mfif.runtime import Fuser
    from mfif.runtime.backends import load_backend

    fuser = Fuser(load_backend(model, backend, device, threads=args.threads))
    macs = model_macs_per_pixel(fuser.info)
    rows = []
    for height, width in resolutions:
        frames = list(demo_pair(height, width)[:2])
        out = np.empty_like(frames[0])

        def call():
            fuser.fuse(frames, out=out)

        for _ in range(args.warmup):
            call()
        fuser.reset_stats()
        samples = time_calls(call, 0, args.iterations, args.duration)
        stage_ms = {stage: fuser.stats.mean_ms[stage] for stage in STAGES}
        summary = latency_summary(samples)
        row = {
            "kind": "model", "model": fuser.info.model, "file": str(model or "default"), "precision": fuser.info.precision,
            "backend": fuser.backend_name, "device": fuser.device, "height": height, "width": width,
            "latency_ms": summary, "stages_ms": stage_ms, "macs_per_pixel": macs,
            "floor_ms": arithmetic_floor_ms(macs, height, width, cpu_rate) if macs and "CPU" in fuser.device.upper() else None,
            "warning": stability_warning(summary),
        }
        rows.append(row)
        print_row(row)
    fuser.close()
    return rows


def bench_baseline(name: str, resolutions, args) -> list[dict]:
    from mfif.evaluation.methods import get_method

    method = get_method(name)
    rows = []
    for height, width in resolutions:
        frames = list(demo_pair(height, width)[:2])
        samples = time_calls(lambda: method.fuse(frames), min(args.warmup, 2), args.baseline_iterations, 0.0)
        summary = latency_summary(samples)
        row = {"kind": "baseline", "model": name, "file": "", "precision": "-", "backend": "numpy/OpenCV",
               "device": "CPU", "height": height, "width": width, "latency_ms": summary, "stages_ms": {},
               "macs_per_pixel": None, "floor_ms": None, "warning": stability_warning(summary)}
        rows.append(row)
        print_row(row)
    return rows


def bench_stream(model: str | None, backend: str, device: str, height: int, width: int, frames: int, args) -> dict:
    """End-to-end rate of the streaming pipeline (decode, fuse, hand out) on a generated video pair."""
    import cv2
    from mfif.runtime import Fuser
    from mfif.runtime.backends import load_backend

    pair = list(demo_pair(height, width)[:2])
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index, frame in enumerate(pair):
            path = str(Path(folder) / f"{'ab'[index]}.avi")
            writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30, (width, height))
            for _ in range(frames):
                writer.write(frame)
            writer.release()
            paths.append(path)
        fuser = Fuser(load_backend(model, backend, device, threads=args.threads))
        start = time.perf_counter()
        count = sum(1 for _ in fuser.stream(paths[0], paths[1]))
        seconds = time.perf_counter() - start
        fuser.close()
    row = {"kind": "stream", "model": fuser.info.model, "backend": fuser.backend_name, "device": fuser.device,
           "height": height, "width": width, "frames": count, "seconds": seconds, "fps": count / seconds}
    print(f"stream   {row['model']:<12} {row['backend']:<12} {width}x{height}: {count} frames in {seconds:.2f} s "
          f"= {row['fps']:.1f} fused frames/s end to end (decode + fuse + output)")
    return row


def print_row(row: dict) -> None:
    lat = row["latency_ms"]
    floor = f" floor {row['floor_ms']:.1f}" if row.get("floor_ms") else ""
    print(f"{row['kind']:<8} {row['model']:<12} {row['precision']:<5} {row['backend']:<12} {row['width']}x{row['height']:<5} "
          f"mean {lat['mean']:8.2f} median {lat['median']:8.2f} p90 {lat['p90']:8.2f} p99 {lat['p99']:8.2f} "
          f"min {lat['min']:8.2f} ms  {lat['throughput']:7.1f}/s{floor}")
    if row["stages_ms"]:
        print("         stages (mean ms): " + "  ".join(f"{k} {v:.2f}" for k, v in row["stages_ms"].items()))
    if row["warning"]:
        print(f"         WARNING: {row['warning']}")


def plot(rows: list[dict], path: Path) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'mfif[eval]')")
        return None
    figure, axis = plt.subplots(figsize=(7, 4.5))
    series: dict[str, list[tuple[float, float]]] = {}
    ticks: dict[float, str] = {}
    for row in rows:
        if row["kind"] == "stream":
            continue
        label = f"{row['model']} {row['precision']} {row['backend']}" if row["kind"] == "model" else row["model"]
        megapixels = row["height"] * row["width"] / 1e6
        ticks[megapixels] = f"{row['width']}x{row['height']}"
        series.setdefault(label, []).append((megapixels, row["latency_ms"]["median"]))
    for label, points in series.items():
        points.sort()
        axis.plot(*zip(*points), marker="o", label=label)
    axis.set_xlabel("frame size (log scale of the pixel count)")
    axis.set_ylabel("median latency per fused frame (ms)")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xticks(sorted(ticks), [ticks[m] for m in sorted(ticks)])
    axis.minorticks_off()
    axis.grid(True, which="both", alpha=0.3)
    axis.axhline(1000 / 30, color="grey", linestyle="--", linewidth=0.8)
    axis.text(min(ticks), 1000 / 30, " 30 frames/s", va="bottom", fontsize=8, color="grey")
    axis.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", default=None,
                        help="model file (.onnx, .engine, .safetensors); repeat for several; default: the shipped model")
    parser.add_argument("--backend", default="onnxruntime", help="comma-separated: onnxruntime, torch, tensorrt (default onnxruntime)")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--resolution", default="640x480,1280x720,1920x1080",
                        help="comma-separated WIDTHxHEIGHT or 480p/720p/1080p/2160p (default 640x480,1280x720,1920x1080)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up calls per case (default 5)")
    parser.add_argument("--iterations", type=int, default=None, help="timed calls per case (default: --duration)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per case when --iterations is not set (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: physical cores)")
    parser.add_argument("--baselines", default="", help="comma-separated classical methods to time alongside (e.g. average,lp,gff)")
    parser.add_argument("--baseline-iterations", type=int, default=5, help="timed calls per baseline case (default 5)")
    parser.add_argument("--stream-frames", type=int, default=0, help="also time the streaming pipeline on a generated video of this many frames")
    parser.add_argument("--json", type=Path, default=Path("bench/latency.json"), help="where to write every figure (default bench/latency.json)")
    parser.add_argument("--plot", type=Path, default=Path("bench/latency.png"), help="latency-vs-resolution plot (default bench/latency.png)")


def run(args: argparse.Namespace) -> int:
    resolutions = [parse_resolution(text) for text in args.resolution.split(",") if text.strip()]
    backends = [name.strip() for name in args.backend.split(",") if name.strip()]
    models = args.model or [None]
    if args.iterations is not None and args.iterations < 1:
        raise ConfigError(f"--iterations must be >= 1, not {args.iterations}")
    if args.duration <= 0:
        raise ConfigError(f"--duration must be > 0 seconds, not {args.duration}")
    machine = machine_description()
    cpu_rate = measure_cpu_rate()
    machine["cpu_matmul_gmacs"] = cpu_rate / 1e9
    print(f"machine: {machine['cpu']} ({machine['cpu_cores']} cores), GPUs: {', '.join(machine['gpus']) or 'none'}; "
          f"CPU float32 matmul {cpu_rate / 1e9:.1f} GMAC/s")
    rows: list[dict] = []
    for model in models:
        for backend in backends:
            rows += bench_model(model, backend, args.device, resolutions, args, cpu_rate)
    for name in filter(None, (n.strip() for n in args.baselines.split(","))):
        rows += bench_baseline(name, resolutions, args)
    streams = []
    if args.stream_frames:
        height, width = resolutions[0]
        streams = [bench_stream(models[0], backends[0], args.device, height, width, args.stream_frames, args)]
    summarize(rows)
    write_json(args.json, {"machine": machine, "results": rows, "streams": streams})
    print(f"wrote {args.json}")
    if plot(rows, args.plot):
        print(f"wrote {args.plot}")
    return 0


def summarize(rows: list[dict]) -> None:
    """Each baseline's and each model's median latency as a ratio to the first model's, per resolution."""
    reference = {}
    for row in rows:
        if row["kind"] == "model":
            reference.setdefault((row["height"], row["width"]), row)
    if not reference:
        return
    print("\nratio of median latency to the first model (lower is faster):")
    for row in rows:
        ref = reference.get((row["height"], row["width"]))
        if ref is None or row is ref:
            continue
        ratio = row["latency_ms"]["median"] / ref["latency_ms"]["median"]
        print(f"  {row['model']:<12} {row['backend']:<12} {row['width']}x{row['height']}: {ratio:6.2f}x  (vs {ref['model']} {ref['backend']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
