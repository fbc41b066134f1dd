"""Writing files so that nothing is lost: every output goes to a temporary name in the target's
folder and is renamed over the real name only once it is complete. A full disk, an error or an
interrupt therefore never leaves a truncated file under the real name and never destroys an
earlier good one."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from mfif.errors import DataError


def _temporary_name(path: Path) -> Path:
    # Hidden, in the same folder (so the rename is atomic), unique per process and thread; it ends
    # with the real suffix for writers that choose the format by it (OpenCV's VideoWriter).
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path to write ``path``'s content to; on success it is renamed to ``path``,
    on any error (or interrupt) it is removed and ``path`` is left as it was. ``OSError`` becomes a
    :class:`DataError` that names the file. Creates the parent folder."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the folder {path.parent} for {path.name}: {exc.strerror or exc}") from exc
    partial = _temporary_name(path)
    try:
        yield partial
        os.replace(partial, path)
    except OSError as exc:
        kept = " (the earlier file there is untouched)" if path.exists() else ""
        raise DataError(f"cannot write {path}: {exc.strerror or exc}{kept}") from exc
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()


def write_bytes_atomic(path: str | Path, data) -> Path:
    """Write ``data`` (bytes or a buffer such as a numpy array) to ``path`` atomically; the file
    gets the usual permissions (0644 under the common umask 022)."""
    path = Path(path)
    with atomic_path(path) as partial:
        with open(partial, "wb") as handle:
            handle.write(memoryview(data).cast("B"))
    return path


def check_writable_folder(folder: str | Path) -> Path:
    """Make sure ``folder`` exists (creating it) and can be written to, before any work starts."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder} is a file, not a folder: choose another output folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the output folder {folder}: {exc.strerror or exc}") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(f"cannot write to the output folder {folder} (permission denied): choose another one")
    return folder
