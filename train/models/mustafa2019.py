"""After Mustafa et al. 2019, "Multi-scale convolutional neural network for multi-focus image
fusion": unsupervised, end-to-end, trained with an SSIM-based loss against the two sources.

The paper publishes no code; the design choices made here:
- Siamese extractor (one set of weights for every source): a 3x3 stem, then two multi-scale blocks.
  Each block runs 3x3, 5x5 and 7x7 convolutions in parallel on its input, concatenates them, mixes
  them with a 1x1 convolution and adds its input back (skip connection).
- Fusion: the per-source feature maps are concatenated (source order A, B) and mixed with a 1x1
  convolution; concatenation keeps which source a feature came from.
- Reconstruction: one multi-scale block on the fused features plus a skip from the element-wise
  maximum of the source features (the sharpest responses), then a 3x3 convolution to the image
  channels and a sigmoid, so the output is in [0, 1].
- No pooling, so any height and width works without padding (size multiple 1).
- Loss (train/losses.py): 1 - SSIM of the fused image against each source, weighted per window by
  the sources' local variance (the sharper source has the higher variance), the usual form of
  unsupervised SSIM fusion losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mfif.train import losses
from mfif.train.models.base import FusionNet


class MultiScaleBlock(nn.Module):
    def __init__(self, channels: int, branch: int):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(channels, branch, k, padding=k // 2) for k in (3, 5, 7)
        )
        self.mix = nn.Conv2d(3 * branch, channels, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        multi = torch.cat([self.act(branch(x)) for branch in self.branches], dim=1)
        return self.act(self.mix(multi) + x)


@dataclass(frozen=True)
class Mustafa2019Config:
    channels: int = 3           # 1 (grey) or 3 (colour)
    features: int = 32
    branch: int = 16            # width of each 3x3/5x5/7x7 branch of a multi-scale block

    def __post_init__(self):
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (colour), not {self.channels}")


class Mustafa2019(FusionNet):
    name = "mustafa2019"
    Config = Mustafa2019Config
    learning_rate = 1e-3
    needs_ground_truth = False  # unsupervised: real pairs can train it

    def __init__(self, config: Mustafa2019Config = Mustafa2019Config()):
        super().__init__(config)
        channels, features, branch = config.channels, config.features, config.branch
        self.channels = channels
        self.extract = nn.Sequential(
            nn.Conv2d(channels, features, 3, padding=1), nn.ReLU(inplace=True),
            MultiScaleBlock(features, branch), MultiScaleBlock(features, branch),
        )
        self.fuse = nn.Sequential(nn.Conv2d(2 * features, features, 1), nn.ReLU(inplace=True))
        self.reconstruct_block = MultiScaleBlock(features, branch)
        self.out = nn.Conv2d(features, channels, 3, padding=1)

    def loss(self, batch: dict, net: nn.Module | None = None) -> torch.Tensor:
        """1 - SSIM against the sources, weighted by their local variance (no ground truth)."""
        return losses.unsupervised_ssim_loss((net or self)(batch["sources"]), batch["sources"])

    def forward(self, sources: torch.Tensor) -> torch.Tensor:
        """sources: (B, 2, C, H, W) in [0, 1]; returns the fused (B, C, H, W) in [0, 1]."""
        batch, count, channels, height, width = sources.shape
        features = self.extract(sources.reshape(batch * count, channels, height, width))
        features = features.reshape(batch, count, -1, height, width)
        fused = self.fuse(torch.cat([features[:, 0], features[:, 1]], dim=1))
        fused = self.reconstruct_block(fused) + features.amax(dim=1)
        return torch.sigmoid(self.out(fused))
