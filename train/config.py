"""How ``mfif train`` trains: one dataclass whose fields are the command's options (``--steps-per-epoch``
for ``steps_per_epoch``) with their defaults and help, written here once. No torch at import, so
``mfif train --help`` is quick; the model's own recipe (learning rate, training config, whether it
needs ground truth) fills in what is left at 0 or empty, when the config is made."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from mfif.device import DEVICE_HELP, parse_device
from mfif.errors import ConfigError
from mfif.train.runs import default_out


def _option(default, help: str, **extra):
    """A field with its command-line help (and optional 'flag' and 'metavar')."""
    if isinstance(default, (dict, list)):
        return field(default_factory=type(default), metadata={"help": help, **extra})
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    model: str = _option("focusmap", "the net to train: a name in mfif.train.models.MODELS (xu2018, mustafa2019, "
                                     "focusmap)")
    model_config: dict = _option({}, "model setting over the model's own training config, e.g. --config features=16 "
                                     "(values read as JSON)", flag="--config")
    data: str = _option("", "folder of sharp photos for the synthetic pairs (default: ../shared/data/sharp)")
    real: list = _option([], "folders of real pairs <name>_A/_B (no ground truth) mixed in for models trained "
                             "without it (mustafa2019)", metavar="DIR")
    out: str = _option("", "output folder; one holding a run is refused (default: runs/MODEL, numbered runs/MODEL2, "
                           "... when it holds a run; with --resume, the resumed run's folder)")
    epochs: int = _option(2, "epochs")
    steps_per_epoch: int = _option(50, "optimizer steps per epoch")
    steps: int = _option(0, "total optimizer steps; when > 0 it sets the number of epochs")
    batch_size: int = _option(8, "pairs per step and process")
    crop: int = _option(96, "training crop size in pixels")
    lr: float = _option(0.0, "Adam's base learning rate; 0: the model's own")
    warmup_steps: int = _option(20, "steps of linear learning-rate warm-up (at most a tenth of the run)")
    seed: int = _option(0, "seed of the data, the weights and the shuffling")
    val_count: int = _option(16, "validation pairs")
    val_crop: int = _option(192, "validation pair size in pixels")
    device: str = _option("auto", DEVICE_HELP)
    workers: int = _option(0, "data loader worker processes")
    resume: str = _option("", "continue from a last.safetensors written by an earlier run")
    init: str = _option("", "fine-tune: start from the weights of this checkpoint (a shipped or best file) with a fresh "
                            "optimizer and schedule; its config, then the model's training config and --config, apply",
                        metavar="CKPT")
    stop_after: int = _option(0, "stop after this many epochs (the schedule still spans all), to --resume later; "
                                 "0: run them all", metavar="EPOCHS")
    save_period: int = _option(0, "also keep the weights of every N-th epoch as OUT/epoch_NNN.safetensors (weights only, "
                                  "for learning curves: mfif evaluate --methods model:OUT/epoch_005.safetensors); 0: none",
                               metavar="N")
    synth: dict = _option({}, "synthetic-pair setting, e.g. --synth disk_fraction=0.7 (see mfif.train.data.SynthConfig)")

    def __post_init__(self):
        from mfif.train.models import MODELS

        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        for name in ("epochs", "steps_per_epoch", "batch_size", "val_count"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, not {getattr(self, name)}")
        parse_device(self.device)
        if self.steps < 0 or self.lr < 0 or self.workers < 0 or self.save_period < 0:
            raise ConfigError(f"steps, lr, workers and save_period must not be negative "
                              f"(got {self.steps}, {self.lr}, {self.workers}, {self.save_period})")
        recipe = MODELS[self.model]
        if self.real and recipe.needs_ground_truth:
            unsupervised = [name for name, model in MODELS.items() if not model.needs_ground_truth]
            raise ConfigError(f"--real pairs have no ground truth and only train the unsupervised models "
                              f"({', '.join(unsupervised)}), not {self.model}")
        if self.steps:
            self.epochs = math.ceil(self.steps / self.steps_per_epoch)
        self.lr = self.lr or recipe.learning_rate
        self.model_config = {**recipe.training_config, **self.model_config}
        self.out = self.out or (str(Path(self.resume).parent) if self.resume else default_out(self.model))

    @property
    def total_steps(self) -> int:
        return self.steps or self.epochs * self.steps_per_epoch
