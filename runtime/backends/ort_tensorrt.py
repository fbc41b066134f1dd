"""ONNX Runtime's TensorRT execution provider: the lighter path to TensorRT (no engine files to
manage, ONNX Runtime builds and caches the engine itself). This module only makes the provider
entry; the ONNX Runtime backend runs it::

    from mfif.runtime import Fuser
    from mfif.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from mfif.runtime.backends.ort_tensorrt import tensorrt_provider

    fuser = Fuser(OnnxRuntimeBackend("focusmap_fp16.onnx",
                                     providers=[tensorrt_provider(cache_dir="trt-cache"), "CUDAExecutionProvider"]))

It needs the GPU build of ONNX Runtime (``pip install 'mfif[gpu]'``) and TensorRT's libraries.
"""

from __future__ import annotations

from pathlib import Path

from mfif.errors import ConfigError
from mfif.runtime.engine_cache import Profile, default_profile
from mfif.runtime.model_info import ModelInfo

PROVIDER = "TensorrtExecutionProvider"


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(int(d)) for d in shape)


def _flag(value: bool) -> str:
    return "True" if value else "False"  # the spelling ONNX Runtime's Python options parser accepts


def tensorrt_provider(info: ModelInfo | None = None, profiles: list[Profile] | None = None, *,
                      fp16: bool = False, int8: bool = False, cache_dir: str | Path | None = None,
                      device_id: int = 0, workspace_mib: int | None = None, optimization_level: int | None = None,
                      hardware_compatible: bool = False,
                      detailed_build_log: bool = False) -> tuple[str, dict[str, str]]:
    """The ``("TensorrtExecutionProvider", options)`` entry for ``providers=[...]``.

    - ``profiles``: the optimization profiles over the input (the same :class:`Profile` as
      ``mfif build``; several are allowed); default: the build command's default profile for
      ``info`` (VGA to 1080p, tuned for 720p, rounded up to the size multiple).
    - ``fp16`` / ``int8``: ONNX Runtime's precision flags. Leave both off for the FP16 or Q/DQ INT8
      ONNX files: ONNX Runtime 1.22 and newer then builds a strongly typed network, so precision
      follows the graph as with ``mfif build``. ``fp16=True`` on an FP32 file lets TensorRT 10 pick
      FP16 kernels (TensorRT 11 dropped that flag); ``int8=True`` is needed for a Q/DQ file only
      with older ONNX Runtime releases.
    - ``cache_dir``: keep built engines and the timing cache there, so only the first session
      builds. ONNX Runtime does not notice a new GPU, TensorRT or ONNX Runtime version: empty the
      folder after changing any of them.
    - ``hardware_compatible``: engines for any Ampere or newer GPU (slower; not on Jetson).
    """
    info = info or ModelInfo(model="unknown")
    profiles = list(profiles) if profiles else [default_profile(info)]
    for index, profile in enumerate(profiles):
        try:
            profile.validate(info.pad_to)
        except ConfigError as exc:
            raise ConfigError(f"TensorRT provider profile {index}: {exc}") from None
    if device_id < 0:
        raise ConfigError(f"device_id must be >= 0, not {device_id}")
    name = info.input_name
    low, opt, high = zip(*(profile.shapes() for profile in profiles), strict=True)
    options = {
        "device_id": str(int(device_id)),
        # The same input name repeated gives ONNX Runtime one TensorRT profile per entry.
        "trt_profile_min_shapes": ",".join(f"{name}:{_shape(s)}" for s in low),
        "trt_profile_opt_shapes": ",".join(f"{name}:{_shape(s)}" for s in opt),
        "trt_profile_max_shapes": ",".join(f"{name}:{_shape(s)}" for s in high),
        "trt_fp16_enable": _flag(fp16),
        "trt_int8_enable": _flag(int8),
        "trt_engine_hw_compatible": _flag(hardware_compatible),
        "trt_detailed_build_log": _flag(detailed_build_log),
    }
    if cache_dir is not None:
        folder = Path(cache_dir)
        folder.mkdir(parents=True, exist_ok=True)
        options.update({"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(folder),
                        "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(folder)})
    if workspace_mib is not None:
        if workspace_mib < 1:
            raise ConfigError(f"workspace_mib must be at least 1, not {workspace_mib}")
        options["trt_max_workspace_size"] = str(int(workspace_mib) << 20)
    if optimization_level is not None:
        if not 0 <= optimization_level <= 5:
            raise ConfigError(f"optimization_level must be 0..5, not {optimization_level}")
        options["trt_builder_optimization_level"] = str(int(optimization_level))
    return PROVIDER, options
