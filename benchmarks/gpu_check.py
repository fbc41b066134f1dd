"""One command that proves the GPU path on a machine with an NVIDIA GPU, PyTorch (CUDA build),
CuPy and cuda-python, without TensorRT and without network::

    python -m mfif.benchmarks.gpu_check                  # everything, one JSON (gpu_check.json)
    python -m mfif.benchmarks.gpu_check --dry-run        # list the steps; exits 0 anywhere
    python -m mfif.benchmarks.gpu_check --only latency --sizes 1920x1080 --out my.json

Steps (each runs on its own; a failing step is recorded with its error and the others go on):

- ``environment``: GPU, driver, CUDA, torch / CuPy / cuda-python versions;
- ``torch_fp32_fp16``: the shipped focusmap checkpoint on CUDA in FP32 and FP16 against the CPU
  result on a generated pair (max abs error, PSNR);
- ``cuda_buffers``: mfif's cuda-python buffers: pinned -> device -> pinned round trip of a frame,
  stream events, a producer stream wait;
- ``gpu_resident``: frames that live on the GPU (torch CUDA tensors, CuPy arrays) through the
  Fuser on the torch backend, fused frame returned on the GPU, compared with the host path;
- ``bandwidth``: device-to-device copy bandwidth, for the memory floor of each size;
- ``latency``: the model's GPU time at 640x480, 1920x1080 and 3840x2160 (WIDTHxHEIGHT, as
  ``mfif bench --resolution``), FP32 and FP16, eager and as a CUDA graph (median, p90, p99, CUDA
  events), the memory floor (input read + output written at the measured bandwidth) beside it,
  and the whole Fuser call from host frames.

The goal in docs/benchmarks.md: a 1920x1080 pair in at most 2 ms (torch FP16). Budget: under 8
minutes on an H100/H200 (``--iterations`` lowers it further).
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import sys
import time
import traceback
from pathlib import Path

from mfif.benchmarks.report import write_json
from mfif.errors import ConfigError
from mfif.sizes import parse_resolution

STEPS = {
    "environment": "GPU, driver, CUDA and package versions",
    "torch_fp32_fp16": "focusmap on CUDA in FP32 and FP16 vs the CPU result (max error, PSNR)",
    "cuda_buffers": "cuda-python pinned/device round trip of a 1080p frame, events, producer stream wait",
    "gpu_resident": "torch CUDA and CuPy frames through Fuser (torch backend), fused frame kept on the GPU",
    "bandwidth": "device-to-device copy bandwidth (the memory floor)",
    "latency": "model GPU time at each size, FP32/FP16, eager and CUDA graph; median/p90/p99; Fuser from host frames",
}
DEFAULT_SIZES = ("640x480", "1920x1080", "3840x2160")


def parse_size(text: str) -> tuple[int, int]:
    """--sizes entry: WIDTHxHEIGHT as everywhere in mfif (1920x1080) -> (height, width)."""
    try:
        return parse_resolution(text, option="size", minimum=16)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mfif.benchmarks.gpu_check", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="list the steps and exit 0 (no GPU needed)")
    parser.add_argument("--only", nargs="+", choices=list(STEPS), metavar="STEP",
                        help=f"run only these steps ({', '.join(STEPS)})")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size(s) for s in DEFAULT_SIZES],
                        metavar="WxH", help=f"frame sizes for the latency step (default {' '.join(DEFAULT_SIZES)})")
    parser.add_argument("--iterations", type=int, default=200, help="timed runs per case (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs before each case (default 20)")
    parser.add_argument("--device", default="cuda:0", help="CUDA device (default cuda:0)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON written (default gpu_check.json)")
    return parser


# ---------------------------------------------------------------------------------------- helpers


def percentiles(times_ms: list[float]) -> dict[str, float]:
    ordered = sorted(times_ms)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return {"median_ms": round(at(0.5), 4), "p90_ms": round(at(0.9), 4), "p99_ms": round(at(0.99), 4),
            "min_ms": round(ordered[0], 4), "mean_ms": round(sum(ordered) / len(ordered), 4), "runs": len(ordered)}


class Context:
    """What the steps share: arguments, torch, the device, the model and a test pair."""

    def __init__(self, args) -> None:
        self.args = args
        import torch

        self.torch = torch
        if not torch.cuda.is_available():
            raise SystemExit(f"gpu_check needs a CUDA GPU and a CUDA build of PyTorch; torch {torch.__version__} "
                             "sees none (use --dry-run to list the steps)")
        self.device = torch.device(args.device)
        torch.cuda.set_device(self.device)
        self._model = None

    def model(self):
        if self._model is None:
            from mfif.runtime.backends.torch_backend import default_checkpoint
            from mfif.train.checkpoint import load_checkpoint

            self._model = load_checkpoint(default_checkpoint()).model.eval()
        return self._model

    def pair(self, height: int, width: int):
        """A generated multi-focus pair of uint8 BGR frames (the demo scene)."""
        import numpy as np

        rng = np.random.default_rng(0)
        base = (rng.random((height // 8 + 1, width // 8 + 1, 3)) * 255).astype(np.float32)
        sharp = np.kron(base, np.ones((8, 8, 1), np.float32))[:height, :width]
        blurred = sharp.copy()
        for axis in (0, 1):
            blurred = (np.roll(blurred, 2, axis) + blurred + np.roll(blurred, -2, axis)) / 3
        a, b = sharp.copy(), blurred.copy()
        a[:, width // 2:], b[:, width // 2:] = blurred[:, width // 2:], sharp[:, width // 2:]
        return a.astype(np.uint8), b.astype(np.uint8)

    def padded(self, height: int, width: int) -> tuple[int, int]:
        multiple = max(1, int(getattr(self.model(), "size_multiple", 1)))
        return -(-height // multiple) * multiple, -(-width // multiple) * multiple

    def gpu_time(self, fn, iterations: int, warmup: int) -> list[float]:
        torch = self.torch
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        times = []
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(iterations):
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return times


# ------------------------------------------------------------------------------------------ steps


def step_environment(ctx: Context) -> dict:
    torch = ctx.torch
    props = torch.cuda.get_device_properties(ctx.device)
    out = {"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}",
           "memory_gib": round(props.total_memory / 2**30, 1), "torch": torch.__version__,
           "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "python": platform.python_version()}
    for module in ("cupy", "cuda.bindings", "tensorrt", "onnxruntime"):
        try:
            imported = __import__(module, fromlist=["__version__"])
            out[module] = getattr(imported, "__version__", "?")
        except Exception as exc:  # noqa: BLE001 - absent packages are facts, not failures
            out[module] = f"not importable: {type(exc).__name__}"
    try:
        from mfif.runtime import cuda_buffers as cb

        rt = cb.cudart()
        out["driver_cuda"] = rt.cudaDriverGetVersion()[1]
        out["cuda_python_runtime"] = rt.cudaRuntimeGetVersion()[1]
    except Exception as exc:  # noqa: BLE001
        out["driver_cuda"] = f"unknown: {exc}"
    return out


def step_torch_fp32_fp16(ctx: Context) -> dict:
    import numpy as np

    from mfif.export.onnx_export import output_psnr

    torch, model = ctx.torch, ctx.model()
    a, b = ctx.pair(480, 640)
    height, width = ctx.padded(480, 640)
    x = np.stack([a, b]).astype(np.float32).transpose(0, 3, 1, 2)[None] / 255.0
    x = np.pad(x, ((0, 0), (0, 0), (0, 0), (0, height - 480), (0, width - 640)), mode="reflect")
    with torch.inference_mode():
        reference = model(torch.from_numpy(x)).numpy()
        out = {}
        for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
            gpu_model = copy.deepcopy(model).to(ctx.device, dtype)
            result = gpu_model(torch.from_numpy(x).to(ctx.device, dtype)).float().cpu().numpy()
            out[name] = {"max_abs_error": float(np.abs(result - reference).max()), "psnr_db": round(output_psnr(reference, result), 2)}
    out["ok"] = out["fp32"]["max_abs_error"] < 1e-3 and out["fp16"]["psnr_db"] > 40
    return out


def step_cuda_buffers(ctx: Context) -> dict:
    import numpy as np

    from mfif.runtime import cuda_buffers as cb

    index = ctx.device.index or 0
    cb.use_device(index)
    frame = np.random.default_rng(0).random((1, 2, 3, 1080, 1920), dtype=np.float32)
    copy, times = cb.round_trip(frame)
    equal = bool(np.array_equal(copy, frame))
    stream = cb.Stream()
    try:
        producer = ctx.torch.cuda.Stream(device=ctx.device)
        stream.wait_for(producer.cuda_stream)             # a producer's stream handle
        stream.wait_for(1)                                 # the legacy default stream
        stream.wait_for(2)                                 # the per-thread default stream
        stream.synchronize()
        gb = frame.nbytes / 1e9
        return {"round_trip_equal": equal, "bytes": frame.nbytes, "h2d_ms": round(times["h2d"], 3),
                "d2h_ms": round(times["d2h"], 3), "h2d_gb_s": round(gb / (times["h2d"] / 1e3), 1),
                "d2h_gb_s": round(gb / (times["d2h"] / 1e3), 1), "producer_waits": "ok", "ok": equal}
    finally:
        stream.destroy()


def step_gpu_resident(ctx: Context) -> dict:
    import numpy as np

    from mfif.runtime import Fuser

    torch = ctx.torch
    a, b = ctx.pair(480, 640)
    out: dict = {}
    with Fuser(backend="torch", device=str(ctx.device)) as fuser:
        host = fuser(a, b)
        frames = {"torch": [torch.from_numpy(f).to(ctx.device) for f in (a, b)]}
        try:
            import cupy

            with cupy.cuda.Device(ctx.device.index or 0):
                frames["cupy"] = [cupy.asarray(f) for f in (a, b)]
        except ImportError:
            out["cupy"] = {"skipped": "CuPy is not installed"}
        for kind, pair in frames.items():
            fused = fuser(*pair)                          # GPU frames in: the fused frame stays on the GPU
            interface = getattr(fused, "__cuda_array_interface__", None)
            back = torch.as_tensor(fused, device=ctx.device).cpu().numpy()
            difference = int(np.abs(back.astype(np.int16) - host.astype(np.int16)).max())
            out[kind] = {"result_on_gpu": interface is not None, "shape": list(back.shape),
                         "max_difference_to_host_path": difference, "ok": interface is not None and difference <= 1}
    out["ok"] = all(v.get("ok", True) for v in out.values() if isinstance(v, dict))
    return out


def step_bandwidth(ctx: Context) -> dict:
    torch = ctx.torch
    source = torch.empty(256 << 20, dtype=torch.uint8, device=ctx.device)
    target = torch.empty_like(source)
    times = ctx.gpu_time(lambda: target.copy_(source), iterations=20, warmup=3)
    median = percentiles(times)["median_ms"]
    gb_s = 2 * source.numel() / 1e9 / (median / 1e3)   # read + write
    ctx.bandwidth_gb_s = gb_s
    return {"copy_bytes": source.numel(), "median_ms": median, "gb_s_read_plus_write": round(gb_s, 1)}


def step_latency(ctx: Context) -> dict:
    import numpy as np

    from mfif.runtime import Fuser

    torch, args = ctx.torch, ctx.args
    bandwidth = getattr(ctx, "bandwidth_gb_s", None) or step_bandwidth(ctx)["gb_s_read_plus_write"]
    model = ctx.model()
    results = []
    for height, width in args.sizes:
        ph, pw = ctx.padded(height, width)
        for precision, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
            gpu_model = copy.deepcopy(model).to(ctx.device, dtype)
            x = torch.rand((1, 2, 3, ph, pw), device=ctx.device, dtype=dtype)
            row = {"size": f"{width}x{height}", "padded": f"{pw}x{ph}", "precision": precision}
            bytes_moved = x.numel() * x.element_size() + (x.numel() // 2) * x.element_size()
            row["floor_ms"] = round(bytes_moved / 1e9 / bandwidth * 1e3, 4)   # read both sources, write one
            with torch.inference_mode():
                row["eager"] = percentiles(ctx.gpu_time(lambda: gpu_model(x), args.iterations, args.warmup))
            try:
                side = torch.cuda.Stream(device=ctx.device)
                side.wait_stream(torch.cuda.current_stream())
                with torch.inference_mode(), torch.cuda.stream(side):
                    for _ in range(3):
                        gpu_model(x)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.inference_mode(), torch.cuda.graph(graph):
                    gpu_model(x)
                row["cuda_graph"] = percentiles(ctx.gpu_time(graph.replay, args.iterations, args.warmup))
                del graph
            except Exception as exc:  # noqa: BLE001 - a model that cannot be captured is a finding
                row["cuda_graph"] = {"error": f"{type(exc).__name__}: {exc}"}
            results.append(row)
            del x, gpu_model
        torch.cuda.empty_cache()
        a, b = ctx.pair(height, width)
        with Fuser(backend="torch", device=str(ctx.device)) as fuser:
            times = []
            for i in range(args.warmup + max(10, args.iterations // 4)):
                start = time.perf_counter()
                fuser(a, b)
                if i >= args.warmup:
                    times.append((time.perf_counter() - start) * 1e3)
            results.append({"size": f"{width}x{height}", "precision": "fp16", "fuser_from_host_frames":
                            percentiles(times), "stages_mean_ms": {k: round(v, 3) for k, v in fuser.stats.mean_ms.items()}})
    goal = next((r for r in results if r.get("size") == "1920x1080" and r.get("precision") == "fp16" and "eager" in r), None)
    summary = {}
    if goal is not None:
        best = min(goal["eager"]["median_ms"], goal.get("cuda_graph", {}).get("median_ms", math.inf))
        summary = {"goal_ms": 2.0, "best_1080p_fp16_median_ms": best, "floor_ms": goal["floor_ms"], "met": best <= 2.0}
    return {"bandwidth_gb_s": round(bandwidth, 1), "cases": results, "goal_1080p": summary}


RUNNERS = {"environment": step_environment, "torch_fp32_fp16": step_torch_fp32_fp16, "cuda_buffers": step_cuda_buffers,
           "gpu_resident": step_gpu_resident, "bandwidth": step_bandwidth, "latency": step_latency}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.iterations < 1 or args.warmup < 0:
        print(f"--iterations must be >= 1 and --warmup >= 0 (got {args.iterations}, {args.warmup})", file=sys.stderr)
        return 2
    chosen = args.only or list(STEPS)
    if args.dry_run:
        print(f"gpu_check would run {len(chosen)} step(s) and write {args.out}:")
        for name in chosen:
            extra = f" at {', '.join(f'{w}x{h}' for h, w in args.sizes)}" if name == "latency" else ""
            print(f"  {name:<16} {STEPS[name]}{extra}")
        return 0
    ctx = Context(args)
    report = {"tool": "mfif gpu_check", "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "steps": {}}
    for name in chosen:
        began = time.perf_counter()
        print(f"[{name}] {STEPS[name]} ...", flush=True)
        try:
            result = RUNNERS[name](ctx)
            status = "failed" if result.get("ok") is False else "ok"
        except Exception as exc:  # noqa: BLE001 - record it, run the other steps
            result, status = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}, "error"
        result["status"], result["seconds"] = status, round(time.perf_counter() - began, 1)
        report["steps"][name] = result
        print(f"[{name}] {status} in {result['seconds']} s", flush=True)
        write_json(args.out, report)   # partial results survive a crash or a time-out
    print(f"wrote {args.out}")
    return 0 if all(step["status"] == "ok" for step in report["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
