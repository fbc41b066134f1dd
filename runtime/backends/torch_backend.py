"""PyTorch backend, for development and for GPUs without TensorRT: runs a training checkpoint
(``.safetensors``) eagerly, on CUDA in FP16 when a GPU is there, else on the CPU in FP32.

This is the only runtime module that imports torch and the training code (``train.checkpoint``),
and only when it is chosen. A deployed box uses the ONNX file with ONNX Runtime or TensorRT.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np

from mfif.device import Device, parse_device
from mfif.errors import BackendUnavailableError, InferenceError, ModelFileError
from mfif.lazy import require
from mfif.runtime.backends.base import Backend
from mfif.runtime.model_info import ModelInfo


def default_checkpoint() -> Path:
    from mfif import train

    return Path(train.__file__).resolve().parent / "weights" / "focusmap.safetensors"


class TorchBackend(Backend):
    """``TorchBackend(path=None, device='auto')``: a ``.safetensors`` training checkpoint (None: the
    shipped focusmap weights) on CUDA in FP16 ('auto' when a GPU is usable, 'cuda', 'cuda:N') or
    on the CPU in FP32."""

    name = "torch"

    def __init__(self, path: str | Path | None = None, device: str = "auto") -> None:
        super().__init__()
        torch = require("torch", extra="train", purpose="the torch backend")
        self._torch = torch
        checkpoint_module = require("mfif.train.checkpoint", extra="train", purpose="loading training checkpoints")
        if path is None:
            path = default_checkpoint()
            if not path.is_file():
                raise ModelFileError(f"no default checkpoint at {path}: train one with 'mfif train' or pass "
                                     "model='path/to/checkpoint.safetensors' (or use the ONNX model with backend='auto')")
        self.path = Path(path)
        wanted = parse_device(device)
        if wanted.kind == "auto":
            wanted = Device("cuda" if torch.cuda.is_available() else "cpu")
        if wanted.kind == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA GPU "
                                          "(a CPU-only build, or no driver); pass device='cpu'")
        self._device = torch.device(str(wanted))
        self.fp16 = self._device.type == "cuda"  # FP16 on a GPU; the CPU runs FP32

        checkpoint = checkpoint_module.load_checkpoint(self.path)
        model = checkpoint.model.eval().to(self._device)
        self.model = model.half() if self.fp16 else model
        outputs = ("fused", "weights") if getattr(model, "has_weight_map", False) else ("fused",)
        self.info = ModelInfo(
            model=model.name, version=checkpoint.metadata.get("mfif.format", "1"),
            precision="fp16" if self.fp16 else "fp32", output_names=outputs,
            channels=getattr(model, "channels", 0), sources=model.sources or 0,
            size_multiple=model.size_multiple, pad_multiple=getattr(model, "pad_multiple", model.size_multiple),
            checkpoint_sha256=checkpoint.sha256, config=dict(model.config),
        )
        self._input: np.ndarray | None = None

    @property
    def device(self) -> str:
        torch = self._torch
        if self._device.type == "cuda":
            index = self._device.index or 0
            return f"torch CUDA (GPU {index}: {torch.cuda.get_device_name(index)}, {'FP16' if self.fp16 else 'FP32'})"
        return f"torch CPU ({torch.get_num_threads()} threads, FP32)"

    def for_another_thread(self) -> "TorchBackend":
        """The same module (inference only reads its parameters) with buffers of its own."""
        twin = copy.copy(self)
        twin.last_timings = {}
        twin._input = None
        return twin

    def input_buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        """On the CPU an array the model reads in place (torch.from_numpy shares it); on CUDA a
        view of pinned host memory, plus the device input and pinned outputs of that shape."""
        shape = tuple(shape)
        if self._input is None or self._input.shape != shape:
            torch = self._torch
            host = torch.empty(shape, dtype=torch.float32, pin_memory=self._device.type == "cuda")
            self._host_input = host
            self._input = host.numpy()
            if self._device.type == "cuda":
                batch, count, channels, height, width = shape
                self._device_input = torch.empty(shape, dtype=torch.float16, device=self._device)
                self._host_out = {name: torch.empty(out_shape, dtype=torch.float32, pin_memory=True)
                                  for name, out_shape in (("fused", (batch, channels, height, width)),
                                                          ("weights", (batch, count, height, width)))}
                self._host_views = {name: tensor.numpy() for name, tensor in self._host_out.items()}
        return self._input

    def _forward(self, x, want_weights: bool):
        if self.info.has_weight_map:
            fused, weights = self.model(x, return_weights=True)
            return fused, (weights if want_weights else None)
        return self.model(x), None

    def _run(self, sources: np.ndarray, want_weights: bool) -> tuple[np.ndarray, np.ndarray | None]:
        torch = self._torch
        try:
            with torch.inference_mode():
                if self._device.type == "cpu":
                    start = time.perf_counter()
                    fused, weights = self._forward(self._host_input, want_weights)
                    computed = time.perf_counter()
                    self.last_timings = {"h2d": 0.0, "compute": (computed - start) * 1e3, "d2h": 0.0}
                    return fused.numpy(), (weights.numpy() if weights is not None else None)
                # non_blocking: the FP32 -> FP16 conversions run on the GPU (a blocking copy converts on the CPU)
                start = time.perf_counter()
                self._device_input.copy_(self._host_input, non_blocking=True)
                torch.cuda.synchronize(self._device)
                uploaded = time.perf_counter()
                fused, weights = self._forward(self._device_input, want_weights)
                torch.cuda.synchronize(self._device)
                computed = time.perf_counter()
                self._host_out["fused"].copy_(fused, non_blocking=True)
                if weights is not None:
                    self._host_out["weights"].copy_(weights, non_blocking=True)
                torch.cuda.synchronize(self._device)
                done = time.perf_counter()
        except RuntimeError as exc:
            raise InferenceError(f"torch failed to run {self.info.model} on sources of shape {sources.shape}: {exc}") from exc
        self.last_timings = {"h2d": (uploaded - start) * 1e3, "compute": (computed - uploaded) * 1e3,
                             "d2h": (done - computed) * 1e3}
        return self._host_views["fused"], (self._host_views["weights"] if weights is not None else None)
