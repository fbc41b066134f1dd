"""Quality/speed trade-off of focusmap's ``scale`` knob (the weights stay the same; only the
resolution the focus scores are computed at changes): for each scale, the MACs per pixel, the
fused frames per second through ``runtime.Fuser`` (ONNX Runtime, CPU) at 640x480 and 1920x1080,
and Qabf on real pairs next to enfuse's. Prints a Markdown table and writes JSON.

    python -m mfif.benchmarks.variants train/weights/focusmap.safetensors --scales 1,2,3,4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mfif.benchmarks.latency import time_calls
from mfif.benchmarks.report import latency_summary, machine_description, write_json
from mfif.errors import DataError
from mfif.paths import shared_data_dir
from mfif.scenes import demo_pair

DEFAULT_SETS = ("classic", "mfifb_aymaz", "mfifb_mffw", "mfifb_misc", "mfifb_savic", "mfifb_stand", "mfifb_tsai")


def load_pairs(folders: list[Path]):
    from mfif.imageio import find_pairs, read_pair

    return [(folder.name, pair.name, *read_pair(pair)[0]) for folder in folders for pair in find_pairs(folder)]


def qabf_per_set(fuse, pairs) -> dict[str, float]:
    from mfif.evaluation.metrics import reference_grey
    from mfif.evaluation.metrics.gradient import qabf

    scores: dict[str, list[float]] = {}
    for set_name, _, a, b in pairs:
        fused = fuse([a, b])
        scores.setdefault(set_name, []).append(qabf(reference_grey(a), reference_grey(b), reference_grey(fused)))
    result = {name: float(np.mean(values)) for name, values in scores.items()}
    result["all"] = float(np.mean([v for values in scores.values() for v in values]))
    return result


def fps(fuser, height: int, width: int, seconds: float) -> float:
    frames = list(demo_pair(height, width)[:2])
    out = np.empty_like(frames[0])
    samples = time_calls(lambda: fuser.fuse(frames, out=out), 3, None, seconds)
    return 1000.0 / latency_summary(samples)["median"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="focusmap checkpoint (.safetensors)")
    parser.add_argument("--scales", default="1,2,3,4", help="comma-separated scales (default 1,2,3,4)")
    parser.add_argument("--pairs", type=Path, action="append", help="pair folders (default: the shared MFIFB and classic sets)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per resolution (default 3 s)")
    parser.add_argument("--no-enfuse", action="store_true", help="skip the enfuse row")
    parser.add_argument("--json", type=Path, default=Path("bench/variants.json"))
    args = parser.parse_args(argv)

    from mfif.export.onnx_export import export_onnx, load_model
    from mfif.runtime import Fuser
    from mfif.train.checkpoint import load_checkpoint
    from mfif.train.models import macs_per_pixel

    folders = args.pairs
    if not folders:
        root = shared_data_dir()
        if root is None:
            raise DataError("no pair folders given and no shared data found: pass --pairs DIR")
        folders = [root / "pairs" / name for name in DEFAULT_SETS]
    pairs = load_pairs(folders)
    checkpoint = load_checkpoint(args.checkpoint)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for scale in (int(s) for s in args.scales.split(",")):
            model = load_model(checkpoint, {"scale": scale})[0]
            path = Path(folder) / f"focusmap_s{scale}.onnx"
            export_onnx(model, path)
            fuser = Fuser(path, backend="onnxruntime")
            row = {"variant": f"focusmap scale={scale}", "macs_per_pixel": macs_per_pixel(model),
                   "fps_640x480": fps(fuser, 480, 640, args.seconds), "fps_1920x1080": fps(fuser, 1080, 1920, args.seconds),
                   "qabf": qabf_per_set(fuser.fuse, pairs)}
            rows.append(row)
            print(f"{row['variant']}: {row['fps_640x480']:.1f} / {row['fps_1920x1080']:.2f} fps, Qabf {row['qabf']['all']:.4f}", flush=True)
    if not args.no_enfuse:
        from mfif.evaluation import enfuse

        if enfuse.available():
            frames = list(demo_pair(480, 640)[:2])
            start = time.perf_counter()
            enfuse.fuse(frames)
            rows.append({"variant": "enfuse (hard mask)", "macs_per_pixel": None,
                         "fps_640x480": 1.0 / (time.perf_counter() - start), "fps_1920x1080": None,
                         "qabf": qabf_per_set(enfuse.fuse, pairs)})
    sets = list(rows[0]["qabf"])
    print("\n| variant | MACs/pixel | fps 640x480 | fps 1920x1080 | " + " | ".join(f"Qabf {s}" for s in sets) + " |")
    print("|---|---|---|---|" + "---|" * len(sets))
    for row in rows:
        macs = f"{row['macs_per_pixel']:.0f}" if row["macs_per_pixel"] else "-"
        hd = f"{row['fps_1920x1080']:.2f}" if row["fps_1920x1080"] else "-"
        print(f"| {row['variant']} | {macs} | {row['fps_640x480']:.1f} | {hd} | "
              + " | ".join(f"{row['qabf'][s]:.4f}" for s in sets) + " |")
    write_json(args.json, {"machine": machine_description(), "rows": rows, "pairs": len(pairs)})
    print(f"\n{len(pairs)} pairs; wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
