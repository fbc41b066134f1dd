"""``mfif train``: train a fusion net on synthetic pairs made from sharp photos.

With no options it trains the default model (focusmap at scale 2) for a small built-in budget on the
shared photos (../shared/data/sharp), which takes about a minute on a laptop CPU. Under
``torchrun --nproc_per_node=N -m mfif.cli train ...`` it trains with DDP on N GPUs."""

from __future__ import annotations

import argparse
import json

from mfif.device import DEVICE_HELP
from mfif.errors import ConfigError, DataError

# Model settings the command uses unless --config overrides them: focusmap runs at scale 2 by default.
DEFAULT_MODEL_CONFIG = {"focusmap": {"scale": 2}}


def _key_value(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="focusmap", help="xu2018, mustafa2019 or focusmap (default)")
    parser.add_argument("--config", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="model setting, e.g. --config scale=2 --config features=16 (JSON values)")
    parser.add_argument("--data", help="folder of sharp photos (default: ../shared/data/sharp)")
    parser.add_argument("--real", nargs="+", default=[], metavar="DIR",
                        help="folders of real pairs <name>_A/_B for the unsupervised mustafa2019")
    parser.add_argument("--out", help="output folder (default: runs/MODEL)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs (default 2)")
    parser.add_argument("--steps-per-epoch", type=int, default=50, help="optimizer steps per epoch (default 50)")
    parser.add_argument("--steps", type=int, default=0, help="total optimizer steps (overrides --epochs)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step and process (default 8)")
    parser.add_argument("--crop", type=int, default=96, help="training crop size in pixels (default 96)")
    parser.add_argument("--lr", type=float, default=0.0, help="Adam learning rate (default: per model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-count", type=int, default=16, help="validation pairs (default 16)")
    parser.add_argument("--val-crop", type=int, default=192, help="validation pair size (default 192)")
    parser.add_argument("--synth", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="synthetic-pair setting, e.g. --synth disk_fraction=0.7 (see train.data.SynthConfig)")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--workers", type=int, default=0, help="data loader worker processes (default 0)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default 1: these small nets gain little from more, and on a "
                             "busy machine extra threads wait on each other; 0: torch's choice)")
    parser.add_argument("--resume", help="continue from a last.safetensors written by an earlier run")
    parser.add_argument("--stop-after", type=int, default=0, metavar="EPOCHS",
                        help="stop after this many epochs (the schedule still spans all), to --resume later")


def run(args: argparse.Namespace) -> int:
    from mfif.lazy import require

    torch = require("torch", extra="train", purpose="training")
    require("tqdm", extra="train", purpose="training progress")
    from mfif.paths import shared_data_dir
    from mfif.train.models import MODELS
    from mfif.train.trainer import TrainConfig, train

    if args.model not in MODELS:
        raise ConfigError(f"unknown model {args.model!r}; choose one of {', '.join(MODELS)}")
    data = args.data
    if data is None:
        shared = shared_data_dir()
        if shared is None or not (shared / "sharp").is_dir():
            raise DataError("no --data folder given and the shared photos (../shared/data/sharp or $MFIF_DATA/sharp) "
                            "are absent; pass --data with a folder of all-in-focus photographs")
        data = str(shared / "sharp")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig(
        model=args.model, model_config={**DEFAULT_MODEL_CONFIG.get(args.model, {}), **dict(args.config)},
        data=data, real=list(args.real), out=args.out or f"runs/{args.model}", epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch, steps=args.steps, batch_size=args.batch_size, crop=args.crop,
        lr=args.lr, seed=args.seed, val_count=args.val_count, val_crop=args.val_crop, device=args.device,
        workers=args.workers, resume=args.resume or "", stop_after=args.stop_after, synth=dict(args.synth))
    summary = train(config)
    if summary["epochs"] and "psnr" in summary["epochs"][-1]:
        last = summary["epochs"][-1]
        print(f"done in {summary['seconds']} s: best validation PSNR {summary['best_psnr']:.2f} dB "
              f"(pixel average {last['average_psnr']:.2f}); weights {summary['best']}, "
              f"resumable state {summary['last']}")
    return 0
