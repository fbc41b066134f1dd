"""Latency and throughput of fusion, reported the way trtexec reports: warm-up, then a fixed
duration or iteration count; min, mean, median, p90, p95, p99, max and throughput; the split into
preprocessing, host-to-device, compute, device-to-host and postprocessing where the backend has
those stages; a warning when the spread says the machine was not stable.

Runs every (model x backend x resolution) asked for, plus, in the same run, the classical
baselines and the streaming pipeline's end-to-end rate, so ratios compare like with like. Writes
JSON (every figure and the machine) and a PNG plot of latency against resolution. Also ``mfif bench``.

trtexec's options and units: ``--warmUp`` milliseconds (default 200), ``--duration`` seconds,
``--iterations`` calls (with ``--duration`` too, both must be reached), ``--useCudaGraph``,
``--noDataTransfers``, ``--exportTimes``; ``--warmup N`` counts warm-up calls instead.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mfif.benchmarks.report import (arithmetic_floor_ms, latency_summary, machine_description, measure_cpu_rate,
                               stability_warning, write_json)
from mfif.device import DEVICE_HELP, parse_device
from mfif.errors import ConfigError
from mfif.runtime.fuser import STAGES
from mfif.scenes import demo_pair
from mfif.sizes import parse_resolution

WARMUP_MS = 200.0     # trtexec's default --warmUp
DURATION_S = 3.0      # trtexec's default --duration
FLOOR_HELP = ("floor: the model's multiply-accumulates per frame divided by this CPU's measured float32 matmul rate "
              "(MACs per pixel x pixels / MAC/s), a lower bound for this CPU; far above it, "
              "memory traffic, not arithmetic, sets the pace. CPU runs only; it needs torch to count the MACs")


def time_calls(call, warmup: int, iterations: int | None, duration: float | None, *, warmup_ms: float = 0.0,
               after=None) -> list[float]:
    """Milliseconds per call after warm-up (``warmup`` calls, then calls until ``warmup_ms`` have
    passed), for ``iterations`` calls, or ``duration`` seconds (at least 3 calls), or with both
    until both are reached (trtexec's rule). ``after()`` runs after each timed call, untimed."""
    for _ in range(warmup):
        call()
    deadline = time.perf_counter() + warmup_ms / 1e3
    while time.perf_counter() < deadline:
        call()
    samples: list[float] = []
    deadline = time.perf_counter() + (duration or 0.0)
    while len(samples) < (iterations or 3) or time.perf_counter() < deadline:
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e3)
        if after is not None:
            after()
    return samples


def cuda_graph_options(backend: str, device: str) -> dict:
    """Backend options that make the model run as a replayed CUDA graph (--useCudaGraph). Of
    mfif's backends, ONNX Runtime on its CUDA provider can (``enable_cuda_graph``: it captures the
    run on the first calls, for one input shape, and replays it after); the others cannot yet."""
    wanted = parse_device(device)
    if backend != "onnxruntime" or wanted.kind == "cpu":
        where = f"the {backend} backend" + (" on the CPU" if wanted.kind == "cpu" else "")
        raise ConfigError(f"--useCudaGraph: {where} cannot replay CUDA graphs; use --backend onnxruntime on a GPU "
                          "(--device cuda, with onnxruntime-gpu), or leave out --useCudaGraph")
    from mfif.runtime.backends.onnxruntime import CPU, CUDA

    return {"device": "auto",
            "providers": [(CUDA, {"device_id": wanted.index or 0, "enable_cuda_graph": "1"}), CPU]}


def model_macs_per_pixel(info) -> float | None:
    """MACs per output pixel from the model's definition (needs torch); None without it."""
    try:
        from mfif.train.models import build_model, macs_per_pixel
    except ImportError:
        return None
    model = build_model(info.model, **info.config)
    return macs_per_pixel(model, channels=info.channels or 3, sources=info.sources or 2)


def warmup_settings(args) -> tuple[int, float]:
    """(calls, milliseconds) of warm-up: trtexec's --warmUp MS, or our --warmup N calls."""
    if args.warmup is not None and args.warmUp is not None:
        raise ConfigError(f"give the warm-up once: --warmUp {args.warmUp:g} (milliseconds, as trtexec) or --warmup "
                          f"{args.warmup} (calls), not both")
    if args.warmup is not None:
        return args.warmup, 0.0
    return 0, WARMUP_MS if args.warmUp is None else args.warmUp


