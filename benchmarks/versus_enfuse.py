"""Wall time of fusing a folder of pairs: one ``mfif fuse DIR -o OUT`` process against enfuse run
once per pair (as a user runs it), both writing LZW TIFF files. The speed goal: our command in
less than half of enfuse's time on ``pairs/mfifb_mffw``. Each side runs ``--repeat`` times
(alternating, so drifts in the machine's speed hit both) and the medians are compared.

    python -m mfif.benchmarks.versus_enfuse [/path/to/pairs] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mfif.benchmarks.report import machine_description, write_json
from mfif.errors import DataError
from mfif.imageio import find_pairs
from mfif.paths import shared_data_dir


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def spread(runs: list[float]) -> str:
    return f"{min(runs):.2f}-{max(runs):.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="?", type=Path, help="folder of <name>_A/<name>_B pairs (default: shared mfifb_mffw)")
    parser.add_argument("--model", help="model for mfif fuse (default: the shipped one)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each side; medians are compared (default 5)")
    parser.add_argument("--json", type=Path, default=Path("bench/versus_enfuse.json"))
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, not {args.repeat}")
    folder = args.pairs
    if folder is None:
        root = shared_data_dir()
        if root is None:
            raise DataError("no pair folder given and no shared data found")
        folder = root / "pairs" / "mfifb_mffw"
    pairs = find_pairs(folder)
    from mfif.evaluation.enfuse import FOCUS_STACK_ARGS, find_enfuse

    enfuse = find_enfuse()
    mfif = [sys.executable, "-m", "mfif.cli", "fuse", str(folder)] + (["--model", args.model] if args.model else [])
    ours_runs, theirs_runs = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as out:
            ours_runs.append(timed([*mfif, "-o", str(Path(out) / "mfif"), "--format", "tif"]))  # LZW, like enfuse
            theirs_runs.append(sum(timed([enfuse, *FOCUS_STACK_ARGS, "-o", str(Path(out) / f"{pair.name}.tif"),
                                          str(pair.a), str(pair.b)]) for pair in pairs))
    ours, theirs = statistics.median(ours_runs), statistics.median(theirs_runs)
    ratio = ours / theirs
    print(f"{len(pairs)} pairs in {folder}, median of {args.repeat} runs each:")
    print(f"  mfif fuse (one process, startup included): {ours:.2f} s ({ours / len(pairs) * 1000:.0f} ms per pair; "
          f"runs {spread(ours_runs)} s)")
    print(f"  enfuse, one run per pair:                   {theirs:.2f} s ({theirs / len(pairs) * 1000:.0f} ms per pair; "
          f"runs {spread(theirs_runs)} s)")
    print(f"  ratio {ratio:.2f} (goal < 0.5): {'met' if ratio < 0.5 else 'NOT met'}")
    write_json(args.json, {"machine": machine_description(), "pairs": len(pairs), "folder": str(folder),
                           "repeat": args.repeat, "mfif_seconds": ours, "enfuse_seconds": theirs, "ratio": ratio,
                           "mfif_runs": ours_runs, "enfuse_runs": theirs_runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
