"""``mfif calibrate``: a calibrated INT8 (Q/DQ) ONNX from an FP32 export, with its accuracy report.

    mfif calibrate focusmap.onnx -o focusmap_int8.onnx --data pairs/mfifb_mffw pairs/mfifb_savic \\
        --eval pairs/mfi_whu --method percentile --sensitivity
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

PAIR_HELP = "a folder of <name>_A/<name>_B pairs, a video file (K consecutive frames per sample) or 'synthetic'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="FP32 .onnx written by 'mfif export'")
    parser.add_argument("-o", "--output", type=Path, required=True, help="INT8 Q/DQ .onnx to write")
    parser.add_argument("--data", nargs="+", required=True, metavar="SOURCE", help=f"calibration data: {PAIR_HELP}")
    parser.add_argument("--frames", type=int, default=64, help="number of calibration frames (default 64)")
    parser.add_argument("--crop", type=int, default=256, help="calibration frames are random crops of up to this "
                                                              "size at the images' own scale (default 256)")
    parser.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="minmax",
                        help="calibration method (default minmax)")
    parser.add_argument("--percentile", type=float, default=99.999, help="for --method percentile (default 99.999)")
    parser.add_argument("--keep-float", nargs="+", default=[], metavar="LAYER",
                        help="Conv/ConvTranspose node names to leave in float (see --sensitivity)")
    parser.add_argument("--eval", nargs="+", default=[], metavar="DIR",
                        help="held-out pair folders for the accuracy report (default: every 4th sample of --data, "
                             "not used for calibration)")
    parser.add_argument("--eval-count", type=int, default=16, help="at most this many held-out pairs (default 16)")
    parser.add_argument("--sensitivity", action="store_true",
                        help="also quantize one layer at a time and report the output PSNR of each")
    parser.add_argument("--sensitivity-frames", type=int, default=4,
                        help="held-out crops the per-layer sweep measures on (default 4)")
    parser.add_argument("--report", type=Path, help="JSON report to write (default: OUTPUT with .report.json)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the crop positions and synthetic scenes")


def run(args: argparse.Namespace) -> int:
    from mfif.calibration.data import calibration_frames, crops, load_samples, split_holdout
    from mfif.calibration.quantize import quantizable_nodes, quantize_int8
    from mfif.calibration.report import accuracy_report, format_table, write_report
    from mfif.calibration.sensitivity import layer_sensitivity
    from mfif.export.onnx_export import load_onnx, read_info
    from mfif.errors import ConfigError, ModelFileError
    from mfif.progress import Progress

    info = read_info(args.model)
    if info.precision != "fp32":
        raise ModelFileError(f"{args.model} is a {info.precision} model; calibrate the FP32 export")
    if args.eval_count < 1:
        raise ConfigError(f"--eval-count must be >= 1, not {args.eval_count}")
    samples = [s for source in args.data for s in load_samples(source, info, args.frames, args.seed)]
    if args.eval:
        held = [s for folder in args.eval for s in load_samples(folder, info, args.eval_count, args.seed + 1)]
        calibration_set = samples
    else:
        calibration_set, held = split_holdout(samples)
    if not held:
        raise ConfigError("no held-out pairs for the accuracy report: give --eval DIR or more --data")
    held = held[:: max(1, len(held) // args.eval_count)][: args.eval_count]
    frames = calibration_frames(calibration_set, info, args.frames, args.crop, args.seed)
    report_path = args.report or args.output.with_suffix(".report.json")

    with tempfile.TemporaryDirectory(prefix="mfif-calibrate-") as tmp:
        cache = Path(tmp) / "ranges.json"
        # A bar per stage on a terminal; in a log, one line when each stage ends.
        with Progress(total=len(frames), desc=f"calibrating ({args.method})", unit="frame", log=True) as bar:
            quantize_int8(args.model, args.output, frames, method=args.method, percentile=args.percentile,
                          keep_float=args.keep_float, cache=cache, progress=bar,
                          metadata={"data": [str(d) for d in args.data], "crop": args.crop})
        print(f"wrote {args.output} ({info.model}, int8 Q/DQ, {len(frames)} frames from {len(calibration_set)} "
              f"scenes, {args.method})")
        sensitivity = []
        if args.sensitivity:
            inputs = crops(held, info, args.sensitivity_frames, args.crop, args.seed + 1)
            layers = len(quantizable_nodes(load_onnx(args.model)))
            with Progress(total=layers, desc="per-layer sensitivity", unit="layer", log=True) as bar:
                sensitivity = layer_sensitivity(args.model, cache, inputs, method=args.method,
                                                percentile=args.percentile, progress=bar)
    with Progress(total=len(held), desc="accuracy on held-out pairs", unit="pair", log=True) as bar:
        accuracy = accuracy_report(args.model, args.output, held, progress=bar)
    report = {
        "fp32_model": str(args.model), "int8_model": str(args.output), "model": info.model,
        "calibration": {"method": args.method, "frames": len(frames), "crop": args.crop,
                        "percentile": args.percentile if args.method == "percentile" else None,
                        "data": [str(d) for d in args.data], "keep_float": args.keep_float, "seed": args.seed},
        "held_out": {"source": [str(d) for d in args.eval] or "every 4th sample of --data",
                     "synthetic": all(s.name.startswith("synthetic") for s in held)},
        "accuracy": accuracy,
        "sensitivity": sensitivity,
    }
    write_report(report_path, report)
    print(format_table(report))
    print(f"report: {report_path}")
    return 0
