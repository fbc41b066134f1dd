"""Lazy imports of heavy or platform-specific packages, with an error that names the extra."""

import importlib
from types import ModuleType

from mfif.errors import BackendUnavailableError


def require(module: str, extra: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise BackendUnavailableError telling which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f" (needed for {purpose})" if purpose else ""
        raise BackendUnavailableError(
            f"Python package '{module}' is not installed{what}: {exc}. "
            f"Install it with: pip install 'mfif[{extra}]'"
        ) from exc
