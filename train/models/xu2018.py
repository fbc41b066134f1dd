"""Xu et al. 2018, "Multi-focus image fusion using fully convolutional two-stream network for
visual sensors": two streams with separate weights (2 conv layers, 5x5, 64 filters, ReLU, size-keeping
padding, no pooling), a 1x1 convolutional fusion layer on the concatenated maps (128 -> 64, ReLU),
then 2 transposed convolutions (5x5) back to the image channels. The paper's chosen setting is the
default here: 64 filters, 5x5 kernels, 2-1-2 layers. Trained with MSE against the sharp image."""

from __future__ import annotations

import torch
from torch import nn


class Xu2018(nn.Module):
    name = "xu2018"
    sources = 2          # two streams with their own weights
    size_multiple = 1
    pad_multiple = 1
    has_weight_map = False

    def __init__(self, channels: int = 3, filters: int = 64, kernel: int = 5):
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (colour), not {channels}")
        self.config = {"channels": channels, "filters": filters, "kernel": kernel}
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

    def forward(self, sources: torch.Tensor) -> torch.Tensor:
        """sources: (B, 2, C, H, W) in [0, 1]; returns the fused (B, C, H, W)."""
        features = torch.cat([self.stream_a(sources[:, 0]), self.stream_b(sources[:, 1])], dim=1)
        return self.reconstruct(self.fusion(features))
