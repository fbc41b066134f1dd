"""The small interface every inference backend implements (ONNX Runtime, torch, TensorRT)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from mfif.runtime.model_info import ModelInfo

BACKEND_STAGES = ("h2d", "compute", "d2h")  # the stages a backend times in last_timings


class Backend(ABC):
    """Runs one model on one device and owns the frame buffers (as Polygraphy's runners do). Not
    thread-safe: one backend per Fuser, one Fuser per thread; :meth:`for_another_thread` makes the
    next one on the same loaded model.

    Per frame: ``input_buffer(shape)`` gives the float32 (1, K, C, H, W) C-contiguous array to fill
    (H and W multiples of ``info.pad_to``; pinned host memory on the GPU backends), kept
    while the shape holds; ``run(sources)`` runs the model on it and returns (fused (1, C, H, W),
    weights (1, K, H, W) or None): float32 views of arrays the backend owns, valid until the next
    ``run``. ``run`` also takes any other array of that layout, copying it into the buffer first.
    ``last_timings`` holds the milliseconds of the :data:`BACKEND_STAGES` the backend can split
    out, refreshed by every run.

    Inputs are validated by the Fuser; a backend only asserts what it relies on.
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
    def input_buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        """The backend's float32 input array of ``shape`` (1, K, C, H, W); the same array while
        the shape holds."""

    def run(self, sources: np.ndarray, want_weights: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        assert sources.dtype == np.float32 and sources.ndim == 5, f"sources {sources.dtype} {sources.shape}"
        assert self.info.has_weight_map or not want_weights, "the Fuser checks that weights exist"
        buffer = self.input_buffer(sources.shape)
        if sources is not buffer:
            np.copyto(buffer, sources)
        return self._run(buffer, want_weights)

    @abstractmethod
    def _run(self, sources: np.ndarray, want_weights: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Run on ``sources``, the array :meth:`input_buffer` gave."""

    @abstractmethod
    def for_another_thread(self) -> "Backend":
        """A backend on the same loaded model (session, engine or module, not loaded again) with
        buffers, and on a GPU a stream or context, of its own, for another thread."""

    def close(self) -> None:
        """Release device resources; the default has none."""
