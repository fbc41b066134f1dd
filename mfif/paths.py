"""Where the shared data lives. It is never copied into the project: it is read from
``$MFIF_DATA`` or from ``../shared/data`` beside the repository."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Where mfif keeps built engines and TensorRT timing caches: ``$MFIF_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/mfif`` or ``~/.cache/mfif``."""
    root = os.environ.get("MFIF_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mfif")
    return Path(root)


def shared_data_dir() -> Path | None:
    """The shared data folder, or None when it is absent (as on a user's machine)."""
    env = os.environ.get("MFIF_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for path in candidates:
        if path.is_dir():
            return path
    return None
