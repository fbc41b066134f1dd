"""Which kind of machine this is, for install hints that fit it.

On a Jetson, TensorRT, CUDA and OpenCV come with JetPack, and ONNX Runtime is not on PyPI for it:
a hint must never send a Jetson user to ``pip install 'mfif[cpu]'`` or ``'mfif[tensorrt]'``,
which would install a pip OpenCV and numpy over JetPack's (or a TensorRT that cannot run there).
"""

from __future__ import annotations

from pathlib import Path

TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")

JETSON_ONNXRUNTIME = ("ONNX Runtime for Jetson is not on PyPI: install the onnxruntime-gpu wheel built for your "
                      "JetPack (NVIDIA's Jetson Zoo and the Jetson AI Lab pip index list them; see "
                      "docs/deploy-jetson.md), or use a TensorRT engine (mfif build); never 'mfif[cpu]' on a "
                      "Jetson, whose pip OpenCV and numpy would shadow JetPack's")
JETSON_TENSORRT = ("TensorRT comes with JetPack on a Jetson: sudo apt install nvidia-jetpack, and make the "
                   "virtual environment with --system-site-packages so it sees JetPack's tensorrt "
                   "(docs/deploy-jetson.md); do not pip install tensorrt there")


def is_jetson() -> bool:
    """True on an NVIDIA Jetson (L4T): JetPack writes /etc/nv_tegra_release, and the device tree
    names the module."""
    if TEGRA_RELEASE.is_file():
        return True
    try:
        model = DEVICE_TREE_MODEL.read_bytes().decode(errors="replace")
    except OSError:
        return False
    return "jetson" in model.lower()


def install_hint(extra: str, package: str = "") -> str:
    """How to install what ``extra`` (of mfif) or ``package`` provides, on this machine."""
    if not is_jetson():
        if extra in ("gpu", "gpu-cu12"):
            return ("pip install 'mfif[gpu]' (driver for CUDA 13) or 'mfif[gpu-cu12]' (CUDA 12), never together "
                    "with mfif[cpu] (see docs/deploy-rtx.md)")
        if extra in ("tensorrt", "tensorrt-cu12"):
            return ("pip install 'mfif[tensorrt]' (driver for CUDA 13) or 'mfif[tensorrt-cu12]' (CUDA 12); see "
                    "docs/deploy-rtx.md")
        return f"pip install 'mfif[{extra}]'"
    if package.startswith("onnxruntime") or extra in ("cpu", "gpu", "gpu-cu12"):
        return JETSON_ONNXRUNTIME
    if package in ("cuda-python", "cuda.bindings", "cuda") or extra == "jetson":
        return "pip install 'mfif[jetson]' (cuda-python for JetPack 6's CUDA 12; see docs/deploy-jetson.md)"
    if package == "tensorrt" or extra in ("tensorrt", "tensorrt-cu12"):
        return JETSON_TENSORRT
    return (f"pip install 'mfif[{extra}]' on a development machine rather than the Jetson (its pip packages, "
            "OpenCV among them, would shadow JetPack's)")
