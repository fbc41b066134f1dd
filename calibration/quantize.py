"""Explicit INT8 quantization: a Q/DQ ONNX file made with ONNX Runtime's static quantization.

TensorRT 10 deprecated and TensorRT 11 removed the implicit calibrator API, so a Q/DQ graph is the
INT8 path that works on TensorRT 8.6 to 11 (and on ONNX Runtime). Settings, as TensorRT wants them:
- symmetric int8 activations and weights (zero point 0), per-channel weights;
- Q/DQ only on the inputs of the weighted layers (Conv, ConvTranspose), not on their outputs:
  TensorRT fuses Conv + bias + ReLU + residual add and re-quantizes where the next Q/DQ sits;
  everything else (for focusmap: the softmax, guided filter and the weighted blend) stays float;
- a Q/DQ pair on the float weights (``AddQDQPairToWeight``) and one pair per consumer
  (``DedicatedQDQPair``), float biases (``QuantizeBias`` off: TensorRT has no int32 dequantize).

Calibration runs one frame at a time (bounded memory) and its tensor ranges go to a JSON cache, so
quantizing again with other layers kept in float (the sensitivity sweep) needs no new calibration.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from mfif.calibration.data import FrameReader
from mfif.export.onnx_export import finalize, load_onnx, read_info, save_onnx
from mfif.errors import BackendUnavailableError, ConfigError, ModelFileError
from mfif.lazy import require
from mfif.runtime.model_info import ModelInfo

QUANTIZED_OPS = ("Conv", "ConvTranspose")
METHODS = ("minmax", "entropy", "percentile")
DEFAULT_PERCENTILE = 99.999


def _quantization():
    module = require("onnxruntime.quantization", extra="cpu", purpose="INT8 calibration")
    if "calibration_cache_path" not in inspect.signature(module.quantize_static).parameters:
        import onnxruntime

        raise BackendUnavailableError(f"onnxruntime {onnxruntime.__version__} lacks the calibration cache of "
                                      "quantize_static; install onnxruntime>=1.27 (pip install 'mfif[cpu]') "
                                      "or onnxruntime-gpu>=1.28 (pip install 'mfif[gpu]')")
    return module


def tensorrt_options(percentile: float = DEFAULT_PERCENTILE) -> dict:
    """quantize_static's extra_options for TensorRT-friendly Q/DQ placement."""
    return {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "AddQDQPairToWeight": True,
        "DedicatedQDQPair": True,
        "QuantizeBias": False,
        "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
        "CalibStridedMinMax": 1,  # collect one frame at a time, whatever the method
        "CalibPercentile": percentile,
    }


def quantizable_nodes(proto) -> list[str]:
    """Names of the nodes that INT8 quantization touches, in graph order."""
    return [node.name for node in proto.graph.node if node.op_type in QUANTIZED_OPS]


def quantize_int8(fp32: str | Path, output: str | Path, frames: list[np.ndarray] | None, *,
                  method: str = "minmax", percentile: float = DEFAULT_PERCENTILE, keep_float: list[str] = (),
                  only: list[str] | None = None, cache: str | Path | None = None, progress=None,
                  metadata: dict | None = None) -> ModelInfo:
    """Calibrate on ``frames`` ((1, K, C, H, W) float32 arrays) and write the Q/DQ INT8 model.

    ``keep_float``: quantizable node names left in float. ``only``: quantize just these nodes (the
    sensitivity sweep). ``cache``: calibration ranges JSON; an existing cache is reused (then
    ``frames`` may be None), a missing one is written. ``metadata``: extra ``mfif.calibration``
    values recorded in the file."""
    q = _quantization()
    if method not in METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    if not 0.0 < percentile <= 100.0:
        raise ConfigError(f"percentile must be in (0, 100], not {percentile}")
    proto = load_onnx(fp32)
    info = read_info(proto, str(fp32))
    if info.precision != "fp32":
        raise ModelFileError(f"{fp32} is a {info.precision} model; INT8 quantization starts from the FP32 export")
    names = quantizable_nodes(proto)
    unknown = sorted((set(keep_float) | set(only or ())) - set(names))
    if unknown:
        raise ConfigError(f"layers {unknown} are not quantizable nodes of {fp32}; its {', '.join(QUANTIZED_OPS)} "
                          f"nodes are: {', '.join(names)}")
    with tempfile.TemporaryDirectory(prefix="mfif-int8-") as tmp:
        cache_path = Path(cache) if cache else Path(tmp) / "ranges.json"
        if frames is None and not cache_path.is_file():
            raise ConfigError("no calibration frames and no calibration cache to quantize from")
        reader = None if cache_path.is_file() else FrameReader(frames, info.input_name, progress)
        if reader is not None and len(reader) == 0:
            raise ConfigError("the calibration set is empty")
        quantized = Path(tmp) / "int8.onnx"
        try:
            with _quiet():
                q.quantize_static(
                    proto, quantized, reader, quant_format=q.QuantFormat.QDQ,
                    op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True, reduce_range=False,
                    activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
                    nodes_to_quantize=list(only) if only else None, nodes_to_exclude=list(keep_float),
                    calibrate_method=_method(q, method), extra_options=tensorrt_options(percentile),
                    calibration_cache_path=cache_path)
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(f"quantizing {fp32} ({method}) failed: {exc}") from exc
        result = load_onnx(quantized)
    new_info = replace(info, precision="int8")
    record = {"method": method, "frames": len(frames) if frames is not None else None,
              "keep_float": list(keep_float), **({"percentile": percentile} if method == "percentile" else {}),
              **(metadata or {})}
    if only:
        record["only"] = list(only)
    finalize(result, new_info, {"mfif.calibration": json.dumps(record)})
    save_onnx(result, output)
    return new_info


@contextlib.contextmanager
def _quiet():
    """Silence quantize_static's prints and its advice to pre-process (the export is already
    simplified and shape-inferred); the caller shows progress."""
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def _method(q, name: str):
    return {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
            "percentile": q.CalibrationMethod.Percentile}[name]
