"""focusmap's inference settings that keep the weights (temperature, guide_radius, vote_radius,
scale, ...), measured side by side in PyTorch: on the fixed synthetic validation split of
``mfif train`` (64 pairs of 192x192 from the 40 validation photos, seed 1234) PSNR and SSIM against
the ground truth and BandPSNR (the halo metric of ``mfif evaluate``: PSNR within 10 px of the
focus-region borders), and QG (Qabf) per set on real pairs, each pair padded by reflection to the
model's pad multiple as the runtime does. Prints a Markdown table and writes JSON.

    python -m mfif.benchmarks.focusmap_settings train/weights/focusmap.safetensors \\
        --setting "" --setting "temperature=0.1,guide_radius=0"

Each ``--setting`` is comma-separated KEY=VALUE over the checkpoint's config ("" = as stored).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from mfif.benchmarks.report import machine_description, write_json
from mfif.benchmarks.variants import DEFAULT_SETS
from mfif.paths import shared_data_dir


def parse_setting(text: str) -> dict:
    from mfif.cli import parse_key_values

    return parse_key_values([item for item in text.split(",") if item.strip()], "--setting")


def build(checkpoint, overrides: dict):
    from mfif.train.models import build_model

    model = build_model(checkpoint.model.name, **{**checkpoint.model.config, **overrides})
    model.load_state_dict(checkpoint.model.state_dict())
    return model.eval()


def validation_scores(model, samples) -> dict[str, float]:
    """Mean PSNR, SSIM (as ``mfif train`` reports them) and BandPSNR over the validation samples."""
    import torch

    from mfif.evaluation.metrics.structural import band_psnr, boundary_band
    from mfif.train import losses

    psnr, ssim, band = [], [], []
    with torch.no_grad():
        for sample in samples:
            fused = model(sample["sources"][None]).clamp(0, 1)
            truth = sample["truth"][None]
            psnr.append(losses.psnr(fused, truth).item())
            ssim.append(losses.ssim(fused, truth).item())
            # 8-bit levels of every channel (C x H rows), the band of the focus regions in each
            channels = fused.shape[1]
            fused8 = (fused[0] * 255).round().numpy().reshape(-1, fused.shape[-1])
            truth8 = (truth[0] * 255).round().numpy().reshape(-1, truth.shape[-1])
            mask = np.tile(boundary_band(sample["focus"].numpy()), (channels, 1))
            band.append(band_psnr(fused8, truth8, mask))
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)), "band_psnr": float(np.mean(band))}


def fuse_padded(model, frames: list[np.ndarray]) -> np.ndarray:
    """uint8 frames -> uint8 fused, padded by reflection to the pad multiple as the runtime does."""
    import torch

    x = np.stack(frames).astype(np.float32) / 255
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    height, width = x.shape[-2:]
    multiple = getattr(model, "pad_multiple", 1)
    padded_h, padded_w = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    x = np.pad(x, ((0, 0), (0, 0), (0, padded_h - height), (0, padded_w - width)), mode="reflect")
    with torch.no_grad():
        fused = model(torch.from_numpy(x)[None])[0].numpy()[:, :height, :width]
    fused = np.clip(fused * 255 + 0.5, 0, 255).astype(np.uint8)
    return fused[0] if fused.shape[0] == 1 else fused.transpose(1, 2, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a focusmap checkpoint (.safetensors)")
    parser.add_argument("--setting", action="append", default=None,
                        help='comma-separated KEY=VALUE over its config, repeatable ("" = as stored)')
    parser.add_argument("--pairs", type=Path, nargs="*", default=None,
                        help="folders of real pairs (default: classic and mfifb_* of ../shared/data/pairs)")
    parser.add_argument("--sharp", type=Path, default=None, help="sharp photos (default ../shared/data/sharp)")
    parser.add_argument("--no-validation", action="store_true", help="skip the synthetic validation split")
    parser.add_argument("--json", default="bench/focusmap_settings.json")
    args = parser.parse_args(argv)

    import torch

    from mfif.benchmarks.variants import load_pairs, qabf_per_set
    from mfif.train.checkpoint import load_checkpoint
    from mfif.train.data import SynthConfig, validation_set

    torch.set_num_threads(1)
    shared = shared_data_dir()
    folders = args.pairs or ([shared / "pairs" / name for name in DEFAULT_SETS] if shared else [])
    sharp = args.sharp or (shared / "sharp" if shared else None)
    checkpoint = load_checkpoint(args.checkpoint)
    samples = validation_set(sharp, SynthConfig(crop=192), count=64) if sharp and not args.no_validation else []
    pairs = load_pairs(folders)
    results = []
    for text in args.setting or [""]:
        overrides = parse_setting(text)
        model = build(checkpoint, overrides)
        start = time.perf_counter()
        row = {"setting": text or "(as stored)", "config": model.config}
        if samples:
            row.update(validation_scores(model, samples))
        if pairs:
            per_set = qabf_per_set(lambda frames: fuse_padded(model, frames), pairs)
            row["qabf"] = per_set
        row["seconds"] = round(time.perf_counter() - start, 1)
        results.append(row)
        print(_line(row), flush=True)
    write_json(args.json, {"checkpoint": args.checkpoint, "machine": machine_description(), "results": results})
    print(f"wrote {args.json}")
    return 0


def _line(row: dict) -> str:
    parts = [row["setting"]]
    if "psnr" in row:
        parts.append(f"val PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.4f}, BandPSNR {row['band_psnr']:.2f} dB")
    if "qabf" in row:
        parts.append("QG " + ", ".join(f"{name.replace('mfifb_', '')} {value:.4f}" for name, value in row["qabf"].items()))
    return " | ".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
