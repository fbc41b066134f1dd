"""The ``mfif`` command. Each subcommand lives in the package that owns it, in a module with
``add_arguments(parser)`` and ``run(args) -> int``; only the chosen one is imported, so
``mfif fuse`` on a deployed box never imports torch."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from mfif import __version__
from mfif.errors import ConfigError, MfifError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "fuse": ("mfif.runtime.cli", "fuse images, folders of pairs, stacks or videos with a model"),
    "align": ("mfif.runtime.align_cli", "estimate how sources register onto a reference; write a rig file"),
    "train": ("mfif.train.cli", "train a fusion net (xu2018, mustafa2019, focusmap)"),
    "export": ("mfif.export.cli", "export a checkpoint to ONNX (FP32 or FP16), dynamic height and width"),
    "calibrate": ("mfif.calibration.cli", "make a calibrated INT8 (Q/DQ) ONNX and its accuracy report"),
    "build": ("mfif.export.build_cli", "build a TensorRT engine from an ONNX file"),
    "evaluate": ("mfif.evaluation.cli", "score methods with the fusion metrics over pairs"),
    "bench": ("mfif.benchmarks.latency", "latency and throughput benchmark, trtexec-style"),
    "compare": ("mfif.runtime.compare_cli", "compare two models, or one on two backends or devices (max error, PSNR)"),
}


def parse_key_values(items: list[str], option: str) -> dict:
    """``['scale=4', 'kind="disk"']`` -> ``{'scale': 4, 'kind': 'disk'}``: the KEY=VALUE options of
    the commands (``--set``, ``--config``, ``--synth``). Values are read as JSON (numbers, lists,
    true/false, quoted text), else kept as text. A malformed item is a ConfigError naming ``option``."""
    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} takes KEY=VALUE (e.g. {option} scale=4), not {item!r}")
        try:
            values[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            values[key.strip()] = text
    return values


def _overview() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "commands:\n" + "\n".join(lines) + "\n\nRun 'mfif COMMAND --help' for a command's options."


def build_parser(command: str) -> tuple[argparse.ArgumentParser, object]:
    module_name, text = COMMANDS[command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"mfif {command}", description=text)
    module.add_arguments(parser)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: mfif COMMAND [options]\n\n{_overview()}")
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"mfif {__version__}")
        return 0
    command = argv[0]
    if command not in COMMANDS:
        print(f"mfif: unknown command {command!r}\n\n{_overview()}", file=sys.stderr)
        return 2
    try:
        parser, module = build_parser(command)
        args = parser.parse_args(argv[1:])
        return int(module.run(args) or 0)
    except MfifError as exc:
        print(f"mfif {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mfif {command}: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """The ``mfif`` console command. ``mfif fuse`` ends without the interpreter's teardown, which
    with ONNX Runtime and OpenCV loaded takes 30-40 ms (8% of fusing the 13 pairs of
    pairs/mfifb_mffw): by the time main() returns, every output file is written and closed and
    nothing of fuse's registers exit handlers, so only the two streams need flushing."""
    code = main()
    if sys.argv[1:2] == ["fuse"]:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
