"""Whether a CUDA GPU is usable here, for the tests that need one (they skip with the reason)."""

from __future__ import annotations

import importlib.util

from mfif.errors import BackendUnavailableError

HAVE_CUDA_PYTHON = importlib.util.find_spec("cuda") is not None and (
    importlib.util.find_spec("cuda.bindings") is not None or importlib.util.find_spec("cuda.cudart") is not None)


def gpu_missing_reason() -> str | None:
    """None when a CUDA GPU is usable, else why not."""
    if not HAVE_CUDA_PYTHON:
        return "cuda-python is not installed"
    from mfif.runtime.cuda_buffers import gpu_info

    try:
        gpu_info(0)
    except BackendUnavailableError as exc:
        return str(exc)
    return None