def bench_model(model: str | None, backend: str, device: str, resolutions, args, cpu_rate: float,
                times: list[dict] | None = None) -> list[dict]:
    """One row per resolution; with ``times`` (a list), also one record per timed call (--exportTimes)."""
    from mfif.runtime import Fuser
    from mfif.runtime.backends import load_backend

    options = cuda_graph_options(backend, device) if args.useCudaGraph else {"device": device}

    def load():
        return Fuser(load_backend(model, backend, threads=args.threads, **options))

    # A CUDA graph is captured for one input shape: a session of its own per resolution.
    fuser = None if args.useCudaGraph else load()
    warmup_calls, warmup_ms = warmup_settings(args)
    rows = []
    for height, width in resolutions:
        fuser = load() if args.useCudaGraph else fuser
        macs = model_macs_per_pixel(fuser.info)
        frames = list(demo_pair(height, width)[:2])
        out = np.empty_like(frames[0])
        per_call: list[dict] = []

        def call():
            fuser.fuse(frames, out=out)

        if warmup_calls or warmup_ms:
            time_calls(call, warmup_calls, None, None, warmup_ms=warmup_ms)
        fuser.reset_stats()
        wall = time_calls(call, 0, args.iterations, args.duration, after=lambda: per_call.append(dict(fuser.stats.last_ms)))
        # --noDataTransfers: trtexec's GPU compute time; here the model's compute stage of each call.
        samples = [stages["compute"] for stages in per_call] if args.noDataTransfers else wall
        stage_ms = {stage: fuser.stats.mean_ms[stage] for stage in STAGES}
        summary = latency_summary(samples)
        row = {
            "kind": "model", "model": fuser.info.model, "file": str(model or "default"), "precision": fuser.info.precision,
            "backend": fuser.backend_name, "device": fuser.device, "height": height, "width": width,
            "latency_ms": summary, "latency_counts": "compute" if args.noDataTransfers else "fuse call",
            "cuda_graph": bool(args.useCudaGraph), "stages_ms": stage_ms, "macs_per_pixel": macs,
            "floor_ms": arithmetic_floor_ms(macs, height, width, cpu_rate) if macs and "CPU" in fuser.device.upper() else None,
            "warning": stability_warning(summary),
        }
        rows.append(row)
        print_row(row)
        if times is not None:
            times += [{"model": row["model"], "precision": row["precision"], "backend": row["backend"],
                       "height": height, "width": width, "iteration": index, "latencyMs": latency,
                       **{f"{stage}Ms": stages[stage] for stage in STAGES}, "fuseMs": stages["total"]}
                      for index, (latency, stages) in enumerate(zip(samples, per_call))]
        if args.useCudaGraph:
            fuser.close()
    if not args.useCudaGraph:
        fuser.close()
    return rows


def bench_baseline(name: str, resolutions, args) -> list[dict]:
    from mfif.evaluation.methods import get_method

    method = get_method(name)
    rows = []
    for height, width in resolutions:
        frames = list(demo_pair(height, width)[:2])
        warmup = 1 if args.warmup is None else min(args.warmup, 2)  # baselines are slow: a call or two
        samples = time_calls(lambda: method.fuse(frames), warmup, args.baseline_iterations, None)
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
    floor = f" floor {row['floor_ms']:.1f} ms" if row.get("floor_ms") else ""
    print(f"{row['kind']:<8} {row['model']:<12} {row['precision']:<5} {row['backend']:<12} {row['width']}x{row['height']:<5} "
          f"mean {lat['mean']:8.2f} median {lat['median']:8.2f} p90 {lat['p90']:8.2f} p99 {lat['p99']:8.2f} "
          f"min {lat['min']:8.2f} ms  {lat['throughput']:7.1f}/s{floor}")
    if row["stages_ms"]:
        print("         stages (mean ms): " + "  ".join(f"{k} {v:.2f}" for k, v in row["stages_ms"].items()))
    if row["warning"]:
        print(f"         WARNING: {row['warning']}")


def series_label(row: dict) -> str:
    """How a row is named in the plot and the ratios: model, precision, backend (a baseline by name)."""
    return f"{row['model']} {row['precision']} {row['backend']}" if row["kind"] == "model" else row["model"]


