"""What every fusion net declares (see :mod:`mfif.train.models`): the attributes that the exporter,
the runtime's torch backend and the trainer read, with the common defaults, and its training
recipe."""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn


class FusionNet(nn.Module):
    name: str                       # as in MODELS and in the metadata of the files made from it
    Config: type                    # the dataclass of its settings; the net is built from one
    sources: int | None = 2         # K, the number of sources it takes; None for any K >= 2
    size_multiple = 1               # H and W must be multiples of this
    pad_multiple = 1                # the runtime pads H and W to multiples of this
    has_weight_map = False          # then forward(sources, return_weights=True) also gives (B, K, H, W) weights
    # Training recipe, read by train/trainer.py.
    learning_rate: float            # Adam's base rate
    training_config: dict = {}      # config values training uses unless --config says otherwise
    shipped_config: dict = {}       # config values (that keep the weights) the shipped model runs at:
                                    # mfif export says when a checkpoint differs (focusmap: scale 4)
    needs_ground_truth = True       # False: trained without it, so real pairs can train it too

    def __init__(self, config) -> None:
        super().__init__()
        self.config = asdict(config)  # the settings saved with the weights: enough to rebuild the net

    def receptive_probe(self) -> nn.Module:
        """A net wired like this one whose gradients do not saturate, which ``receptive_radius``
        measures the support of (the connectivity, not the values, sets the radius): itself here."""
        return self

    def loss(self, batch: dict, net: nn.Module | None = None) -> torch.Tensor:
        """The training loss of a batch (``sources``; ``truth`` and ``focus`` for synthetic pairs).
        ``net`` runs the forward pass: this model (default) or its DistributedDataParallel wrapper."""
        raise NotImplementedError
