"""Test utilities of the runtime tests: exporting models to ONNX the way the runtime expects them
(until export/onnx_export.py is used here instead), and synthetic multi-focus frames and videos."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

_CACHE: dict[tuple, Path] = {}
_CACHE_DIR = Path(tempfile.mkdtemp(prefix="mfif-runtime-tests-"))


def export_onnx(model, path: str | Path, note: str = "") -> Path:
    """Export a train.models net: input ``sources`` (1, K, C, H, W) with dynamic H and W (and K, C
    where the net takes any), outputs ``fused`` (+ ``weights``), opset 17, ModelInfo metadata."""
    import onnx
    import torch

    from runtime.model_info import ModelInfo

    model = model.eval()
    has_weights = bool(getattr(model, "has_weight_map", False))
    channels = getattr(model, "channels", 0)
    count = model.num_inputs or 0

    class Wrapper(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, sources):
            return self.net(sources, return_weights=True) if has_weights else self.net(sources)

    outputs = ["fused", "weights"] if has_weights else ["fused"]
    source_axes = {3: "height", 4: "width"}
    fused_axes = {2: "height", 3: "width"}
    weight_axes = {2: "height", 3: "width"}
    if not count:
        source_axes[1] = weight_axes[1] = "num_inputs"
    if not channels:
        source_axes[2] = fused_axes[1] = "channels"
    dynamic = {"sources": source_axes, "fused": fused_axes}
    if has_weights:
        dynamic["weights"] = weight_axes
    example = torch.rand(1, count or 2, channels or 3, 32, 32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrapper(model), (example,), str(path), input_names=["sources"], output_names=outputs,
                          dynamic_axes=dynamic, opset_version=17, dynamo=False)
    info = ModelInfo(model=model.name, output_names=tuple(outputs), channels=channels, num_inputs=count,
                     size_multiple=model.size_multiple, config=dict(model.config))
    proto = onnx.load(str(path))
    metadata = info.to_metadata()
    if note:
        metadata["mfif.note"] = note
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
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
