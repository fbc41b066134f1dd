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
    from export.onnx_export import export_onnx as export

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

        from train.models import build_model

        torch.manual_seed(seed)
        model = build_model(name, **config)
        tag = "-".join([name, str(seed)] + [f"{k}{v}" for k, v in sorted(config.items())])
        _CACHE[key] = export_onnx(model, _CACHE_DIR / f"{tag}.onnx")
    return _CACHE[key]


def focus_measure_model(gain: float = 20.0):
    """A focusmap whose parameters are set by hand to a classic focus measure: the local mean of
    |x - box3(x)| (high-pass energy), widened by the dilated blocks; softmax then favours the sharper
    source. A stand-in for trained weights where a test needs a model that reacts to focus."""
    import torch

    from train.models import build_model

    model = build_model("focusmap", scale=1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.stem[0].weight[0, 1, 1, 1] = 1.0    # relu(+high-pass)
        model.stem[0].weight[1, 1, 1, 1] = -1.0   # relu(-high-pass): the two sum to |high-pass|
        for block in model.blocks:                 # x + box(x): a widening local mean
            block.depthwise.weight.fill_(1.0 / 9.0)
            block.pointwise.weight[:, :, 0, 0] = torch.eye(block.pointwise.weight.shape[0])
        model.compare[0].weight[0, 0, 0, 0] = gain
        model.compare[0].weight[0, 1, 0, 0] = gain
        model.compare[3].weight[0, 0, 0, 0] = 1.0
    return model.eval()


def focus_measure_onnx() -> Path:
    key = ("focus-measure",)
    if key not in _CACHE:
        _CACHE[key] = export_onnx(focus_measure_model(), _CACHE_DIR / "focus-measure.onnx")
    return _CACHE[key]


def demo_frames(height: int = 120, width: int = 160, colour: bool = True, seed: int = 0):
    """A synthetic multi-focus pair (A sharp on the left, B on the right) and its sharp scene."""
    from runtime.cli import demo_pair

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
