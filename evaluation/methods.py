"""The fusion methods the quality benchmark can run, by name.

Every method is ``fuse(frames: list[np.ndarray]) -> np.ndarray`` (frames of one shape, grey or BGR,
uint8 or float in [0, 1]; the result has their shape). Names:

- the classical baselines of :mod:`evaluation.baselines`: ``average``, ``lp``, ``dwt``, ``gff``,
  ``decision`` (``baselines`` stands for all of them);
- ``enfuse``: the outside focus-stacking tool (:mod:`evaluation.enfuse`);
- ``focusmap``: the shipped default model, run by ``runtime.Fuser`` on ONNX Runtime;
- ``model:<path>``: any model file ``runtime.Fuser`` runs, on the backend its suffix names: an
  exported ONNX file (FP32, FP16 or INT8 variant), a TensorRT engine (``.engine``/``.plan``) or a
  ``.safetensors`` checkpoint (torch).

Everything a method needs (a Python package, the enfuse program, a model and its runtime) is
checked when it is asked for, so a missing one fails before the first pair.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfif.errors import ConfigError, ModelFileError

BASELINE_NAMES = ("average", "lp", "dwt", "gff", "decision")
DESCRIPTIONS = {
    "average": "pixel average",
    "lp": "Laplacian pyramid, max-abs coefficients",
    "dwt": "discrete wavelet transform (db2), max-abs coefficients",
    "gff": "guided filtering fusion (Li, Kang, Hu 2013)",
    "decision": "focus-measure decision map refined by a guided filter (GFDF-like)",
    "enfuse": "enfuse --contrast-weight=1 --hard-mask (outside tool)",
    "focusmap": "shipped default model through runtime.Fuser (ONNX Runtime)",
    "model:<path>": "a model file through runtime.Fuser: .onnx (ONNX Runtime), .engine/.plan (TensorRT), "
                    ".safetensors (torch)",
}
# Python packages a baseline needs beyond the OpenCV all of them use: (module, pip package, extra).
BASELINE_PACKAGES = {"dwt": ("pywt", "PyWavelets", "eval")}


@dataclass(frozen=True)
class Method:
    name: str                                         # as asked for: 'gff', 'model:/m/x_fp16.onnx'
    label: str                                        # short name for tables and file names
    fuse: Callable[[list[np.ndarray]], np.ndarray]
    description: str = ""
    model_sha256: str = ""                            # of the model file it runs; '' for the others


def default_method_names() -> list[str]:
    """The baselines, plus enfuse where it is installed."""
    from mfif.evaluation import enfuse

    return [*BASELINE_NAMES, *(["enfuse"] if enfuse.available() else [])]


def _runtime_method(name: str, label: str, model: Path | None, description: str) -> Method:
    try:
        from mfif.runtime import Fuser
        from mfif.runtime.backends import DEFAULT_MODEL
    except ImportError as exc:
        from mfif.errors import BackendUnavailableError
        from mfif.platform import install_hint

        raise BackendUnavailableError(f"method {name!r} needs runtime.Fuser, which cannot be imported ({exc}); "
                                      f"install the runtime with: {install_hint('cpu', 'onnxruntime')}") from exc
    from mfif.hashing import sha256_file

    # The shipped model always on ONNX Runtime (as published); a model file on the backend its suffix names.
    fuser = Fuser(model=model, backend="onnxruntime" if model is None else "auto")

    def fuse(frames: list[np.ndarray]) -> np.ndarray:
        return fuser.fuse(list(frames))

    return Method(name, label, fuse, description, sha256_file(model or DEFAULT_MODEL))


def get_method(name: str) -> Method:
    """The method called ``name`` (see the module help); a model is loaded here, once."""
    name = name.strip()
    if name in BASELINE_NAMES:
        from mfif.evaluation import baselines
        from mfif.lazy import require

        if name in BASELINE_PACKAGES:  # fail now, not on every pair
            module, package, extra = BASELINE_PACKAGES[name]
            require(module, extra=extra, purpose=f"the {name} baseline; the package is {package}")
        return Method(name, name, baselines.BASELINES[name], DESCRIPTIONS[name])
    if name == "enfuse":
        from mfif.evaluation import enfuse

        enfuse.find_enfuse()  # fail now, not on the first pair
        return Method(name, name, enfuse.fuse, DESCRIPTIONS[name])
    if name == "focusmap":
        return _runtime_method(name, name, None, DESCRIPTIONS[name])
    if name.startswith("model:"):
        from mfif.runtime.backends import SUFFIXES

        path = Path(name[len("model:"):]).expanduser()
        if path.suffix.lower() not in SUFFIXES:
            raise ConfigError(f"method {name!r}: give an ONNX file, a TensorRT engine or a checkpoint after 'model:' "
                              f"({', '.join(SUFFIXES)}), not {path.name!r}")
        if not path.is_file():
            raise ModelFileError(f"method {name!r}: model file not found: {path}")
        label = re.sub(r"[^A-Za-z0-9._-]", "-", path.stem)
        if label in BASELINE_NAMES or label in ("enfuse", "focusmap"):
            label = "model-" + label
        return _runtime_method(name, label, path, f"model file {path}")
    known = ", ".join([*BASELINE_NAMES, "baselines", "enfuse", "focusmap", "model:<model file>"])
    raise ConfigError(f"unknown method {name!r}; known: {known}")


def get_methods(names: str | list[str]) -> list[Method]:
    """Methods from a comma-separated string or a list; ``baselines`` expands to all baselines.
    Two methods with one label (e.g. two models named x.onnx in different folders) is an error."""
    if isinstance(names, str):
        names = names.split(",")
    expanded: list[str] = []
    for name in (n.strip() for n in names):
        for item in (BASELINE_NAMES if name == "baselines" else [name]):
            if item and item not in expanded:
                expanded.append(item)
    if not expanded:
        raise ConfigError("no methods given; choose from: " + ", ".join(DESCRIPTIONS))
    methods = [get_method(name) for name in expanded]
    labels = [m.label for m in methods]
    for label in labels:
        if labels.count(label) > 1:
            clash = [m.name for m in methods if m.label == label]
            raise ConfigError(f"methods {clash} would share the label {label!r} in the tables; rename one "
                              "model file")
    return methods
