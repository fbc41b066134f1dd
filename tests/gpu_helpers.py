"""Whether TensorRT and a CUDA GPU are usable here, for the tests that need them (they skip with the
reason)."""

from __future__ import annotations

import importlib.util

from mfif.errors import BackendUnavailableError

HAVE_CUDA_PYTHON = importlib.util.find_spec("cuda") is not None and (
    importlib.util.find_spec("cuda.bindings") is not None or importlib.util.find_spec("cuda.cudart") is not None)


def tensorrt_missing_reason() -> str | None:
    """None when the real TensorRT bindings import (10 or newer), else why not. A 'tensorrt' folder
    without them (type stubs) counts as missing, as it does for the backend."""
    from mfif.runtime.backends.tensorrt import import_tensorrt

    try:
        import_tensorrt()
    except BackendUnavailableError as exc:
        return str(exc)
    return None


HAVE_TENSORRT = tensorrt_missing_reason() is None


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
