"""Where the shared data lives. It is never copied into the project: it is read from
``$MFIF_DATA`` or from ``../shared/data`` beside the repository."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    """The shared data folder, or None when it is absent (as on a user's machine)."""
    env = os.environ.get("MFIF_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for path in candidates:
        if path.is_dir():
            return path
    return None
