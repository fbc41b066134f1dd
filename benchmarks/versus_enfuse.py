"""Wall time of fusing a folder of pairs: one ``mfif fuse DIR -o OUT`` process against enfuse run
once per pair (as a user runs it), with the same outputs written. The speed goal: our command in
less than half of enfuse's time on ``pairs/mfifb_mffw``.

    python -m benchmarks.versus_enfuse [/path/to/pairs]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.report import machine_description, write_json
from mfif.errors import DataError
from mfif.imageio import find_pairs
from mfif.paths import shared_data_dir


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="?", type=Path, help="folder of <name>_A/<name>_B pairs (default: shared mfifb_mffw)")
    parser.add_argument("--model", help="model for mfif fuse (default: the shipped one)")
    parser.add_argument("--json", type=Path, default=Path("bench/versus_enfuse.json"))
    args = parser.parse_args(argv)
    folder = args.pairs
    if folder is None:
        root = shared_data_dir()
        if root is None:
            raise DataError("no pair folder given and no shared data found")
        folder = root / "pairs" / "mfifb_mffw"
    pairs = find_pairs(folder)
    from evaluation.enfuse import FOCUS_STACK_ARGS, find_enfuse

    enfuse = find_enfuse()
    mfif = [sys.executable, "-m", "mfif.cli", "fuse", str(folder)] + (["--model", args.model] if args.model else [])
    with tempfile.TemporaryDirectory() as out:
        ours = timed([*mfif, "-o", str(Path(out) / "mfif"), "--format", "tif"])  # enfuse writes TIFF too
        theirs = sum(timed([enfuse, *FOCUS_STACK_ARGS, "-o", str(Path(out) / f"{pair.name}.tif"), str(pair.a), str(pair.b)])
                     for pair in pairs)
    ratio = ours / theirs
    print(f"{len(pairs)} pairs in {folder}:")
    print(f"  mfif fuse (one process, startup included): {ours:.2f} s ({ours / len(pairs) * 1000:.0f} ms per pair)")
    print(f"  enfuse, one run per pair:                   {theirs:.2f} s ({theirs / len(pairs) * 1000:.0f} ms per pair)")
    print(f"  ratio {ratio:.2f} (goal < 0.5): {'met' if ratio < 0.5 else 'NOT met'}")
    write_json(args.json, {"machine": machine_description(), "pairs": len(pairs), "folder": str(folder),
                           "mfif_seconds": ours, "enfuse_seconds": theirs, "ratio": ratio})
    return 0


if __name__ == "__main__":
    sys.exit(main())
