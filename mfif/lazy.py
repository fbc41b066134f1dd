"""Lazy imports of heavy or platform-specific packages, with an error that says how to install them."""

import importlib
from types import ModuleType

from mfif.errors import BackendUnavailableError
from mfif.platform import install_hint


def require(module: str, extra: str, purpose: str = "", needs: str = "") -> ModuleType:
    """Import ``module`` or raise BackendUnavailableError telling how to install it on this
    machine (:func:`mfif.platform.install_hint`: a Jetson gets JetPack's way, never a pip OpenCV).
    ``needs``: an attribute the real package has; a module without it (a folder of type stubs,
    such as tensorrt-stubs leaves, or a namespace package) counts as not installed."""
    what = f" (needed for {purpose})" if purpose else ""
    try:
        imported = importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"Python package '{module}' is not installed{what}: {exc}. Install it with: {install_hint(extra, module)}"
        ) from exc
    if needs and not hasattr(imported, needs):
        where = getattr(imported, "__file__", None) or ", ".join(getattr(imported, "__path__", [])) or "?"
        raise BackendUnavailableError(
            f"Python package '{module}' is not installed{what}: '{module}' imports from {where} but has no "
            f"'{needs}', so it is not the real package (type stubs or an empty folder). Install it with: "
            f"{install_hint(extra, module)}")
    return imported
