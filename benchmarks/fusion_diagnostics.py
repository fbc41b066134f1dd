"""Why a fusion method scores what it scores, on real pairs, in two figures per pair:

- **identity PSNR**: the method fed the same frame twice, against that frame. A method that
  copies pixels of the sources (decision maps, focusmap's weighted sum) gives it back exactly
  (inf); a net that re-synthesizes every pixel (xu2018, mustafa2019) loses detail even where there
  is nothing to choose, which gradient-based scores such as QG punish.
- **hedged share**: where the sources differ (|A - B| > 20 grey levels), the effective weight of
  source A, (F - B) / (A - B); the share of those pixels with a weight between 0.2 and 0.8, a
  blend rather than a choice of the sharper source.

    python -m mfif.benchmarks.fusion_diagnostics ../shared/data/pairs/classic --pair clock --pair pepsi \\
        --methods decision,lp,model:train/weights/xu2018.safetensors
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from mfif.benchmarks.report import run_command
from mfif.errors import ConfigError, DataError

DIFFERENCE = 20.0          # grey levels: where the sources clearly differ
HEDGE_RANGE = (0.2, 0.8)   # effective weights counted as a blend


def grey(image: np.ndarray) -> np.ndarray:
    return (image if image.ndim == 2 else image.mean(axis=2)).astype(np.float64)


def identity_psnr(fuse, frame: np.ndarray) -> float:
    """PSNR (dB, 8-bit peak) of fuse([frame, frame]) against the frame; inf when exact."""
    fused = np.asarray(fuse([frame, frame]), np.float64)
    error = np.mean((fused - frame.astype(np.float64)) ** 2)
    return math.inf if error == 0 else 10 * math.log10(255.0 ** 2 / error)


def hedged_share(a: np.ndarray, b: np.ndarray, fused: np.ndarray) -> float:
    """Share of the pixels where the sources differ whose effective weight of A is a blend."""
    a, b, fused = grey(a), grey(b), grey(fused)
    differ = np.abs(a - b) > DIFFERENCE
    if not differ.any():
        raise DataError(f"the sources never differ by more than {DIFFERENCE:g} grey levels: nothing to measure")
    weight = (fused - b)[differ] / (a - b)[differ]
    return float(np.mean((weight > HEDGE_RANGE[0]) & (weight < HEDGE_RANGE[1])))


def run(args: argparse.Namespace) -> int:
    from mfif.evaluation.methods import get_methods
    from mfif.evaluation.scoring import folder_items

    items = [item for item in folder_items([args.pairs]) if not args.pair or item.name in args.pair]
    missing = sorted(set(args.pair) - {item.name for item in items})
    if missing:
        raise ConfigError(f"--pair {', '.join(missing)}: no such pair in {args.pairs}")
    if not items:
        raise DataError(f"no pairs in {args.pairs}")
    methods = get_methods(args.methods)
    print("| pair | method | identity PSNR (dB) | hedged share |")
    print("|---|---|---|---|")
    for item in items:
        frames, _ = item.load()
        if len(frames) != 2:
            raise DataError(f"{item.name} has {len(frames)} sources; the diagnostics take pairs")
        for method in methods:
            share = hedged_share(*frames, method.fuse(frames))
            identity = identity_psnr(method.fuse, frames[0])
            print(f"| {item.name} | {method.label} | {identity:.2f} | {share:.3f} |")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mfif.benchmarks.fusion_diagnostics",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pairs", help="folder of real pairs")
    parser.add_argument("--pair", action="append", default=[], help="only this pair (repeatable)")
    parser.add_argument("--methods", default="decision,lp", help="methods of mfif evaluate, comma-separated")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)

if __name__ == "__main__":
    sys.exit(main())
