"""Multi-focus image fusion for edge devices.

``from mfif import Fuser`` (the same class as ``mfif.runtime.Fuser``) is all a camera loop needs.
The stages live in subpackages: ``mfif.runtime``, ``mfif.train``, ``mfif.export``,
``mfif.calibration``, ``mfif.evaluation``, ``mfif.benchmarks``. ``Fuser`` is imported on first
use, so ``import mfif`` stays light for the commands that do not fuse."""

__version__ = "0.1.0"
__all__ = ["Fuser", "__version__"]


def __getattr__(name: str):
    if name == "Fuser":
        from mfif.runtime.fuser import Fuser

        return Fuser
    raise AttributeError(f"module 'mfif' has no attribute {name!r}")
