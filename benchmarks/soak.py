"""Soak test of the streaming pipeline: many frames from a generated video pair through
``Fuser.stream`` on the CPU. Prints whether resident memory grew (after warm-up), whether the file
source dropped frames (it never may), and whether latency stayed stable from the first to the last
thousand frames. Stability is judged on the median, which a shared or throttled CPU moves by a few
percent; the p99, which such a machine moves by tens of percent from one block to the next, is
reported beside it. Writes the figures as JSON.

    python -m mfif.benchmarks.soak --frames 10000
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mfif.sizes import parse_resolution
from mfif.benchmarks.report import latency_summary, machine_description, write_json
from mfif.errors import ConfigError

MEMORY_GROWTH_LIMIT = 0.05   # resident memory after warm-up may grow less than 5%
MEDIAN_DRIFT_LIMIT = 0.15    # the last thousand frames' median within 15% of the first thousand's


def resident_mb() -> float:
    """Current resident set size in MiB (Linux /proc; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_videos(folder: Path, frames: int, height: int, width: int) -> tuple[str, str]:
    """Two videos of one slowly panning scene, focused on its left half (A) and right half (B)."""
    import cv2

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (-(-height // 6), -(-(width + frames // 4) // 6) + 2, 3), dtype=np.uint8)
    scene = cv2.resize(small, (small.shape[1] * 6, small.shape[0] * 6), interpolation=cv2.INTER_CUBIC)
    paths = (str(folder / "soak_a.avi"), str(folder / "soak_b.avi"))
    writers = [cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30, (width, height)) for path in paths]
    for index in range(frames):
        offset = (index // 4) % (scene.shape[1] - width)
        view = np.ascontiguousarray(scene[:height, offset:offset + width])
        blurred = cv2.GaussianBlur(view, (0, 0), 3)
        a, b = view.copy(), view.copy()
        a[:, width // 2:] = blurred[:, width // 2:]
        b[:, : width // 2] = blurred[:, : width // 2]
        writers[0].write(a)
        writers[1].write(b)
    for writer in writers:
        writer.release()
    return paths


def soak(frames: int, height: int, width: int, warmup: int, model: str | None, threads: int | None) -> dict:
    from mfif.runtime import Fuser
    from mfif.runtime.backends import load_backend

    with tempfile.TemporaryDirectory() as folder:
        print(f"writing a {frames}-frame {width}x{height} video pair ...", flush=True)
        path_a, path_b = write_videos(Path(folder), frames, height, width)
        fuser = Fuser(load_backend(model, threads=threads))
        stream = fuser.stream(path_a, path_b, timeout=60.0)
        fuse_ms, interval_ms, memory = [], [], {}
        last = time.perf_counter()
        for index, _ in enumerate(stream):
            now = time.perf_counter()
            interval_ms.append((now - last) * 1e3)
            fuse_ms.append(fuser.stats.last_ms["total"])
            last = now
            if index + 1 == warmup:
                memory["after_warmup_mb"] = resident_mb()
            if (index + 1) % 1000 == 0:
                print(f"  {index + 1} frames, resident {resident_mb():.1f} MiB", flush=True)
        memory["end_mb"] = resident_mb()
        stats = stream.stats
        fuser.close()
    count = len(fuse_ms)
    block = min(1000, max(1, count // 2))
    first, last_block = latency_summary(fuse_ms[:block]), latency_summary(fuse_ms[-block:])
    growth = memory["end_mb"] / memory.get("after_warmup_mb", memory["end_mb"]) - 1.0
    drift = last_block["median"] / first["median"] - 1.0
    return {
        "frames_written": frames, "frames_fused": count, "dropped": stats["dropped"], "resolution": [width, height],
        "memory": {**memory, "growth": growth}, "fuse_ms_first_block": first, "fuse_ms_last_block": last_block,
        "median_drift": drift, "p99_drift": last_block["p99"] / first["p99"] - 1.0, "interval_ms": latency_summary(interval_ms[1:] or interval_ms),
        "end_to_end_fps": stats["fps"],
        "pass": {"memory": growth < MEMORY_GROWTH_LIMIT, "no_drops": stats["dropped"] == 0 and count == frames,
                 "latency_stable": abs(drift) <= MEDIAN_DRIFT_LIMIT},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10000, help="frames in the generated video pair (default 10000)")
    parser.add_argument("--resolution", default="320x240", help="WIDTHxHEIGHT of the video (default 320x240)")
    parser.add_argument("--warmup", type=int, default=500, help="frames before the memory baseline is taken (default 500)")
    parser.add_argument("--model", default=None, help="ONNX model (default: the shipped one)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    parser.add_argument("--json", type=Path, default=Path("bench/soak.json"))
    args = parser.parse_args(argv)
    try:
        height, width = parse_resolution(args.resolution)
    except ConfigError as exc:
        parser.error(str(exc))
    if args.frames < 2 * args.warmup or args.warmup < 1:
        parser.error(f"--frames ({args.frames}) must be at least twice --warmup ({args.warmup}), and --warmup >= 1")
    result = soak(args.frames, height, width, args.warmup, args.model, args.threads)
    result["machine"] = machine_description()
    write_json(args.json, result)
    memory, first, last = result["memory"], result["fuse_ms_first_block"], result["fuse_ms_last_block"]
    print(f"\nframes fused {result['frames_fused']} of {result['frames_written']}, dropped {result['dropped']}")
    print(f"resident memory after warm-up {memory.get('after_warmup_mb', 0):.1f} MiB, at the end {memory['end_mb']:.1f} MiB "
          f"(growth {memory['growth']:+.2%}, limit {MEMORY_GROWTH_LIMIT:.0%})")
    print(f"fuse latency median: first block {first['median']:.2f} ms, last block {last['median']:.2f} ms "
          f"(drift {result['median_drift']:+.1%}, limit {MEDIAN_DRIFT_LIMIT:.0%}); "
          f"p99 {first['p99']:.2f} -> {last['p99']:.2f} ms ({result['p99_drift']:+.1%}, not gated)")
    print(f"end-to-end {result['end_to_end_fps']:.1f} fused frames/s")
    verdict = result["pass"]
    print("PASS" if all(verdict.values()) else f"FAIL: {[k for k, v in verdict.items() if not v]}")
    print(f"wrote {args.json}")
    return 0 if all(verdict.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
