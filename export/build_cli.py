"""``mfif build``: a TensorRT engine from an ONNX file made by ``mfif export`` or ``mfif calibrate``.

Top-level imports stay light: TensorRT, cuda-python and onnx are imported when a build runs, after
every argument has been checked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mfif.errors import ConfigError, ModelFileError
from mfif.runtime.backends.tensorrt import device_index

PRECISIONS = ("fp32", "fp16", "int8")
MIB = {"K": 1 / 1024, "M": 1, "G": 1024}  # trtexec's --memPoolSize units, in MiB (M when none is given)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mfif.runtime.engine_cache import DEFAULT_MAX_HW, DEFAULT_MIN_HW, DEFAULT_OPT_HW

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Build a TensorRT engine from an ONNX file, on the GPU that will run it (engines are not portable across "
        "GPUs or TensorRT versions; a Jetson builds on the device itself).\n\n"
        "Precision follows the ONNX file (strongly typed network): pass model_fp16.onnx for FP16 or the Q/DQ INT8 "
        "file from 'mfif calibrate' for INT8.\n\n"
        "Frame sizes: the engine takes heights and widths between min and max; its kernels are tuned for opt. A "
        "narrow range is faster: set min = opt = max to your camera's size when it never changes.")
    parser.epilog = (
        "example: mfif build models/focusmap_fp16.onnx --opt-height 1088 --opt-width 1920 --max-height 1088 "
        "--max-width 1920\n\n"
        "trtexec's spellings work too: --fp16/--int8 (pick model_fp16.onnx / model_int8.onnx beside the file given), "
        "--saveEngine, --minShapes/--optShapes/--maxShapes=sources:1xKxCxHxW, --memPoolSize=workspace:N (MiB; K, M, "
        "G suffixes), --timingCacheFile, --builderOptimizationLevel, e.g.\n"
        "  mfif build focusmap.onnx --fp16 --optShapes=sources:1x2x3x1088x1920 --saveEngine=fm.engine")
    parser.add_argument("onnx", type=Path, help="ONNX file with mfif metadata (from mfif export / calibrate)")
    parser.add_argument("-o", "--output", "--saveEngine", type=Path, default=None,
                        help="engine file (default: the ONNX path with .engine); its record goes to OUTPUT.json")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true",
                           help="build the FP16 variant: ONNX's precision sets the engine's, so this takes "
                                "NAME_fp16.onnx beside NAME.onnx (from mfif export --fp16)")
    precision.add_argument("--int8", action="store_true",
                           help="build the INT8 variant: takes NAME_int8.onnx beside NAME.onnx (from mfif calibrate)")
    sizes = parser.add_argument_group(
        "optimization profile (frame sizes in pixels, after the runtime pads them to the model's pad multiple: 32 for the shipped model, so 1080 rows arrive as 1088)",
        "The engine takes frames from min to max; its kernels are tuned for opt, and a narrow range is faster. "
        "Each size takes one value (shared by all profiles) or one value per profile: several values make several "
        "profiles, e.g. --opt-height 736 1088 --opt-width 1280 1920. Defaults (VGA to 1080p, tuned for 720p) are "
        "rounded up to the model's pad multiple; sizes you give must be multiples of it.")
    for axis, name in ((0, "height"), (1, "width")):
        for kind, default in (("min", DEFAULT_MIN_HW), ("opt", DEFAULT_OPT_HW), ("max", DEFAULT_MAX_HW)):
            sizes.add_argument(f"--{kind}-{name}", type=int, nargs="+", default=None, metavar="PX",
                               help=f"{kind} {name} (default {default[axis]})")
    sizes.add_argument("--sources", type=int, default=None,
                       help="number of source images K per fusion (default: the model's, or 2)")
    sizes.add_argument("--channels", type=int, choices=(1, 3), default=None,
                       help="1 (grey) or 3 (colour) (default: the model's, or 3)")
    for kind in ("min", "opt", "max"):
        sizes.add_argument(f"--{kind}Shapes", default=None, metavar="sources:1xKxCxHxW",
                           help=f"trtexec's form of the {kind} sizes (one profile)" +
                                ("; alone it sets min = opt = max" if kind == "opt" else ""))
    options = parser.add_argument_group("build options")
    options.add_argument("--timing-cache", "--timingCacheFile", default=None, metavar="PATH",
                         help="timing cache file, loaded and updated (default: one per GPU and TensorRT version in "
                              "~/.cache/mfif; 'none' to build without)")
    options.add_argument("--workspace", type=int, default=None, metavar="MIB",
                         help="builder workspace limit in MiB (default: TensorRT's; lower it on a small Jetson)")
    options.add_argument("--memPoolSize", default=None, metavar="workspace:N",
                         help="trtexec's form of --workspace: N in MiB, or with a K, M or G suffix")
    options.add_argument("--opt-level", "--builderOptimizationLevel", type=int, default=3, choices=range(6),
                         metavar="0-5",
                         help="builder optimization level: higher searches longer for faster kernels (default 3)")
    options.add_argument("--version-compatible", action="store_true",
                         help="engine also runs on later TensorRT versions. Costs: a larger file (it embeds the "
                              "lean runtime), possibly slower kernels, and loading runs host code from the engine, "
                              "so load only engines you trust")
    options.add_argument("--hardware-compatible", choices=("none", "same-cc", "ampere+"), default="none",
                         help="engine also runs on other GPUs: same-cc = any GPU of the same compute capability; "
                              "ampere+ = any Ampere or newer GPU. Costs: fewer kernels to choose from (slower, "
                              "especially ampere+); not available on Jetson")
    options.add_argument("--device", default="auto", help="the GPU to build on: auto or cuda (GPU 0), or cuda:N")
    options.add_argument("--force", action="store_true", help="rebuild even when the cached engine matches")
    options.add_argument("--check", action="store_true",
                         help="build nothing: report whether the engine at OUTPUT matches this ONNX, GPU, TensorRT "
                              "and options (exit 0) or why not (exit 1)")
    options.add_argument("--verbose", action="store_true", help="print TensorRT's info and verbose log")


def variant_path(onnx: Path, precision: str) -> Path:
    """The ``precision`` variant of an exported model, by the names mfif export and mfif calibrate
    give: NAME.onnx (fp32), NAME_fp16.onnx, NAME_int8.onnx; any of them may be given."""
    stem = onnx.stem
    for suffix in ("_fp16", "_int8"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return onnx.with_name(f"{stem}{'' if precision == 'fp32' else '_' + precision}{onnx.suffix}")


def choose_onnx(onnx: Path, fp16: bool = False, int8: bool = False) -> Path:
    """The file to build: ``onnx`` itself, or with --fp16/--int8 its variant of that precision
    (precision comes from the ONNX graph: the network is strongly typed)."""
    if not (fp16 or int8):
        return onnx
    flag, precision = ("--fp16", "fp16") if fp16 else ("--int8", "int8")
    variant = variant_path(onnx, precision)
    if variant.is_file():
        return variant
    make = (f"mfif export {variant_path(onnx, 'fp32')} --fp16 {variant}" if fp16 else
            f"mfif calibrate {variant_path(onnx, 'fp32')} -o {variant} --data PAIRS_DIR")
    raise ConfigError(f"{flag}: the engine's precision comes from the ONNX file, and the {precision} variant of "
                      f"{onnx} is not there ({variant} not found); make it with: {make}, or pass the {precision} "
                      "file itself")


def parse_shapes(text: str, option: str, input_name: str) -> tuple[int, int, int, int, int]:
    """trtexec's shape spec 'sources:1x2x3x720x1280' -> (1, 2, 3, 720, 1280)."""
    specs = [item for item in text.split(",") if item.strip()]
    example = f"{option}={input_name}:1x2x3x720x1280"
    if len(specs) != 1:
        raise ConfigError(f"{option} {text!r}: the model has one input, {input_name!r}; give one shape, e.g. {example}")
    name, sep, dims = specs[0].strip().rpartition(":")
    name = name.strip().strip("'\"")
    if not sep:
        raise ConfigError(f"{option} {text!r} is not NAME:1xKxCxHxW, e.g. {example}")
    if name != input_name:
        raise ConfigError(f"{option} names input {name!r}; this model's input is {input_name!r} (e.g. {example})")
    try:
        shape = tuple(int(part) for part in dims.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 5 or min(shape) < 1:
        raise ConfigError(f"{option} {text!r}: expected 5 positive dimensions 1xKxCxHxW (batch, sources, channels, "
                          f"height, width), e.g. {example}")
    if shape[0] != 1:
        raise ConfigError(f"{option} {text!r}: batch {shape[0]}; mfif engines take batch 1 (1xKxCxHxW)")
    return shape


def shape_options(args: argparse.Namespace, input_name: str) -> dict | None:
    """--minShapes/--optShapes/--maxShapes as sources, channels and the size lists; None when not given."""
    given = {kind: getattr(args, f"{kind}Shapes") for kind in ("min", "opt", "max")}
    if not any(given.values()):
        return None
    sizes_given = [f"--{kind}-{name}" for kind in ("min", "opt", "max") for name in ("height", "width")
                   if getattr(args, f"{kind}_{name}")]
    if sizes_given:
        raise ConfigError(f"give the frame sizes either as --minShapes/--optShapes/--maxShapes or as "
                          f"{', '.join(sizes_given)}, not both")
    if given["opt"] and not given["min"] and not given["max"]:
        given["min"] = given["max"] = given["opt"]
    missing = [f"--{kind}Shapes" for kind, text in given.items() if not text]
    if missing:
        raise ConfigError(f"{', '.join(missing)} missing: give --minShapes, --optShapes and --maxShapes together, or "
                          "--optShapes alone (min = opt = max)")
    shapes = {kind: parse_shapes(text, f"--{kind}Shapes", input_name) for kind, text in given.items()}
    heads = {shape[1:3] for shape in shapes.values()}
    if len(heads) > 1:
        raise ConfigError("--minShapes, --optShapes and --maxShapes must agree on sources and channels (K and C of "
                          f"1xKxCxHxW); got {', '.join(f'{kind} {shape}' for kind, shape in shapes.items())}")
    (sources, channels), = heads
    for option, value, flag in (("sources", sources, args.sources), ("channels", channels, args.channels)):
        if flag is not None and flag != value:
            raise ConfigError(f"--{option} {flag} disagrees with the shapes' {option} {value}; leave out --{option}")
    values = {f"{kind}_{name}": [shape[3 + axis]] for kind, shape in shapes.items()
              for axis, name in enumerate(("height", "width"))}
    return {"sources": sources, "channels": channels, "sizes": values}


def workspace_mib(args: argparse.Namespace) -> int | None:
    """--workspace MiB, or trtexec's --memPoolSize=workspace:N[K|M|G]."""
    if args.memPoolSize is None:
        return args.workspace
    if args.workspace is not None:
        raise ConfigError("give the workspace once: --workspace MIB or --memPoolSize=workspace:N, not both")
    pools = dict(item.strip().partition(":")[::2] for item in args.memPoolSize.split(",") if item.strip())
    others = sorted(set(pools) - {"workspace"})
    if others or not pools.get("workspace"):
        raise ConfigError(f"--memPoolSize {args.memPoolSize!r}: mfif build sets only the workspace pool "
                          f"(--memPoolSize=workspace:1024 for 1024 MiB, or 512M, 2G)" +
                          (f"; not {', '.join(others)}" if others else ""))
    text = pools["workspace"].strip().upper()
    unit = MIB.get(text[-1:], None)
    try:
        value = float(text[:-1] if unit else text) * (unit or 1)
    except ValueError:
        raise ConfigError(f"--memPoolSize workspace:{pools['workspace']} is not a size: N in MiB, or NK, NM, NG") \
            from None
    return int(value)


def settings_from_args(args: argparse.Namespace):
    """The ONNX facts and build settings from the parsed arguments; every value checked before
    TensorRT is imported."""
    from mfif.export.tensorrt_builder import BuildSettings, check_profiles_fit, default_sizes, read_onnx
    from mfif.runtime.engine_cache import make_profiles

    facts = read_onnx(choose_onnx(args.onnx, args.fp16, args.int8))
    info = facts.info
    wanted = "fp16" if args.fp16 else "int8" if args.int8 else None
    if wanted and info.precision != wanted:
        raise ModelFileError(f"--{wanted}: {facts.path} is a {info.precision} model by its metadata, not {wanted}; "
                             f"pass the {wanted} file itself")
    shapes = shape_options(args, info.input_name)
    sources = shapes["sources"] if shapes else args.sources if args.sources is not None else (info.sources or 2)
    channels = shapes["channels"] if shapes else args.channels if args.channels is not None else (info.channels or 3)
    if sources < 2:
        raise ConfigError(f"--sources must be at least 2 (fusion needs two or more images), not {sources}")
    defaults = default_sizes(info)
    values = shapes["sizes"] if shapes else {name: getattr(args, name) or default for name, default in defaults.items()}
    profiles = make_profiles(values["min_height"], values["opt_height"], values["max_height"], values["min_width"],
                             values["opt_width"], values["max_width"], sources, channels, info.pad_to)
    check_profiles_fit(profiles, facts)
    timing = None if str(args.timing_cache).lower() == "none" else args.timing_cache
    settings = BuildSettings(profiles=profiles, timing_cache=Path(timing) if timing else None,
                             workspace_mib=workspace_mib(args), version_compatible=args.version_compatible,
                             hardware_compatibility=args.hardware_compatible, optimization_level=args.opt_level,
                             device=device_index(args.device), verbose=args.verbose)
    settings.validate()
    return facts, settings


def run(args: argparse.Namespace) -> int:
    from mfif.export import tensorrt_builder as tb
    from mfif.runtime import cuda_buffers as cb
    from mfif.runtime.backends.tensorrt import import_tensorrt

    facts, settings = settings_from_args(args)
    output = args.output or facts.path.with_suffix(".engine")
    if facts.path != args.onnx:
        print(f"building {facts.path} ({facts.info.precision}: an engine's precision is its ONNX file's)")
    for i, profile in enumerate(settings.profiles):
        print(f"profile {i}: {profile.describe()}")
    trt = import_tensorrt()
    gpu = cb.gpu_info(settings.device)
    if args.timing_cache is None:
        settings.timing_cache = tb.default_timing_cache(gpu.slug, gpu.compute_capability, trt.__version__)
    if args.check:
        wanted = tb.make_key(facts, trt.__version__, gpu.name, gpu.compute_capability, settings)
        reasons = tb.cache_status(output, wanted)
        if reasons:
            print(f"{output} does not match: " + "; ".join(reasons), file=sys.stderr)
            return 1
        print(f"{output} is up to date for {gpu.name}, TensorRT {trt.__version__}")
        return 0
    result = tb.build_engine(facts.path, output, settings, force=args.force)
    if not result.rebuilt:
        print(f"{output} is up to date for {gpu.name}, TensorRT {trt.__version__} (use --force to rebuild)")
    print(f"precision {result.record.key.precision} (from the ONNX), {len(settings.profiles)} profile(s); "
          f"run it with runtime.Fuser('{output}')")
    return 0
