"""Training losses and the validation scores (PSNR, SSIM) on float tensors in [0, 1].

- ``xu2018``: MSE against the ground truth, as in the paper.
- ``mustafa2019``: unsupervised, against the sources only: 1 - SSIM of the fused image with each
  source, the two SSIM maps mixed per window by the sources' local variance (the sharper source has
  the higher variance), see the docstring of train/models/mustafa2019.py.
- ``focusmap``: supervised against the ground truth: L1 on the image plus L1 on its Sobel gradients
  (the gradients are what Qabf scores), plus a focus term: the weight maps against the synthetic
  focus regions (cross-entropy), counted only where the sources differ, which pushes the weights to
  near-hard decisions.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2


def _gaussian_window(channels: int, size: int = 11, sigma: float = 1.5, device=None, dtype=None) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    line = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    line = line / line.sum()
    return (line[:, None] * line[None, :]).expand(channels, 1, size, size).contiguous()


def _local_stats(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor):
    """Gaussian-window means, variances and covariance (reflect padding keeps the size)."""
    channels, pad = x.shape[1], window.shape[-1] // 2
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    stacked = F.pad(stacked, (pad, pad, pad, pad), mode="reflect")
    mean_x, mean_y, xx, yy, xy = F.conv2d(stacked, window.repeat(5, 1, 1, 1), groups=5 * channels).split(channels, 1)
    return mean_x, mean_y, xx - mean_x ** 2, yy - mean_y ** 2, xy - mean_x * mean_y


def ssim_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004, 11x11 Gaussian window, sigma 1.5) of (B, C, H, W) images."""
    window = _gaussian_window(x.shape[1], device=x.device, dtype=x.dtype)
    mean_x, mean_y, var_x, var_y, cov = _local_stats(x, y, window)
    return ((2 * mean_x * mean_y + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mean_x ** 2 + mean_y ** 2 + SSIM_C1) * (var_x + var_y + SSIM_C2))


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image: (B,)."""
    return ssim_map(x, y).flatten(1).mean(dim=1)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image, (B,), on the 8-bit quantized images (as the metric tables use)."""
    x8 = (x.clamp(0, 1) * 255).round()
    y8 = (y.clamp(0, 1) * 255).round()
    mse = ((x8 - y8) ** 2).flatten(1).mean(dim=1).clamp(min=1e-10)
    return 10 * torch.log10(255.0 ** 2 / mse)


def sobel(x: torch.Tensor) -> torch.Tensor:
    """Sobel x and y gradients of every channel: (B, 2C, H, W)."""
    kernel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype)
    kernels = torch.stack([kernel, kernel.t()]).unsqueeze(1).repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels, groups=x.shape[1])


def mse_loss(fused: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(fused, truth)


def unsupervised_ssim_loss(fused: torch.Tensor, sources: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """1 - SSIM against the sources, per pixel weighted by each source's local variance (share of
    the window variance of all sources). sources: (B, K, C, H, W); fused: (B, C, H, W)."""
    count, channels = sources.shape[1], sources.shape[2]
    window = _gaussian_window(channels, device=fused.device, dtype=fused.dtype)
    maps, variances = [], []
    for k in range(count):
        mean_x, mean_y, var_x, var_y, cov = _local_stats(fused, sources[:, k], window)
        maps.append(((2 * mean_x * mean_y + SSIM_C1) * (2 * cov + SSIM_C2))
                    / ((mean_x ** 2 + mean_y ** 2 + SSIM_C1) * (var_x + var_y + SSIM_C2)))
        variances.append(var_y.clamp(min=0))
    variances = torch.stack(variances)
    weights = (variances + eps) / (variances + eps).sum(dim=0, keepdim=True)
    return 1 - (weights * torch.stack(maps)).sum(dim=0).mean()


def focus_loss(weights: torch.Tensor, focus: torch.Tensor, sources: torch.Tensor,
               threshold: float = 0.02) -> torch.Tensor:
    """Cross-entropy of the weight maps (B, K, H, W) against the focus regions (B, K, H, W), counted
    where the sources differ visibly (mean absolute difference from the source mean > threshold);
    elsewhere any weighting fuses equally well."""
    differ = (sources - sources.mean(dim=1, keepdim=True)).abs().mean(dim=(1, 2))      # B, H, W
    differ = F.avg_pool2d(differ.unsqueeze(1), 5, stride=1, padding=2).squeeze(1)
    where = (differ > threshold).to(weights.dtype)
    cross = -(focus * torch.log(weights.clamp(min=1e-6))).sum(dim=1)
    return (cross * where).sum() / where.sum().clamp(min=1.0)


def boundary_band(focus: torch.Tensor, radius: int = 10) -> torch.Tensor:
    """(B, K, H, W) focus regions -> (B, 1, H, W) float mask of the pixels within ``radius`` of a
    border between regions (a region's dilation minus its erosion, over a square window; BandPSNR
    uses a disk)."""
    def grow(x):  # a square max filter as two 1-D ones: the same result, far cheaper
        x = F.max_pool2d(x, (1, 2 * radius + 1), stride=1, padding=(0, radius))
        return F.max_pool2d(x, (2 * radius + 1, 1), stride=1, padding=(radius, 0))

    grown, shrunk = grow(focus), -grow(-focus)
    return ((grown - shrunk) > 0.5).any(dim=1, keepdim=True).to(focus.dtype)


def focusmap_loss(fused: torch.Tensor, truth: torch.Tensor, weights: torch.Tensor | None = None,
                  focus: torch.Tensor | None = None, sources: torch.Tensor | None = None,
                  gradient_weight: float = 0.5, focus_weight: float = 0.02,
                  boundary_weight: float = 0.0) -> torch.Tensor:
    """L1 + Sobel L1 against the truth, the focus term, and with ``boundary_weight`` > 0 the same
    image terms once more over the band near the focus-region borders (where halos show)."""
    loss = F.l1_loss(fused, truth) + gradient_weight * F.l1_loss(sobel(fused), sobel(truth))
    if focus_weight and weights is not None and focus is not None and sources is not None:
        loss = loss + focus_weight * focus_loss(weights, focus, sources)
    if boundary_weight and focus is not None:
        band = boundary_band(focus)
        area = band.sum().clamp(min=1.0)
        near = ((fused - truth).abs() * band).sum() / (area * fused.shape[1])
        near = near + gradient_weight * ((sobel(fused) - sobel(truth)).abs() * band).sum() / (area * 2 * fused.shape[1])
        loss = loss + boundary_weight * near
    return loss
