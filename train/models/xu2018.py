"""Xu et al. 2018, "Multi-focus image fusion using fully convolutional two-stream network for
visual sensors": two streams with separate weights (2 conv layers, 5x5, 64 filters, ReLU, size-keeping
padding, no pooling), a 1x1 convolutional fusion layer on the concatenated maps (128 -> 64, ReLU),
then 2 transposed convolutions (5x5) back to the image channels. The paper's chosen setting is the
default here: 64 filters, 5x5 kernels, 2-1-2 layers. Trained with MSE against the sharp image."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mfif.train import losses
from mfif.train.models.base import FusionNet


@dataclass(frozen=True)
class Xu2018Config:
    channels: int = 3           # 1 (grey) or 3 (colour)
    filters: int = 64
    kernel: int = 5

    def __post_init__(self):
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (colour), not {self.channels}")


class Xu2018(FusionNet):
    name = "xu2018"
    Config = Xu2018Config
    learning_rate = 1e-3    # trained with MSE against the ground truth, as in the paper

    def __init__(self, config: Xu2018Config = Xu2018Config()):
        super().__init__(config)
        channels, filters, kernel = config.channels, config.filters, config.kernel
        self.channels = channels
        pad = kernel // 2

        def stream() -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(channels, filters, kernel, padding=pad), nn.ReLU(inplace=True),
                nn.Conv2d(filters, filters, kernel, padding=pad), nn.ReLU(inplace=True),
            )

        self.stream_a = stream()
        self.stream_b = stream()
        self.fusion = nn.Sequential(nn.Conv2d(2 * filters, filters, 1), nn.ReLU(inplace=True))
        self.reconstruct = nn.Sequential(
            nn.ConvTranspose2d(filters, filters, kernel, padding=pad), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(filters, channels, kernel, padding=pad),
        )

    def loss(self, batch: dict, net: nn.Module | None = None) -> torch.Tensor:
        """MSE against the ground truth."""
        return losses.mse_loss((net or self)(batch["sources"]), batch["truth"])

    def forward(self, sources: torch.Tensor) -> torch.Tensor:
        """sources: (B, 2, C, H, W) in [0, 1]; returns the fused (B, C, H, W)."""
        features = torch.cat([self.stream_a(sources[:, 0]), self.stream_b(sources[:, 1])], dim=1)
        return self.reconstruct(self.fusion(features))
