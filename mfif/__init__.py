"""Multi-focus image fusion for edge devices.

``from mfif import Fuser, VideoOutput`` (the classes of ``mfif.runtime``) is all a camera loop needs.
The stages live in subpackages: ``mfif.runtime``, ``mfif.train``, ``mfif.export``,
``mfif.calibration``, ``mfif.evaluation``, ``mfif.benchmarks``. Both are imported on first use,
so ``import mfif`` stays light for the commands that do not fuse."""

__version__ = "0.1.0"
__all__ = ["Fuser", "VideoOutput", "__version__"]


def __getattr__(name: str):
    if name in ("Fuser", "VideoOutput"):
        from mfif import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'mfif' has no attribute {name!r}")
