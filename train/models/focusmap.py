"""focusmap: our default design. A light Siamese net scores how in focus each source is at each
pixel; a softmax over the sources turns the scores into weight maps; the fused image is the
weighted sum of the full-resolution sources. So colour comes for free, no pixel is invented, and
any number of sources N >= 2 works.

The scoring net is a small U-shaped encoder-decoder run on each source's grey image (shared
weights): a 3x3 stem, then ``levels`` average-pool steps, each lower level one or two
depthwise-separable residual blocks (width ``features`` doubling up to 4x). Sources are compared
with each other where it matters: at the bottom (wide context, to decide flat regions from their
surroundings) and at every skip connection of the decoder (sharp decisions at region edges), by
concatenating each source's features with their difference from the mean over all sources, which
keeps the net symmetric in its inputs. Inputs per source: the grey image, its 3x3 high-pass, and
the local high-pass energy measured at full resolution (so the finest detail, the surest sign of
focus, survives the reduced resolution below).

Speed/quality knob: ``scale`` > 1 computes the scores on a (1/scale)-sized copy of the sources and
brings the weights back to full size with a fast guided filter (He and Sun 2015) whose guide is the
full-resolution grey image, so weight edges follow image edges instead of blocky upsampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from mfif.train import losses
from mfif.train.models.base import FusionNet


# High-pass inputs are small (a few hundredths); scaled up they train as fast as the grey level.
DETAIL_GAIN = 10.0


def sum_over(x: torch.Tensor, dim: int, mean: bool = False, keepdim: bool = False) -> torch.Tensor:
    """``x.sum(dim)`` (or ``x.mean(dim)``) as a product with a row of ones: the same result, but
    ONNX Runtime's CPU ReduceSum over a leading axis of a full-resolution tensor runs four times
    slower than the MatMul (2.5 ms against 0.6 ms for 2 x 3 x 580 x 780 floats on one core). It
    exports to about 15 nodes against 1, which costs session start-up time: use it at full
    resolution only."""
    flat = x.flatten(dim + 1)
    row = torch.ones_like(flat[..., :1]).transpose(-1, -2)
    if mean:
        row = row / x.shape[dim]
    kept = (1,) if keepdim else ()
    return torch.matmul(row, flat).reshape(*x.shape[:dim], *kept, *x.shape[dim + 1:-1], -1)


def box_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, shrinking at the borders (exports as one AveragePool)."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


class SeparableBlock(nn.Module):
    """Depthwise 3x3 + pointwise 1x1 with a residual connection."""

    def __init__(self, channels: int):
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.pointwise = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.pointwise(self.depthwise(x)))


def _with_contrast(features: torch.Tensor, batch: int, count: int) -> torch.Tensor:
    """(B*K, C, h, w) -> (B*K, 2C, h, w): each source's features and their difference from the
    mean over the K sources."""
    x = features.reshape(batch, count, *features.shape[1:])
    x = torch.cat([x, x - x.mean(dim=1, keepdim=True)], dim=2)
    return x.reshape(batch * count, -1, *features.shape[2:])


@dataclass(frozen=True)
class FocusMapConfig:
    features: int = 8           # width of the top level (doubling below it, up to 4x)
    levels: int = 3             # average-pool steps of the scoring net
    scale: int = 1              # scores at 1/scale resolution: the speed/quality knob (weights unchanged)
    guide_radius: int = 2       # the fast guided filter that brings the weights to full size (0: bilinear)
    guide_eps: float = 1e-3
    temperature: float = 1.0    # scores are divided by it before the softmax: < 1 gives sharper weight maps
    vote_radius: int = 0        # > 0: majority vote of the weights over (2r+1)^2 score pixels (removes islands)
    boundary_weight: float = 0.0  # training only: extra loss weight on the band near focus borders (halos)

    def __post_init__(self):
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, not {self.scale}")
        if self.features < 1 or self.levels < 1:
            raise ValueError(f"features and levels must be >= 1, not {self.features} and {self.levels}")
        if self.guide_radius < 0 or self.vote_radius < 0 or not self.temperature > 0:
            raise ValueError(f"guide_radius and vote_radius must be >= 0 and temperature > 0, not "
                             f"{self.guide_radius}, {self.vote_radius} and {self.temperature}")


class FocusMap(FusionNet):
    name = "focusmap"
    Config = FocusMapConfig
    sources = None       # any N >= 2
    has_weight_map = True
    learning_rate = 2e-3
    # Trained at half resolution; the shipped checkpoint runs the same weights at scale 4, with sharper
    # weight maps (temperature 0.03, a 3x3 vote, bilinear upsampling), chosen by measurement (docs/models.md).
    training_config = {"scale": 2}
    shipped_config = {"scale": 4, "guide_radius": 0, "temperature": 0.03, "vote_radius": 1}

    def __init__(self, config: FocusMapConfig = FocusMapConfig()):
        super().__init__(config)
        features, levels, scale = config.features, config.levels, config.scale
        guide_radius, guide_eps = config.guide_radius, config.guide_eps
        self.scale = scale
        self.size_multiple = scale
        # The period of the pooling grid (scale, then ``levels`` halvings): padded to it, every level
        # is an exact fraction of the frame, so tiles of a large frame whose origins lie on this grid
        # give the same result as the whole frame.
        self.pad_multiple = scale * 2 ** levels
        self.guide_radius = guide_radius
        self.guide_eps = guide_eps
        self.temperature = config.temperature
        self.vote_radius = config.vote_radius
        self.levels = levels
        widths = [features * 2 ** min(level, 2) for level in range(levels + 1)]
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, padding=1), nn.ReLU(inplace=True))
        # Separable blocks start below the input resolution: at level 0 they cost 13% of the CPU
        # time and changed neither validation PSNR nor Qabf on real pairs.
        self.encoder = nn.ModuleList(nn.Sequential(*(SeparableBlock(width) for _ in range(min(level, 2))))
                                     for level, width in enumerate(widths))
        self.down = nn.ModuleList(nn.Sequential(nn.Conv2d(widths[i], widths[i + 1], 1), nn.ReLU(inplace=True))
                                  for i in range(levels))
        top = widths[-1]
        self.bottom = nn.Sequential(nn.Conv2d(2 * top, top, 1), nn.ReLU(inplace=True),
                                    SeparableBlock(top), SeparableBlock(top))
        self.up = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 1) for i in range(levels))
        self.lateral = nn.ModuleList(nn.Conv2d(2 * widths[i], widths[i], 1) for i in range(levels))
        self.decoder = nn.ModuleList(SeparableBlock(widths[i]) if i else nn.Identity() for i in range(levels))
        self.head = nn.Conv2d(widths[0], 1, 1)

    def scores(self, grey: torch.Tensor, detail: torch.Tensor) -> torch.Tensor:
        """grey, detail: (B, K, h, w) -> focus scores (B, K, h, w)."""
        batch, count, height, width = grey.shape
        x = grey.reshape(batch * count, 1, height, width)
        high_pass = DETAIL_GAIN * (x - box_filter(x, 1))
        x = torch.cat([x, high_pass, DETAIL_GAIN * detail.reshape(batch * count, 1, height, width)], dim=1)
        x = self.encoder[0](self.stem(x))
        skips = [x]
        for level in range(self.levels):
            x = F.avg_pool2d(x, 2, ceil_mode=True)
            x = self.encoder[level + 1](self.down[level](x))
            skips.append(x)
        x = self.bottom(_with_contrast(x, batch, count))
        for level in reversed(range(self.levels)):
            skip = skips[level]
            x = F.interpolate(self.up[level](x), size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.decoder[level](F.relu(x + self.lateral[level](_with_contrast(skip, batch, count))))
        scores = self.head(x).reshape(batch, count, height, width)
        # Temperature 1 (the default, and every checkpoint made before it existed) adds no node.
        return scores if self.temperature == 1 else scores * (1.0 / self.temperature)

    def decide(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores (B, K, h, w) -> weight maps summing to 1 over K: the softmax, then with
        ``vote_radius`` r > 0 a majority vote, as the consistency check of decision-map methods: the
        weights averaged over a (2r+1)^2 window and sharpened again by the temperature (each to the
        power 1/T, renormalized), so islands smaller than the window follow their surroundings."""
        weights = torch.softmax(scores, dim=1)
        if not self.vote_radius:
            return weights
        votes = torch.log(box_filter(weights, self.vote_radius).clamp(min=1e-6))
        return torch.softmax(votes * (1.0 / self.temperature), dim=1)

    def upsample_weights(self, weights: torch.Tensor, guide_low: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """Fast guided filter: fit weight = a * guide + b locally at low resolution, upsample a and b
        bilinearly, apply them to the full-resolution guide, renormalize so weights sum to 1. Radius
        0: plain bilinear upsampling (what the filter reduces to there, a = 0), which keeps the sum 1."""
        r, eps = self.guide_radius, self.guide_eps
        if r == 0:
            return F.interpolate(weights, size=guide.shape[-2:], mode="bilinear", align_corners=False)
        mean_i = box_filter(guide_low, r)
        var_i = box_filter(guide_low * guide_low, r) - mean_i * mean_i
        mean_p = box_filter(weights, r)
        cov_ip = box_filter(guide_low * weights, r) - mean_i * mean_p
        a = cov_ip / (var_i + eps)
        b = mean_p - a * mean_i
        size = guide.shape[-2:]
        a = F.interpolate(box_filter(a, r), size=size, mode="bilinear", align_corners=False)
        b = F.interpolate(box_filter(b, r), size=size, mode="bilinear", align_corners=False)
        full = (a * guide + b).clamp(min=0.0)
        return full / sum_over(full, 1, keepdim=True).clamp(min=1e-6)

    def receptive_probe(self) -> nn.Module:
        """The same net at temperature 1: a low temperature saturates the softmax, whose gradient
        then reads zero (float32) and would hide how far the scores reach."""
        if self.temperature == 1:
            return self
        probe = type(self)(self.Config(**{**self.config, "temperature": 1.0}))
        probe.load_state_dict(self.state_dict())
        return probe.train(self.training)

    def loss(self, batch: dict, net: nn.Module | None = None) -> torch.Tensor:
        """L1 on the image and its gradients against the ground truth, plus the weight maps against
        the synthetic focus regions (train/losses.py)."""
        fused, weights = (net or self)(batch["sources"], return_weights=True)
        return losses.focusmap_loss(fused, batch["truth"], weights, batch.get("focus"), batch["sources"],
                                    boundary_weight=self.config["boundary_weight"])

    def forward(self, sources: torch.Tensor, return_weights: bool = False):
        """sources: (B, K, C, H, W) in [0, 1], K >= 2, any C. Returns the fused (B, C, H, W) and,
        with ``return_weights``, the weight maps (B, K, H, W) that sum to 1 over K."""
        grey = sum_over(sources, 2, mean=True)
        detail = (grey - box_filter(grey, 1)).abs()
        if self.scale == 1:
            weights = self.decide(self.scores(grey, detail))
        else:
            grey_low = F.avg_pool2d(grey, self.scale)
            weights_low = self.decide(self.scores(grey_low, F.avg_pool2d(detail, self.scale)))
            guide = sum_over(grey, 1, mean=True, keepdim=True)
            weights = self.upsample_weights(weights_low, grey_low.mean(dim=1, keepdim=True), guide)
        fused = sum_over(weights.unsqueeze(2) * sources, 1)
        return (fused, weights) if return_weights else fused
