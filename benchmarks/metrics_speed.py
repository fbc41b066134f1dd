"""Time the eight reference fusion metrics on one pair (default 520x520): per-metric latency and
the total for scoring one fused image, written as JSON and printed as a table.

Every call is timed cold: QP's cache of source features (evaluation.metrics.phase) is cleared
before each call, so QP's figure includes the phase congruency of both sources, as for the first
fused image of a pair. Caches that depend only on the image size (filter banks) stay warm.

The pair is a source pair and its CNN fused result from the shared metric reference set, resized
to the requested size; without the shared data a synthetic multi-focus pair is used.

    python -m mfif.benchmarks.metrics_speed [--size 520] [--iterations 5] [--json bench/metrics_speed.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from mfif.benchmarks.report import latency_summary, machine_description, stability_warning, write_json
from mfif.paths import shared_data_dir
from mfif.scenes import demo_pair

REFERENCE_PAIR = ("g_01", "cnn")


def _reference_pair(size: int):
    data = shared_data_dir()
    folder = data / "metrics_reference" / "liu2020_gray10" if data else None
    if folder is None or not folder.is_dir():
        return None
    import cv2

    from mfif.imageio import read_image

    image, method = REFERENCE_PAIR
    paths = [folder / "sources" / f"{image}_1.png", folder / "sources" / f"{image}_2.png",
             folder / "fused" / f"{image}_{method}.png"]
    if not all(path.is_file() for path in paths):
        return None
    pair = [cv2.resize(read_image(path, "grey"), (size, size), interpolation=cv2.INTER_CUBIC) for path in paths]
    return pair, f"liu2020_gray10 {image} + {method}, resized to {size}x{size}"


def _synthetic_pair(size: int):
    a, b, sharp = demo_pair(size, size, colour=False)
    fused = (2 * sharp.astype(np.uint16) + a + b) // 4  # halfway between the sharp scene and the average
    return [a, b, fused.astype(np.uint8)], f"generated multi-focus pair {size}x{size} (mfif.scenes.demo_pair)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=520, help="height and width of the pair (default 520)")
    parser.add_argument("--iterations", type=int, default=5, help="timed cold calls per metric after one warm-up (default 5)")
    parser.add_argument("--metrics", default=None, help="comma-separated metric names (default: the eight reference metrics)")
    parser.add_argument("--synthetic", action="store_true", help="use a synthetic pair even when the shared data is present")
    parser.add_argument("--json", type=Path, default=Path("bench/metrics_speed.json"),
                        help="where to write the figures (default bench/metrics_speed.json)")


def run(args: argparse.Namespace) -> int:
    from mfif.evaluation.metrics import REFERENCE_METRICS, get_metric
    from mfif.evaluation.metrics.common import prepare_inputs
    from mfif.evaluation.metrics.phase import clear_feature_cache
    from mfif.errors import ConfigError

    if args.size < 11 or args.iterations < 1:
        raise ConfigError(f"--size must be >= 11 and --iterations >= 1; got {args.size} and {args.iterations}")
    names = args.metrics.split(",") if args.metrics else list(REFERENCE_METRICS)
    found = None if args.synthetic else _reference_pair(args.size)
    (a, b, fused), source = found or _synthetic_pair(args.size)
    grey = prepare_inputs(a, b, fused)[:3]

    rows, warnings = [], []
    print(f"fusion metrics on {source}, {args.iterations} timed cold calls each (no cached source features)")
    for name in names:
        try:
            metric = get_metric(name)
        except KeyError as exc:
            raise ConfigError(str(exc)) from exc
        value = float(metric(*grey))  # warm-up (imports, caches)
        samples = []
        for _ in range(args.iterations):
            clear_feature_cache()  # cold: QP computes the sources' features again
            start = time.perf_counter()
            metric(*grey)
            samples.append((time.perf_counter() - start) * 1000.0)
        summary = latency_summary(samples)
        rows.append({"metric": name, "value": value, "latency_ms": summary})
        warning = stability_warning(summary)
        if warning:
            warnings.append(f"{name}: {warning}")
        print(f"  {name:<6} {summary['median']:8.1f} ms median  {summary['min']:8.1f} ms min   value {value:.6f}"
              + ("   (unstable)" if warning else ""))
    total = sum(row["latency_ms"]["median"] for row in rows)
    print(f"  {'total':<6} {total:8.1f} ms (sum of medians)")
    for warning in warnings[:1]:
        print(f"warning: {warning}")
    payload = {"machine": machine_description(), "pair": source, "size": args.size,
               "iterations": args.iterations, "cold_calls": True, "results": rows, "total_median_ms": total}
    print(f"wrote {write_json(args.json, payload)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
