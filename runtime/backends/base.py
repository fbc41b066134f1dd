"""The small interface every inference backend implements (ONNX Runtime, torch, TensorRT)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from mfif.runtime.model_info import ModelInfo


class Backend(ABC):
    """Runs one model on one device. Not thread-safe: one backend per Fuser, one Fuser per thread.

    ``run`` takes the preprocessed sources, float32 (1, K, C, H, W) contiguous, H and W already
    multiples of ``info.size_multiple``, and returns (fused (1, C, H, W), weights (1, K, H, W) or
    None) as float32 host arrays. ``last_timings`` holds the milliseconds of the stages the backend
    can split out ("h2d", "compute", "d2h"), refreshed by every run.
    """

    name: str = ""
    info: ModelInfo

    def __init__(self) -> None:
        self.last_timings: dict[str, float] = {}

    @property
    @abstractmethod
    def device(self) -> str:
        """What actually runs, e.g. 'CPUExecutionProvider' or 'CUDAExecutionProvider (GPU 0)'."""

    @abstractmethod
    def run(self, sources: np.ndarray, want_weights: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        ...

    def for_another_thread(self) -> "Backend | None":
        """A backend on the same loaded model with buffers of its own, for another thread; None when
        this backend cannot share its model (the caller then loads the model again)."""
        return None

    def close(self) -> None:
        """Release device resources; the default has none."""
