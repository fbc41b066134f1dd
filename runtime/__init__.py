"""The lean runtime a deployed box needs: ``Fuser`` fuses multi-focus frames with an ONNX model
(ONNX Runtime), a TensorRT engine, or a training checkpoint (torch, development). It imports numpy
and the chosen backend only; OpenCV only where video or image files are read."""

from mfif.runtime.fuser import Fuser, Stats
from mfif.runtime.model_info import ModelInfo
from mfif.runtime.video import VideoOutput

__all__ = ["Fuser", "Stats", "ModelInfo", "VideoOutput"]
