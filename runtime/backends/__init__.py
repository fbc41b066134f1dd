"""Pick and build an inference backend for a model file.

Every backend is a :class:`runtime.backends.base.Backend` subclass in its own module, imported only
when chosen, so a deployed box needs just the package of the backend it uses:

============  ===========================================  ==================================
name          class                                        model files
============  ===========================================  ==================================
onnxruntime   runtime.backends.onnxruntime:OnnxRuntimeBackend  ``.onnx``
torch         runtime.backends.torch_backend:TorchBackend      ``.safetensors`` (development)
tensorrt      runtime.backends.tensorrt:TensorRTBackend        ``.engine`` / ``.plan``
============  ===========================================  ==================================

A backend class is constructed as ``Class(path: Path, **options)``: ``options`` holds only the
keyword options the user actually gave (``device``, ``providers``, ``threads``); an option a
class does not take is a ConfigError that names it. ``backend="auto"`` picks by file suffix.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from mfif.errors import BackendUnavailableError, ConfigError, ModelFileError
from mfif.runtime.backends.base import Backend


BACKENDS: dict[str, str] = {
    "onnxruntime": "mfif.runtime.backends.onnxruntime:OnnxRuntimeBackend",
    "torch": "mfif.runtime.backends.torch_backend:TorchBackend",
    "tensorrt": "mfif.runtime.backends.tensorrt:TensorRTBackend",
}
SUFFIXES: dict[str, str] = {".onnx": "onnxruntime", ".safetensors": "torch", ".engine": "tensorrt", ".plan": "tensorrt"}
CHOICES = ("auto", *BACKENDS)

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = MODELS_DIR / "focusmap.onnx"


def resolve(model: str | Path | None, backend: str = "auto") -> tuple[Path | None, str]:
    """The model path and the backend name that will run it. ``model=None`` means the shipped
    default (the ONNX file; the torch backend finds its own development checkpoint)."""
    if backend not in CHOICES:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(CHOICES)}")
    if model is None:
        if backend == "torch":
            return None, "torch"
        if backend == "tensorrt":
            raise ConfigError("backend 'tensorrt' needs an engine file: pass model='path/to/model.engine' "
                              "(build one with 'mfif build')")
        if not DEFAULT_MODEL.is_file():
            raise ModelFileError(f"the default model {DEFAULT_MODEL} is missing from this install; "
                                 "reinstall mfif or pass model='path/to/model.onnx'")
        return DEFAULT_MODEL, "onnxruntime"
    path = Path(model)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    kind = SUFFIXES.get(path.suffix.lower())
    if backend == "auto":
        if kind is None:
            raise ConfigError(f"cannot tell the backend for {path} from its suffix {path.suffix!r}; "
                              f"expected one of {', '.join(SUFFIXES)} or pass backend=")
        return path, kind
    if kind is not None and kind != backend:
        raise ConfigError(f"backend {backend!r} cannot run {path.name} (a {path.suffix} file is for {kind!r}); "
                          f"use backend='{kind}' or backend='auto'")
    return path, backend


def backend_class(name: str) -> type[Backend]:
    module_name, class_name = BACKENDS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise BackendUnavailableError(f"backend {name!r} ({module_name}) is not part of this install") from exc
        raise
    return getattr(module, class_name)


def create_backend(model: str | Path | None = None, backend: str = "auto", **options) -> Backend:
    """Build the backend for ``model``. ``options`` with value None are dropped (backend defaults)."""
    path, name = resolve(model, backend)
    options = {key: value for key, value in options.items() if value is not None}
    cls = backend_class(name)
    try:
        inspect.signature(cls).bind(path, **options)
    except TypeError as exc:
        raise ConfigError(f"backend {name!r} does not take the options {sorted(options)} ({exc})") from exc
    return cls(path, **options)