def plot(rows: list[dict], path: Path) -> Path | None:
    """Write :func:`latency_figure` to ``path`` (PNG); None without matplotlib or rows to plot."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'mfif[eval]')")
        return None
    figure = latency_figure(rows)
    if figure is None:
        return None
    from mfif.files import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial:
        figure.savefig(partial, dpi=90, format=path.suffix.lstrip(".").lower() or "png")
    plt.close(figure)
    return path


def latency_figure(rows: list[dict]):
    """Median latency per fused frame against the frame size (log-log, one line per model, precision
    and backend), whiskers to p90 (thick) and p99 (thin), the arithmetic floor dashed, 30 frames/s
    dotted; with one resolution, a bar chart of the same. None when there is nothing to plot."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    rows = [row for row in rows if row["kind"] != "stream"]
    if not rows:
        return None
    series: dict[str, list[dict]] = {}
    for row in rows:
        series.setdefault(series_label(row), []).append(row)
    sizes = sorted({(row["height"] * row["width"], row["width"], row["height"]) for row in rows})
    figure, axis = plt.subplots(figsize=(9.5, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    floors = False

    def whiskers(x, group, colour, width):
        median = [row["latency_ms"]["median"] for row in group]
        for key, line in (("p90", 2.5), ("p99", 1.0)):
            top = [row["latency_ms"][key] for row in group]
            axis.vlines(x, median, top, color=colour, linewidth=line)
        axis.scatter(x, [row["latency_ms"]["p99"] for row in group], marker="_", s=width, color=colour)

    if len(sizes) == 1:  # one resolution: a bar per series
        (_, width, height), = sizes
        for index, (label, group) in enumerate(series.items()):
            colour = colours[index % len(colours)]
            axis.bar(index, group[0]["latency_ms"]["median"], color=colour, alpha=0.8, label=label)
            whiskers([index], group, "black", 200)
            if group[0].get("floor_ms"):
                floors = True
                axis.hlines(group[0]["floor_ms"], index - 0.4, index + 0.4, color="black", linestyle="--", linewidth=1)
        axis.set_xticks(range(len(series)), list(series), rotation=15, ha="right", fontsize=8)
        axis.set_xlabel(f"{width}x{height} (one resolution)")
        lowest = min(min(row["latency_ms"]["median"], row.get("floor_ms") or math.inf) for row in rows)
        axis.set_yscale("log")
        axis.set_ylim(bottom=lowest / 1.5)  # every bar's top and floor in view on the log axis
    else:
        for index, (label, group) in enumerate(series.items()):
            colour = colours[index % len(colours)]
            group = sorted(group, key=lambda row: row["height"] * row["width"])
            x = [row["height"] * row["width"] / 1e6 for row in group]
            axis.plot(x, [row["latency_ms"]["median"] for row in group], marker="o", color=colour, label=label)
            whiskers(x, group, colour, 60)
            floor = [(mp, row["floor_ms"]) for mp, row in zip(x, group) if row.get("floor_ms")]
            if floor:
                floors = True
                axis.plot(*zip(*floor), linestyle="--", color=colour, linewidth=1)
        axis.set_xscale("log")
        axis.set_xticks([pixels / 1e6 for pixels, _, _ in sizes], [f"{w}x{h}" for _, w, h in sizes], fontsize=8)
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("frame size (log scale of the pixel count)")
    axis.set_yscale("log")
    # Readable milliseconds on the log axis: 1, 2, 5, 10, 20, 50 ... instead of powers of ten.
    axis.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.yaxis.set_minor_formatter(NullFormatter())
    axis.set_ylabel("latency per fused frame (ms)")
    axis.grid(True, which="major", alpha=0.3)
    axis.axhline(1000 / 30, color="grey", linestyle=":", linewidth=1)
    handles, labels = axis.get_legend_handles_labels()
    handles += [Line2D([], [], color="grey", linestyle=":"),
                Line2D([], [], color="black", marker="s" if len(sizes) == 1 else "o", linewidth=0),
                Line2D([], [], color="black", linewidth=2.5), Line2D([], [], color="black", linewidth=1)]
    labels += ["30 frames/s (33.3 ms)", "median (bar)" if len(sizes) == 1 else "median", "whisker to p90",
               "whisker to p99"]
    if floors:
        handles.append(Line2D([], [], color="black", linestyle="--", linewidth=1))
        labels.append("floor: MACs / CPU matmul rate")
    axis.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    figure.tight_layout()
    return figure


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", default=None,
                        help="model file (.onnx, .engine, .safetensors); repeat for several; default: the shipped model")
    parser.add_argument("--backend", default="onnxruntime", help="comma-separated: onnxruntime, torch, tensorrt (default onnxruntime)")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--resolution", default="640x480,1280x720,1920x1080",
                        help="comma-separated WIDTHxHEIGHT or 480p/720p/1080p/2160p (default 640x480,1280x720,1920x1080)")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Latency and throughput per fused frame, trtexec-style: warm-up, then --duration seconds or --iterations "
        "calls; min, mean, median, p90, p95, p99, max, throughput and the per-stage split, per model x backend x "
        "resolution; JSON and a PNG plot. trtexec's names and units: --warmUp is milliseconds (--warmup N counts "
        "calls instead), --duration seconds; --useCudaGraph, --noDataTransfers, --exportTimes.")
    parser.epilog = ("The plot: median latency per fused frame against the frame size, whiskers to p90 (thick) and "
                     "p99 (thin), 30 frames/s dotted; a bar chart when there is one resolution. The dashed "
                     f"{FLOOR_HELP}.")
    timing = parser.add_argument_group("timing (trtexec's names and units)")
    timing.add_argument("--warmUp", type=float, default=None, metavar="MS",
                        help=f"warm up for this many milliseconds per case (default {WARMUP_MS:g}, as trtexec)")
    timing.add_argument("--warmup", type=int, default=None, metavar="N",
                        help="warm up with N calls per case instead of --warmUp milliseconds")
    timing.add_argument("--iterations", type=int, default=None,
                        help="timed calls per case (alone: exactly N; with --duration: at least N)")
    timing.add_argument("--duration", type=float, default=None, metavar="S",
                        help=f"timed seconds per case (default {DURATION_S:g} unless --iterations is given; with "
                             "--iterations: at least S)")
    timing.add_argument("--useCudaGraph", action="store_true",
                        help="run the model as a replayed CUDA graph where the backend can (ONNX Runtime on its CUDA "
                             "provider); refused elsewhere")
    timing.add_argument("--noDataTransfers", action="store_true",
                        help="latency counts the model's compute stage only (no preprocessing, host-device copies or "
                             "postprocessing: trtexec's GPU compute time)")
    timing.add_argument("--exportTimes", type=Path, default=None, metavar="FILE",
                        help="write every timed call of every case as JSON (latencyMs and the stages in ms)")
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
    if args.duration is not None and args.duration <= 0:
        raise ConfigError(f"--duration must be > 0 seconds, not {args.duration}")
    if args.duration is None and args.iterations is None:
        args.duration = DURATION_S
    if (args.warmup is not None and args.warmup < 0) or (args.warmUp is not None and args.warmUp < 0):
        raise ConfigError(f"warm-up must be >= 0, not {args.warmup if args.warmup is not None else args.warmUp}")
    warmup_settings(args)
    if args.useCudaGraph:
        for backend in backends:
            cuda_graph_options(backend, args.device)
    machine = machine_description()
    cpu_rate = measure_cpu_rate()
    machine["cpu_matmul_gmacs"] = cpu_rate / 1e9
    print(f"machine: {machine['cpu']} ({machine['cpu_cores']} cores), GPUs: {', '.join(machine['gpus']) or 'none'}; "
          f"CPU float32 matmul {cpu_rate / 1e9:.1f} GMAC/s")
    rows: list[dict] = []
    times: list[dict] | None = [] if args.exportTimes else None
    for model in models:
        for backend in backends:
            rows += bench_model(model, backend, args.device, resolutions, args, cpu_rate, times)
    for name in filter(None, (n.strip() for n in args.baselines.split(","))):
        rows += bench_baseline(name, resolutions, args)
    streams = []
    if args.stream_frames:
        height, width = resolutions[0]
        streams = [bench_stream(models[0], backends[0], args.device, height, width, args.stream_frames, args)]
    summarize(rows)
    write_json(args.json, {"machine": machine, "results": rows, "streams": streams})
    print(f"wrote {args.json}")
    if times is not None:
        from mfif.files import write_bytes_atomic

        write_bytes_atomic(args.exportTimes, json.dumps(times, indent=1).encode())
        print(f"wrote {args.exportTimes} ({len(times)} timed calls)")
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
        print(f"  {series_label(row):<30} {row['width']}x{row['height']}: {ratio:6.2f}x  (vs {series_label(ref)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
