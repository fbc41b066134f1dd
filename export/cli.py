"""``mfif export``: a checkpoint to ONNX (FP32, and optionally its FP16 variant), dynamic H and W.

    mfif export train/weights/focusmap.safetensors -o focusmap.onnx --fp16 focusmap_fp16.onnx
    mfif export --random focusmap -o untrained.onnx          # fresh random weights, for trying things
    mfif export focusmap.onnx --fp16 focusmap_fp16.onnx      # FP16 variant of an exported file
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mfif.errors import ConfigError, ModelFileError

PARITY_TOLERANCE = 1e-4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="?", help="checkpoint (.safetensors) to export, or an exported FP32 .onnx "
                                                  "to make the FP16 variant of")
    parser.add_argument("--random", metavar="MODEL", help="export a freshly built MODEL (xu2018, mustafa2019, "
                                                          "focusmap) with random weights instead of a checkpoint")
    parser.add_argument("-o", "--output", type=Path, help="FP32 .onnx file to write")
    parser.add_argument("--fp16", type=Path, metavar="PATH",
                        help="also write the FP16 variant (float32 inputs and outputs)")
    parser.add_argument("--opset", type=int, default=17,
                        help="ONNX opset (default 17: every TensorRT mfif build supports, 10.x and 11.x)")
    parser.add_argument("--sources", type=int, help="fix K, the number of sources, for nets that take any K >= 2 "
                                                       "(default: K stays dynamic)")
    parser.add_argument("--channels", type=int, choices=(1, 3), help="fix C for nets that take any channel count "
                                                                    "(default: C stays dynamic)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="change a model config value that keeps the weights, e.g. --set scale=4 for focusmap "
                             "(scores at 1/4 resolution: faster, slightly lower quality; see docs/models.md)")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxsim graph simplification")
    parser.add_argument("--no-verify", action="store_true", help="skip the check against PyTorch after export")


def run(args: argparse.Namespace) -> int:
    from mfif.cli import parse_key_values
    from mfif.export.fp16 import convert_fp16
    from mfif.export.onnx_export import export_onnx

    if bool(args.source) == bool(args.random):
        raise ConfigError("give either a checkpoint (or FP32 .onnx) to export or --random MODEL, not both or neither")
    if args.source and Path(args.source).suffix.lower() == ".onnx":
        if not args.fp16 or args.output:
            raise ConfigError(f"{args.source} is already ONNX: give --fp16 PATH for its FP16 variant (and no -o)")
        info = convert_fp16(args.source, args.fp16)
        print(f"wrote {args.fp16} ({info.model}, fp16, float32 inputs/outputs)")
        _print_fp16_check(args.source, args.fp16)
        return 0
    if not args.output:
        raise ConfigError("give the output file with -o OUT.onnx")
    source = _random_model(args.random) if args.random else args.source
    overrides = parse_key_values(args.overrides, "--set")
    if overrides:
        from mfif.export.onnx_export import load_model

        source = load_model(source, overrides)[0] if args.random else _checkpoint_with(source, overrides)
    info = export_onnx(source, args.output, opset=args.opset, simplify=not args.no_simplify,
                       sources=args.sources, channels=args.channels)
    k, c = info.sources or "K", info.channels or "C"
    print(f"wrote {args.output} ({info.model}, fp32, opset {args.opset}, sources 1x{k}x{c}xHxW, "
          f"H and W multiples of {info.size_multiple}, checkpoint sha256 {info.checkpoint_sha256[:12] or 'none'})")
    print(f"config: {json.dumps(info.config)}")
    note = shipped_setting_note(info.model, info.config, overrides,
                                "the model's default" if args.random else "the checkpoint's")
    if note:
        print(note)
    if not args.no_verify:
        _print_parity(args.output, source, info)
    if args.fp16:
        convert_fp16(args.output, args.fp16)
        print(f"wrote {args.fp16} ({info.model}, fp16, float32 inputs/outputs)")
        if not args.no_verify:
            _print_fp16_check(args.output, args.fp16)
    return 0


def shipped_setting_note(model: str, config: dict, overrides: dict, origin: str = "the checkpoint's") -> str | None:
    """A note when ``config`` differs from the settings the shipped model runs at (the net's
    ``shipped_config``, e.g. focusmap's scale 4; a checkpoint keeps its training scale, 2) in a
    value --set did not choose: what it costs and how to change it. None when nothing differs."""
    from mfif.train.models import MODELS, build_model, macs_per_pixel

    differ = {key: value for key, value in MODELS[model].shipped_config.items()
              if config.get(key) != value and key not in overrides}
    if not differ:
        return None
    exported = ", ".join(f"{key}={config.get(key)}" for key in differ)
    shipped = ", ".join(f"{key}={value}" for key, value in differ.items())
    here = macs_per_pixel(build_model(model, **config))
    there = macs_per_pixel(build_model(model, **{**config, **differ}))
    cost = f" ({here:,.0f} convolution MACs per pixel against {there:,.0f})" if here and there else ""
    return (f"note: exported with {exported} ({origin}); the shipped {model} runs at {shipped}{cost}. "
            f"For that, export with {' '.join(f'--set {key}={value}' for key, value in differ.items())} "
            "(the weights stay the same; docs/models.md has the quality trade-off)")


def _checkpoint_with(path, overrides: dict):
    """The checkpoint at ``path`` with its model rebuilt under ``overrides`` (hash kept)."""
    from dataclasses import replace

    from mfif.export.onnx_export import load_model
    from mfif.train.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(path)
    return replace(checkpoint, model=load_model(checkpoint, overrides)[0])


def _random_model(name: str):
    from mfif.train.models import build_model

    print(f"note: {name} with random weights (untrained): for trying the tool chain, not for use")
    return build_model(name)


def _print_parity(path: Path, source, info) -> None:
    from mfif.export.onnx_export import parity

    m = info.size_multiple
    size = (max(m, 97 // m * m), max(m, 131 // m * m))
    result = parity(path, source, sizes=[size])[0]
    worst = max(result["max_abs_error"].values())
    print(f"parity with PyTorch at {size[0]}x{size[1]}: max abs error {json.dumps(result['max_abs_error'])}")
    if worst > PARITY_TOLERANCE:
        raise ModelFileError(f"{path} differs from PyTorch by {worst:.3g} at {size[0]}x{size[1]} (tolerance "
                             f"{PARITY_TOLERANCE}); the export is wrong: report it with the model config {info.config}")


def _print_fp16_check(fp32: Path, fp16: Path) -> None:
    from mfif.export.onnx_export import ort_session, output_psnr, random_sources, read_info

    info = read_info(fp32)
    m = info.size_multiple
    sources = random_sources(info, max(m, 240 // m * m), max(m, 320 // m * m), seed=1)
    want = ort_session(fp32).run(None, {info.input_name: sources})
    got = ort_session(fp16).run(None, {info.input_name: sources})
    values = {name: round(output_psnr(a, b), 1) for name, a, b in zip(info.output_names, want, got)}
    print(f"FP16 vs FP32 (ONNX Runtime CPU, synthetic 240x320 frame): PSNR dB {json.dumps(values)}")
