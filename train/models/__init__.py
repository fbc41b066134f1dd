"""The fusion nets. Every model takes ``sources`` of shape (B, K, C, H, W), float32 in [0, 1],
BGR channel order for colour, and returns the fused (B, C, H, W). Each is a
:class:`~mfif.train.models.base.FusionNet`: ``name``, ``Config`` (a dataclass of its settings; the
model is built from one), ``config`` (those settings as a dict, enough to rebuild it),
``sources`` (None for any K >= 2), ``size_multiple``, ``pad_multiple``, ``has_weight_map`` (then
``forward(sources, return_weights=True)`` also returns (B, K, H, W) weights), and its training
recipe, which train/trainer.py reads: ``loss(batch, net)``, ``learning_rate`` (Adam's base rate),
``training_config`` (config values training uses unless ``--config`` says otherwise) and
``needs_ground_truth`` (False: real pairs can train it)."""

from __future__ import annotations

import torch
from torch import nn

from mfif.errors import ConfigError
from mfif.train.models.base import FusionNet
from mfif.train.models.focusmap import FocusMap
from mfif.train.models.mustafa2019 import Mustafa2019
from mfif.train.models.xu2018 import Xu2018

MODELS: dict[str, type[FusionNet]] = {"xu2018": Xu2018, "mustafa2019": Mustafa2019, "focusmap": FocusMap}


def build_model(name: str, **config) -> nn.Module:
    """Build a model by name with its config values; unknown names or options are a ConfigError."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    model = MODELS[name]
    try:
        return model(model.Config(**config))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad config for model {name!r} {config}: {exc}") from exc


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_per_pixel(model: nn.Module, channels: int = 3, sources: int = 2, size: int = 64) -> float:
    """Multiply-accumulates of the convolution layers per output pixel, measured with hooks on a
    size x size input (element-wise work such as the guided filter is not counted)."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        else:  # ConvTranspose2d: each input pixel is spread over k*k outputs
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            per_output *= 1 / (module.stride[0] * module.stride[1])
        total += output.numel() * per_output

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        model_channels = getattr(model, "channels", channels)
        inputs = torch.zeros(1, sources, model_channels, size, size)
        with torch.no_grad():
            model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return total / (size * size)


def receptive_radius(model: nn.Module, channels: int = 3) -> int:
    """How far, in input pixels each way, an output pixel can depend on the sources: the support of
    the gradient of one output pixel in the middle of a probe, which grows until the support stays
    clear of the probe's borders. Fusing a large frame in tiles with this much overlap (and tile
    origins on multiples of ``pad_multiple``) gives the same result as fusing it whole. The support
    is measured on one random input, so a net whose ReLUs are all dead (untrained) can read 0."""
    model_channels = getattr(model, "channels", None) or channels
    period = getattr(model, "pad_multiple", model.size_multiple)
    probe = getattr(model, "receptive_probe", None)
    model = probe() if probe is not None else model
    side = 128
    while side <= 4096:
        side = -(-side // period) * period
        sources = torch.rand(1, 2, model_channels, side, side, generator=torch.Generator().manual_seed(0))
        sources.requires_grad_(True)
        fused = model(sources)
        centre = side // 2
        fused[0, :, centre, centre].sum().backward()
        rows = torch.nonzero(sources.grad.abs().sum(dim=(0, 1, 2, 4)) > 0).flatten()
        cols = torch.nonzero(sources.grad.abs().sum(dim=(0, 1, 2, 3)) > 0).flatten()
        radius = int(max(centre - rows.min(), rows.max() - centre, centre - cols.min(), cols.max() - centre))
        if radius < centre - period:
            return radius
        side *= 2
    raise ConfigError(f"model {model.name}'s receptive field reaches past a 4096-pixel probe: it cannot be tiled")
