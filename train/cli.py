"""``mfif train``: train a fusion net on synthetic pairs made from sharp photos.

With no options it trains the default model (focusmap, at the scale its recipe trains at) for a
small built-in budget on the shared photos (../shared/data/sharp), which takes about a minute on a
laptop CPU. Under ``torchrun --nproc_per_node=N -m mfif.cli train ...`` it trains with DDP on N
GPUs. The options are the fields of :class:`train.config.TrainConfig`, with its defaults."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields

from mfif.errors import DataError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mfif.train.config import TrainConfig

    for option in fields(TrainConfig):
        flag, text = _flag(option), option.metadata["help"]
        if option.default is MISSING:  # a dict (KEY=VALUE, repeatable) or a list (several values)
            if option.default_factory is dict:
                parser.add_argument(flag, dest=option.name, action="append", default=[], metavar="KEY=VALUE",
                                    help=text)
            else:
                parser.add_argument(flag, dest=option.name, nargs="+", default=[],
                                    metavar=option.metadata.get("metavar"), help=text)
            continue
        default = option.default
        shown = f" (default {default})" if default != "" and "default" not in text else ""
        parser.add_argument(flag, dest=option.name, type=type(default), default=default,
                            metavar=option.metadata.get("metavar"), help=text + shown)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default 1: these small nets gain little from more, and on a "
                             "busy machine extra threads wait on each other; 0: torch's choice)")


def run(args: argparse.Namespace) -> int:
    from mfif.lazy import require

    torch = require("torch", extra="train", purpose="training")
    from mfif.cli import parse_key_values
    from mfif.train.config import TrainConfig
    from mfif.train.trainer import train

    values = {option.name: getattr(args, option.name) for option in fields(TrainConfig)}
    for option in fields(TrainConfig):
        if option.default_factory is dict:
            values[option.name] = parse_key_values(values[option.name], _flag(option))
    values["data"] = values["data"] or _shared_photos()
    config = TrainConfig(**values)
    if args.threads:
        torch.set_num_threads(args.threads)
    summary = train(config)
    if summary["epochs"] and "psnr" in summary["epochs"][-1]:
        last = summary["epochs"][-1]
        print(f"done in {summary['seconds']} s: best validation PSNR {summary['best_psnr']:.2f} dB "
              f"(pixel average {last['average_psnr']:.2f}); weights {summary['best']}, "
              f"resumable state {summary['last']}, figures {summary['out']}/results.csv")
    return 0


def _flag(option) -> str:
    """The command-line flag of a TrainConfig field: ``--steps-per-epoch`` for ``steps_per_epoch``."""
    return option.metadata.get("flag", "--" + option.name.replace("_", "-"))


def _shared_photos() -> str:
    from mfif.paths import shared_data_dir

    shared = shared_data_dir()
    if shared is None or not (shared / "sharp").is_dir():
        raise DataError("no --data folder given and the shared photos (../shared/data/sharp or $MFIF_DATA/sharp) "
                        "are absent; pass --data with a folder of all-in-focus photographs")
    return str(shared / "sharp")
