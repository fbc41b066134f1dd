"""Per-layer INT8 sensitivity: quantize one layer at a time (from one shared calibration) and
measure how far the fused output moves from FP32. Image-to-image nets can lose a lot in a single
layer; the layers at the top of this list are the ones to keep in float (``--keep-float``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from mfif.calibration.quantize import DEFAULT_PERCENTILE, quantizable_nodes, quantize_int8
from mfif.export.onnx_export import load_onnx, ort_session, output_psnr, read_info


def layer_sensitivity(fp32: str | Path, cache: str | Path, inputs: list[np.ndarray], *, method: str = "minmax",
                      percentile: float = DEFAULT_PERCENTILE, progress=None) -> list[dict]:
    """For each quantizable layer of ``fp32``: the mean PSNR (dB) over ``inputs`` of the fused
    output with only that layer in INT8, against FP32. ``cache`` holds the calibration ranges
    (written by :func:`quantize_int8`). Sorted from the most sensitive (lowest PSNR)."""
    proto = load_onnx(fp32)
    info = read_info(proto, str(fp32))
    ops = {node.name: node.op_type for node in proto.graph.node}
    reference = ort_session(proto)
    wanted = [reference.run(["fused"], {info.input_name: x})[0] for x in inputs]
    rows = []
    with tempfile.TemporaryDirectory(prefix="mfif-sensitivity-") as tmp:
        for name in quantizable_nodes(proto):
            path = Path(tmp) / "one_layer.onnx"
            quantize_int8(fp32, path, None, method=method, percentile=percentile, only=[name], cache=cache)
            session = ort_session(path)
            values = [output_psnr(want, session.run(["fused"], {info.input_name: x})[0])
                      for want, x in zip(wanted, inputs)]
            rows.append({"layer": name, "op": ops[name], "psnr_db": float(np.mean(values))})
            if progress is not None:
                progress.update(1)
    return sorted(rows, key=lambda row: row["psnr_db"])
