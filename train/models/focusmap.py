"""focusmap: our default design. A light Siamese net scores how in focus each source is at each
pixel; a softmax over the sources turns the scores into weight maps; the fused image is the
weighted sum of the full-resolution sources. So colour comes for free, no pixel is invented, and
any number of sources N >= 2 works.

Speed/quality knob: ``scale`` > 1 computes the scores on a (1/scale)-sized copy of the sources and
brings the weights back to full size with a fast guided filter (He and Sun 2015) whose guide is the
full-resolution grey image, so weight edges follow image edges instead of blocky upsampling.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def box_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, shrinking at the borders (exports as one AveragePool)."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


class SeparableBlock(nn.Module):
    """Depthwise 3x3 (dilated) + pointwise 1x1 with a residual connection."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, groups=channels)
        self.pointwise = nn.Conv2d(channels, channels, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.pointwise(self.depthwise(x)))


class FocusMap(nn.Module):
    name = "focusmap"
    num_inputs = None       # any N >= 2
    has_weight_map = True

    def __init__(self, features: int = 16, dilations: tuple[int, ...] = (1, 2, 4, 8), scale: int = 1,
                 guide_radius: int = 2, guide_eps: float = 1e-3):
        super().__init__()
        if scale < 1:
            raise ValueError(f"scale must be >= 1, not {scale}")
        self.config = {"features": features, "dilations": list(dilations), "scale": scale,
                       "guide_radius": guide_radius, "guide_eps": guide_eps}
        self.scale = scale
        self.size_multiple = scale
        self.guide_radius = guide_radius
        self.guide_eps = guide_eps
        # Per-source features from the grey image and its high-pass residual.
        self.stem = nn.Sequential(nn.Conv2d(2, features, 3, padding=1), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*(SeparableBlock(features, d) for d in dilations))
        # Compare each source's features with the mean over all sources (permutation invariant).
        self.compare = nn.Sequential(
            nn.Conv2d(2 * features, features, 1), nn.ReLU(inplace=True),
            SeparableBlock(features, 1),
            nn.Conv2d(features, 1, 1),
        )

    def scores(self, grey: torch.Tensor) -> torch.Tensor:
        """grey: (B, K, h, w) -> focus scores (B, K, h, w)."""
        batch, count, height, width = grey.shape
        x = grey.reshape(batch * count, 1, height, width)
        x = torch.cat([x, x - box_filter(x, 1)], dim=1)
        features = self.blocks(self.stem(x))
        features = features.reshape(batch, count, -1, height, width)
        mean = features.mean(dim=1, keepdim=True).expand_as(features)
        paired = torch.cat([features, features - mean], dim=2).reshape(batch * count, -1, height, width)
        return self.compare(paired).reshape(batch, count, height, width)

    def upsample_weights(self, weights: torch.Tensor, guide_low: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """Fast guided filter: fit weight = a * guide + b locally at low resolution, upsample a and b
        bilinearly, apply them to the full-resolution guide, renormalize so weights sum to 1."""
        r, eps = self.guide_radius, self.guide_eps
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
        return full / full.sum(dim=1, keepdim=True).clamp(min=1e-6)

    def forward(self, sources: torch.Tensor, return_weights: bool = False):
        """sources: (B, K, C, H, W) in [0, 1], K >= 2, any C. Returns the fused (B, C, H, W) and,
        with ``return_weights``, the weight maps (B, K, H, W) that sum to 1 over K."""
        grey = sources.mean(dim=2)
        if self.scale == 1:
            weights = torch.softmax(self.scores(grey), dim=1)
        else:
            grey_low = F.avg_pool2d(grey, self.scale)
            weights_low = torch.softmax(self.scores(grey_low), dim=1)
            guide = grey.mean(dim=1, keepdim=True)
            weights = self.upsample_weights(weights_low, grey_low.mean(dim=1, keepdim=True), guide)
        fused = (weights.unsqueeze(2) * sources).sum(dim=1)
        return (fused, weights) if return_weights else fused
