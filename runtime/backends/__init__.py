"""Load a model into the backend that runs it (the loader half of Polygraphy's loader/runner split).

Every backend is a :class:`mfif.runtime.backends.base.Backend` subclass in its own module, imported
only when chosen, so a deployed box needs just the package of the backend it uses:

============  ====================================================  ================================
name          class                                                 model files
============  ====================================================  ================================
onnxruntime   mfif.runtime.backends.onnxruntime:OnnxRuntimeBackend  ``.onnx``
torch         mfif.runtime.backends.torch_backend:TorchBackend      ``.safetensors`` (development)
tensorrt      mfif.runtime.backends.tensorrt:TensorRTBackend        ``.engine`` / ``.plan``
============  ====================================================  ================================

Make one directly with its options (``OnnxRuntimeBackend("m.onnx", providers=[...])``) or let
:func:`load_backend` pick the class by file suffix. Each class checks its own model file.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path

from mfif.errors import BackendUnavailableError, ConfigError, ModelFileError
from mfif import platform as mfif_platform
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


def backend_name(model: str | Path | None, backend: str = "auto") -> str:
    """The backend that runs ``model``: ``backend`` itself, or for 'auto' the one its suffix names
    (None, the shipped default model, runs on ONNX Runtime)."""
    if backend not in CHOICES:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(CHOICES)}")
    if model is None:
        if backend == "tensorrt":
            raise ConfigError("backend 'tensorrt' needs an engine file: pass model='path/to/model.engine' "
                              "(build one with 'mfif build')")
        return "onnxruntime" if backend == "auto" else backend
    path = Path(model)
    kind = SUFFIXES.get(path.suffix.lower())
    if backend == "auto":
        if kind is None and not path.is_file():
            raise ModelFileError(f"model file not found: {path}")
        if kind is None:
            raise ConfigError(f"cannot tell the backend for {path} from its suffix {path.suffix!r}; "
                              f"expected one of {', '.join(SUFFIXES)} or pass backend=")
        return kind
    if kind is not None and kind != backend:
        raise ConfigError(f"backend {backend!r} cannot run {path.name} (a {path.suffix} file is for {kind!r}); "
                          f"use backend='{kind}' or backend='auto'")
    return backend


def backend_class(name: str) -> type[Backend]:
    module_name, class_name = BACKENDS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise BackendUnavailableError(f"backend {name!r} ({module_name}) is not part of this install") from exc
        raise
    return getattr(module, class_name)


def default_engine_path() -> Path:
    """Where ``Fuser()`` on a Jetson looks for the default model's TensorRT engine."""
    from mfif.paths import cache_dir

    return cache_dir() / "engines" / "focusmap.engine"


def jetson_default_model() -> Path | None:
    """The default model on a Jetson, where ONNX Runtime is not on PyPI and TensorRT comes with
    JetPack: the built engine of the default model when there is one, else None (ONNX Runtime,
    when it is installed), else an error that gives the build command."""
    engine = default_engine_path()
    if engine.is_file():
        return engine
    if importlib.util.find_spec("onnxruntime") is not None:
        return None
    raise BackendUnavailableError(
        f"on a Jetson the default model runs through TensorRT, and its engine {engine} is not built yet: build it "
        f"once (a few minutes) with: mfif build {DEFAULT_MODEL} -o {engine}  (or pass model='your.engine'; "
        f"ONNX Runtime is not installed: {mfif_platform.JETSON_ONNXRUNTIME})")


def resolve_model(model: str | Path | None, backend: str = "auto") -> str | Path | None:
    """The model file :func:`load_backend` loads: ``model`` itself, or for the default model (None)
    on a Jetson its built engine (:func:`jetson_default_model`). ``backend_name(resolve_model(m, b),
    b)`` names the backend that will run it."""
    if model is None and backend == "auto" and mfif_platform.is_jetson():
        return jetson_default_model()
    return model


def load_backend(model: str | Path | None = None, backend: str = "auto", device: str = "auto", **options) -> Backend:
    """Load ``model`` (None: the shipped default) into the backend ``backend`` names ('auto': by
    file suffix) on ``device``. ``options`` go to the backend class (``threads``, ``providers``,
    ``profile``, ...); those with value None are left out (the backend's defaults), and one the
    class does not take is a ConfigError that names it. On a Jetson the default model runs from
    its TensorRT engine when one is built (:func:`jetson_default_model`)."""
    model = resolve_model(model, backend)
    name = backend_name(model, backend)
    options = {key: value for key, value in options.items() if value is not None}
    cls = backend_class(name)
    path = None if model is None else Path(model)
    try:
        inspect.signature(cls).bind(path, device=device, **options)
    except TypeError as exc:
        raise ConfigError(f"backend {name!r} does not take the options {sorted(options)} ({exc})") from exc
    return cls(path, device=device, **options)
