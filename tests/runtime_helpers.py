"""Test utilities of the runtime tests: models exported to ONNX (with the project's exporter, plus a
hand-set focus-measure model), and synthetic multi-focus frames and videos."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np

_CACHE: dict[tuple, Path] = {}  # exported files, once per test process
_CACHE_DIR = Path(tempfile.mkdtemp(prefix="mfif-runtime-tests-"))
atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)


def export_onnx(model, path: str | Path, channels: int | None = None, note: str = "") -> Path:
    """Export a train.models net with the project's exporter (export/onnx_export.py): input
    ``sources`` (1, K, C, H, W) with dynamic H and W (and K, C where the net takes any; ``channels``
    fixes C), outputs ``fused`` (+ ``weights``), opset 17, ModelInfo metadata. ``note`` adds an
    ``mfif.note`` metadata entry."""
    from mfif.export.onnx_export import export_onnx as export

    path = Path(path)
    export(model, path, channels=channels)
    if note:
        import onnx

        proto = onnx.load(str(path))
        proto.metadata_props.add(key="mfif.note", value=note)
        onnx.save(proto, str(path))
    return path


def exported(name: str, seed: int = 0, **config) -> Path:
    """An exported untrained model (cached per test process)."""
    key = (name, seed, tuple(sorted(config.items())))
    if key not in _CACHE:
        import torch

        from mfif.train.models import build_model

        torch.manual_seed(seed)
        model = build_model(name, **config)
        tag = "-".join([name, str(seed)] + [f"{k}{v}" for k, v in sorted(config.items())])
        _CACHE[key] = export_onnx(model, _CACHE_DIR / f"{tag}.onnx")
    return _CACHE[key]


def focus_measure_model(gain: float = 300.0, radius: int = 7):
    """A fusion net with no learned parts: a classic focus measure (local mean of the 3x3 high-pass
    magnitude) per source, a softmax over the sources, the weighted sum of the sources. It has the
    interface of the train.models nets, so it exports like them; a stand-in for trained weights
    where a test needs a model that reacts to focus."""
    import torch
    from torch.nn import functional as F

    def box(x, r):
        return F.avg_pool2d(x, 2 * r + 1, stride=1, padding=r, count_include_pad=False)

    class FocusMeasure(torch.nn.Module):
        name = "focus-measure"
        sources = None
        size_multiple = 1
        has_weight_map = True
        config = {"gain": gain, "radius": radius}

        def forward(self, sources, return_weights: bool = False):
            grey = sources.mean(dim=2)
            energy = box((grey - box(grey, 1)).abs(), radius)
            weights = torch.softmax(gain * energy, dim=1)
            fused = (weights.unsqueeze(2) * sources).sum(dim=1)
            return (fused, weights) if return_weights else fused

    return FocusMeasure().eval()


def focus_measure_onnx() -> Path:
    key = ("focus-measure",)
    if key not in _CACHE:
        _CACHE[key] = export_onnx(focus_measure_model(), _CACHE_DIR / "focus-measure.onnx")
    return _CACHE[key]


def demo_frames(height: int = 120, width: int = 160, colour: bool = True, seed: int = 0):
    """A synthetic multi-focus pair (A sharp on the left, B on the right) and its sharp scene."""
    from mfif.scenes import demo_pair

    return demo_pair(height, width, seed=seed, colour=colour)


def write_video(path: Path, frames, fps: float = 25.0) -> Path:
    """Write frames with OpenCV (MJPG in .avi, mp4v in .mp4) and check the file reads back."""
    import cv2

    frames = list(frames)
    height, width = frames[0].shape[:2]
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (width, height), frames[0].ndim == 3)
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def read_video(path: Path) -> list[np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames
