"""``mfif compare``: run one input through two models, or one model on two backends or devices,
and compare the outputs, as ``polygraphy run model.onnx --onnxrt --trt`` does.

    mfif compare model.onnx model.engine                     # ONNX Runtime against the TensorRT engine
    mfif compare model.onnx model_fp16.onnx --atol 0.01      # FP32 against its FP16 variant
    mfif compare model.onnx --device cpu cuda                # one file on two devices
    mfif compare a.onnx b.onnx --images A.png B.png          # your own frames instead of generated ones

The frames go in as float32 in [0, 1] and the fused frames (and the weight maps, when both models
give them) come out as float32, so the comparison sees the models' own error, not uint8 rounding.
It prints the largest absolute difference and the PSNR (peak 1.0) per input and exits 1 when the
fused frames differ by more than --atol (0 within it, 2 on a usage error). The weight maps'
difference is reported, and gated only with --weights-atol: where the sources look alike the
weights may swing with no visible change in the fused frame.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from mfif.device import DEVICE_HELP
from mfif.errors import ConfigError
from mfif.runtime.backends import CHOICES

DEFAULT_ATOL = 1e-3   # in [0, 1] units: a quarter of a grey level


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n")[1]
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help="one model file (with two --device or --backend values) or two (.onnx, .engine, "
                             ".safetensors); 'default' is the shipped model")
    parser.add_argument("--backend", nargs="+", default=["auto"], choices=CHOICES, metavar="NAME",
                        help="backend of each side: one value for both or two (default auto: by file suffix)")
    parser.add_argument("--device", nargs="+", default=["auto"], metavar="DEV",
                        help=f"device of each side: one value for both or two; {DEVICE_HELP}")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL,
                        help=f"largest absolute difference allowed, in [0, 1] units (default {DEFAULT_ATOL:g}, a "
                             "quarter of a grey level)")
    parser.add_argument("--weights-atol", type=float, default=None, metavar="ATOL",
                        help="also fail when the weight maps differ by more than this (default: reported only)")
    parser.add_argument("--resolution", default="640x480",
                        help="comma-separated WIDTHxHEIGHT of the generated pairs (default 640x480)")
    parser.add_argument("--images", nargs="+", metavar="IMAGE",
                        help="fuse these images (two or more of one scene) instead of generated pairs")
    parser.add_argument("--json", type=Path, help="also write the figures here")


def sides(args: argparse.Namespace) -> list[tuple[str | None, str, str]]:
    """(model or None for the default, backend, device) of each side."""
    if len(args.models) > 2:
        raise ConfigError(f"compare takes one or two model files, not {len(args.models)}: {' '.join(args.models)}")
    for option, values in (("--backend", args.backend), ("--device", args.device)):
        if len(values) > 2:
            raise ConfigError(f"{option} takes one value (both sides) or two (one per side), not {len(values)}")
    models = [None if model == "default" else model for model in args.models]
    models = models * 2 if len(models) == 1 else models
    pairs = [(models[i], args.backend[min(i, len(args.backend) - 1)], args.device[min(i, len(args.device) - 1)])
             for i in (0, 1)]
    if pairs[0] == pairs[1]:
        raise ConfigError(f"both sides are {args.models[0]} on backend {pairs[0][1]}, device {pairs[0][2]}: give a "
                          "second model file, or two --device values (e.g. --device cpu cuda) or two --backend values")
    return pairs


def inputs(args: argparse.Namespace) -> list[tuple[str, list[np.ndarray]]]:
    """(name, frames as float32 in [0, 1]) for each comparison."""
    if args.images:
        from mfif.imageio import read_image

        if len(args.images) < 2:
            raise ConfigError(f"--images needs two or more images of one scene, got {len(args.images)}")
        return [(" + ".join(Path(p).name for p in args.images),
                 [read_image(path).astype(np.float32) / 255.0 for path in args.images])]
    from mfif.sizes import parse_resolution
    from mfif.scenes import demo_pair

    found = []
    for text in filter(None, (part.strip() for part in args.resolution.split(","))):
        height, width = parse_resolution(text)
        a, b, _ = demo_pair(height, width)
        found.append((f"demo pair {width}x{height}", [a.astype(np.float32) / 255.0, b.astype(np.float32) / 255.0]))
    if not found:
        raise ConfigError("--resolution names no size; e.g. --resolution 640x480,1920x1080")
    return found


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB with peak 1.0; inf for identical arrays."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def compare_outputs(first, second) -> dict:
    """Max and mean absolute difference and PSNR of the fused frames, and max difference of the
    weight maps when both sides have them (else None)."""
    fused = [first[0], second[0]]
    difference = np.abs(fused[0].astype(np.float64) - fused[1].astype(np.float64))
    weights = None
    if first[1] is not None and second[1] is not None:
        weights = float(np.max(np.abs(first[1].astype(np.float64) - second[1].astype(np.float64))))
    return {"max_abs": float(difference.max()), "mean_abs": float(difference.mean()),
            "psnr_db": psnr(*fused), "weights_max_abs": weights}


def run(args: argparse.Namespace) -> int:
    from mfif.runtime import Fuser
    from mfif.runtime.backends import load_backend

    for option, value in (("--atol", args.atol), ("--weights-atol", args.weights_atol)):
        if value is not None and not (value >= 0 and math.isfinite(value)):
            raise ConfigError(f"{option} must be a finite number >= 0, not {value}")
    wanted = sides(args)
    cases = inputs(args)
    fusers = [Fuser(load_backend(model, backend, device)) for model, backend, device in wanted]
    names = []
    for fuser, (model, _, _) in zip(fusers, wanted):
        names.append(f"{model or 'default'} ({fuser.info.precision}) on {fuser.backend_name}: {fuser.device}")
    print(f"A: {names[0]}\nB: {names[1]}")
    weights = all(fuser.info.has_weight_map for fuser in fusers)
    rows = []
    for name, frames in cases:
        outputs = [fuser.fuse(frames, return_weights=True) if weights else (fuser.fuse(frames), None)
                   for fuser in fusers]
        row = {"input": name, **compare_outputs(*outputs)}
        row["pass"] = row["max_abs"] <= args.atol and (args.weights_atol is None or row["weights_max_abs"] is None
                                                       or row["weights_max_abs"] <= args.weights_atol)
        rows.append(row)
        extra = "" if row["weights_max_abs"] is None else f", weights max |A-B| {row['weights_max_abs']:.3g}"
        print(f"{name}: fused max |A-B| {row['max_abs']:.3g} (mean {row['mean_abs']:.3g}), PSNR {row['psnr_db']:.1f} "
              f"dB{extra}  {'PASS' if row['pass'] else 'FAIL'}")
    for fuser in fusers:
        fuser.close()
    worst = max(row["max_abs"] for row in rows)
    passed = all(row["pass"] for row in rows)
    if args.json:
        from mfif.files import write_bytes_atomic

        finite = [{key: None if isinstance(value, float) and math.isinf(value) else value  # PSNR of equal outputs
                   for key, value in row.items()} for row in rows]
        payload = {"a": names[0], "b": names[1], "atol": args.atol, "weights_atol": args.weights_atol,
                   "pass": passed, "results": finite}
        write_bytes_atomic(args.json, json.dumps(payload, indent=2).encode())
    within = worst <= args.atol
    print(f"{'PASS' if passed else 'FAIL'}: largest difference of the fused frames {worst:.3g} "
          f"({worst * 255:.3g} grey levels of 255) {'<=' if within else '>'} --atol {args.atol:g}"
          + ("; weight maps past --weights-atol" if within and not passed else ""))
    return 0 if passed else 1
