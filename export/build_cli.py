"""``mfif build``: a TensorRT engine from an ONNX file made by ``mfif export`` or ``mfif calibrate``.

Top-level imports stay light: TensorRT, cuda-python and onnx are imported when a build runs, after
every argument has been checked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mfif.errors import ConfigError
from mfif.runtime.backends.tensorrt import device_index

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
    parser.epilog = ("example: mfif build models/focusmap_fp16.onnx --opt-height 1080 --opt-width 1920 "
                     "--max-height 1080 --max-width 1920")
    parser.add_argument("onnx", type=Path, help="ONNX file with mfif metadata (from mfif export / calibrate)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="engine file (default: the ONNX path with .engine); its record goes to OUTPUT.json")
    sizes = parser.add_argument_group(
        "optimization profile (frame sizes in pixels, after padding to the model's size multiple)",
        "The engine takes frames from min to max; its kernels are tuned for opt, and a narrow range is faster. "
        "Each size takes one value (shared by all profiles) or one value per profile: several values make several "
        "profiles, e.g. --opt-height 720 1080 --opt-width 1280 1920. Defaults (VGA to 1080p, tuned for 720p) are "
        "rounded up to the model's size multiple; sizes you give must be multiples of it.")
    for axis, name in ((0, "height"), (1, "width")):
        for kind, default in (("min", DEFAULT_MIN_HW), ("opt", DEFAULT_OPT_HW), ("max", DEFAULT_MAX_HW)):
            sizes.add_argument(f"--{kind}-{name}", type=int, nargs="+", default=None, metavar="PX",
                               help=f"{kind} {name} (default {default[axis]})")
    sizes.add_argument("--sources", type=int, default=None,
                       help="number of source images K per fusion (default: the model's, or 2)")
    sizes.add_argument("--channels", type=int, choices=(1, 3), default=None,
                       help="1 (grey) or 3 (colour) (default: the model's, or 3)")
    options = parser.add_argument_group("build options")
    options.add_argument("--timing-cache", default=None, metavar="PATH",
                         help="timing cache file, loaded and updated (default: one per GPU and TensorRT version in "
                              "~/.cache/mfif; 'none' to build without)")
    options.add_argument("--workspace", type=int, default=None, metavar="MIB",
                         help="builder workspace limit in MiB (default: TensorRT's; lower it on a small Jetson)")
    options.add_argument("--opt-level", type=int, default=3, choices=range(6), metavar="0-5",
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


def settings_from_args(args: argparse.Namespace):
    """The ONNX facts and build settings from the parsed arguments; every value checked before
    TensorRT is imported."""
    from mfif.export.tensorrt_builder import BuildSettings, check_profiles_fit, default_sizes, read_onnx
    from mfif.runtime.engine_cache import make_profiles

    facts = read_onnx(args.onnx)
    info = facts.info
    sources = args.sources if args.sources is not None else (info.sources or 2)
    channels = args.channels if args.channels is not None else (info.channels or 3)
    if sources < 2:
        raise ConfigError(f"--sources must be at least 2 (fusion needs two or more images), not {sources}")
    defaults = default_sizes(info)
    values = {name: getattr(args, name) or default for name, default in defaults.items()}
    profiles = make_profiles(values["min_height"], values["opt_height"], values["max_height"], values["min_width"],
                             values["opt_width"], values["max_width"], sources, channels, info.size_multiple)
    check_profiles_fit(profiles, facts)
    timing = None if str(args.timing_cache).lower() == "none" else args.timing_cache
    settings = BuildSettings(profiles=profiles, timing_cache=Path(timing) if timing else None,
                             workspace_mib=args.workspace, version_compatible=args.version_compatible,
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
