"""Peak memory of ``mfif fuse`` on large image pairs, whole against in tiles: each case runs the
real command in a child process and reads its peak resident memory (what ``/usr/bin/time -v``
calls "Maximum resident set size"), then prints it per megapixel with the wall time.

    python -m mfif.benchmarks.large_frames --megapixels 12,48,100
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mfif.benchmarks.report import machine_description, write_json

WHOLE_GIB = 1000.0   # a memory limit no pair reaches: the frame is fused whole


def write_pair(folder: Path, megapixels: float) -> tuple[Path, Path, int, int]:
    """A multi-focus pair of about ``megapixels`` (4:3), scaled up from a generated scene."""
    import cv2

    from mfif.imageio import write_image
    from mfif.scenes import demo_pair

    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    a, b, _ = demo_pair(480, 640, seed=1)
    paths = []
    for name, frame in (("a", a), ("b", b)):
        large = cv2.resize(frame, (width, height), interpolation=cv2.INTER_CUBIC)
        paths.append(write_image(folder / f"{name}.png", large))
        del large
    return paths[0], paths[1], width, height


def peak_of_fuse(paths: tuple[Path, Path], output: Path, memory_gib: float) -> tuple[float, float]:
    """(peak resident MiB, seconds) of one ``mfif fuse`` child process."""
    code = ("import resource, sys\nfrom mfif.cli import main\ncode = main(sys.argv[1:])\n"
            "print('peak_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\nsys.exit(code)\n")
    command = [sys.executable, "-c", code, "fuse", str(paths[0]), str(paths[1]), "-o", str(output), "--no-align",
               "--memory-limit", str(memory_gib)]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        raise RuntimeError(f"mfif fuse failed: {result.stderr.strip()[-500:]}")
    peak_kib = int(result.stdout.split("peak_kib")[-1].split()[0])
    return peak_kib / 1024, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", default="12,48,100", help="comma-separated pair sizes (default 12,48,100)")
    parser.add_argument("--json", type=Path, default=Path("bench/large_frames.json"))
    args = parser.parse_args(argv)
    from mfif.runtime.fuser import DEFAULT_MEMORY_LIMIT

    rows = []
    print(f"{'pair':>16} {'mode':>6} {'peak MiB':>9} {'MiB/MP':>7} {'seconds':>8}")
    for megapixels in (float(text) for text in args.megapixels.split(",")):
        with tempfile.TemporaryDirectory() as folder:
            a, b, width, height = write_pair(Path(folder), megapixels)
            pixels = width * height / 1e6
            for mode, limit in (("whole", WHOLE_GIB), ("tiled", DEFAULT_MEMORY_LIMIT / 2**30)):
                peak, seconds = peak_of_fuse((a, b), Path(folder) / "fused.png", limit)
                rows.append({"width": width, "height": height, "megapixels": pixels, "mode": mode,
                             "memory_limit_gib": limit, "peak_mib": peak, "mib_per_megapixel": peak / pixels,
                             "seconds": seconds})
                print(f"{f'{width}x{height}':>16} {mode:>6} {peak:9.0f} {peak / pixels:7.1f} {seconds:8.1f}", flush=True)
    write_json(args.json, {"machine": machine_description(), "rows": rows})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
