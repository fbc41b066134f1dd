"""FP16 variant of an exported FP32 ONNX file: the graph computes in FP16, inputs and outputs stay
float32 (for strongly typed TensorRT builds and ONNX Runtime's CUDA provider).

What stays FP32, for weight-map nets (focusmap): each Softmax, everything computed from its output
(guided-filter upsampling, weight normalisation, the weighted blend of the sources) and the nodes
that feed only that part (the guided filter's statistics of the guide, whose ``E[I^2] - E[I]^2``
cancels badly in FP16). So the scoring convolutions run in FP16 and the output pixels are blended
in FP32. Nets without a Softmax convert whole.

The conversion is written here rather than taken from onnxconverter-common /
``onnxruntime.transformers.float16``: with a block list those cast every FP32 node's inputs and
outputs through FP16 (so consecutive FP32 nodes still round their intermediate values to FP16), and
give the same name to the Casts they insert when one tensor feeds several blocked nodes (the graph
then fails onnx.checker). Here each float tensor lives in the precision of the node that makes it,
and one Cast per tensor and target type, named after the tensor, is inserted where precisions meet.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mfif.export.onnx_export import finalize, load_onnx, make_node_names_unique, read_info, save_onnx
from mfif.errors import ModelFileError
from mfif.lazy import require

if TYPE_CHECKING:
    import onnx

    from mfif.runtime.model_info import ModelInfo

# Inputs that keep their own type whatever the node's precision (Resize: roi and scales).
FIXED_FLOAT_INPUTS = {"Resize": (1, 2)}


def fp32_nodes(proto: "onnx.ModelProto") -> list[str]:
    """Names of the nodes kept in FP32: each Softmax, its descendants, and the ancestors of those
    descendants that do not lie on the path into the Softmax."""
    producers = {out: node for node in proto.graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    softmaxes = [node for node in proto.graph.node if node.op_type == "Softmax"]
    score_path = _ancestors([producers[s.input[0]] for s in softmaxes if s.input[0] in producers], producers)
    keep: dict[str, object] = {}
    stack = list(softmaxes)
    while stack:  # descendants
        node = stack.pop()
        if node.name not in keep:
            keep[node.name] = node
            stack.extend(c for out in node.output for c in consumers.get(out, []))
    stack = [node for node in keep.values() if node.op_type != "Softmax"]
    while stack:  # ancestors of the FP32 part, stopping at the scoring path
        node = stack.pop()
        for name in node.input:
            parent = producers.get(name)
            if parent is not None and parent.name not in keep and parent.name not in score_path:
                keep[parent.name] = parent
                stack.append(parent)
    return sorted(keep)


def _ancestors(nodes: list, producers: dict) -> set[str]:
    seen: set[str] = set()
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if node.name not in seen:
            seen.add(node.name)
            stack.extend(producers[name] for name in node.input if name in producers)
    return seen


def to_fp16(proto: "onnx.ModelProto", keep_fp32: set[str]) -> "onnx.ModelProto":
    """A copy of ``proto`` whose nodes outside ``keep_fp32`` compute in FP16; graph inputs and
    outputs keep their float32 type."""
    onnx = require("onnx", extra="export", purpose="FP16 conversion")
    from onnx import TensorProto, helper, numpy_helper

    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    except onnx.shape_inference.InferenceError as exc:
        raise ModelFileError(f"cannot infer the tensor types of the graph for FP16 conversion: {exc}") from exc
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]}
    graph = proto.graph
    initializers = {t.name: t for t in graph.initializer}
    types.update({name: t.data_type for name, t in initializers.items()})
    home = {v.name: FLOAT for v in graph.input}          # precision each float tensor is made in
    new_initializers, nodes = [], []
    casts: dict[tuple[str, int], str] = {}

    def tensor_in(name: str, precision: int) -> str:
        """The name under which float tensor ``name`` is available in ``precision``."""
        if name in initializers:
            if precision == FLOAT:
                return name
            key = (name, HALF)
            if key not in casts:
                half = numpy_helper.to_array(initializers[name]).astype(np.float16)
                new_initializers.append(numpy_helper.from_array(half, f"{name}_fp16"))
                casts[key] = f"{name}_fp16"
            return casts[key]
        if home.get(name, precision) == precision:
            return name
        key = (name, precision)
        if key not in casts:
            casts[key] = f"{name}_to_{'fp16' if precision == HALF else 'fp32'}"
            nodes.append(helper.make_node("Cast", [name], [casts[key]], to=precision, name=casts[key]))
        return casts[key]

    outputs = {v.name for v in graph.output}
    for node in graph.node:
        precision = FLOAT if node.name in keep_fp32 else HALF
        node = _copy(node)
        fixed = FIXED_FLOAT_INPUTS.get(node.op_type, ())
        for i, name in enumerate(node.input):
            if name and i not in fixed and types.get(name) == FLOAT:
                node.input[i] = tensor_in(name, precision)
        if precision == HALF:
            _attributes_to_fp16(node, numpy_helper)
        renamed = []
        for i, name in enumerate(node.output):
            if types.get(name) != FLOAT:
                continue
            home[name] = precision
            if precision == HALF and name in outputs:  # a graph output made in FP16: cast it back
                node.output[i] = casts[(name, HALF)] = f"{name}_fp16"
                home[name] = FLOAT  # the name itself now holds the float32 Cast below
                renamed.append(name)
        nodes.append(node)
        for name in renamed:
            nodes.append(helper.make_node("Cast", [f"{name}_fp16"], [name], to=FLOAT, name=f"{name}_to_fp32"))
    used = {name for node in nodes for name in node.input}
    result = onnx.ModelProto()
    result.CopyFrom(proto)
    del result.graph.node[:]
    result.graph.node.extend(nodes)
    del result.graph.value_info[:]
    kept = [t for t in graph.initializer if t.name in used]
    del result.graph.initializer[:]
    result.graph.initializer.extend(kept + new_initializers)
    return result


def _copy(node):
    copy = type(node)()
    copy.CopyFrom(node)
    return copy


def _attributes_to_fp16(node, numpy_helper) -> None:
    """Float tensors held in attributes (Constant, ConstantOfShape) and Cast targets go to FP16."""
    from onnx import TensorProto

    for attribute in node.attribute:
        if attribute.type == attribute.TENSOR and attribute.t.data_type == TensorProto.FLOAT:
            half = numpy_helper.to_array(attribute.t).astype(np.float16)
            attribute.t.CopyFrom(numpy_helper.from_array(half, attribute.t.name))
        if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT:
            attribute.i = TensorProto.FLOAT16


def convert_fp16(source: "str | Path | onnx.ModelProto", output: str | Path,
                 keep_fp32: list[str] | None = None) -> "ModelInfo":
    """Write the FP16 variant of the FP32 ONNX ``source`` to ``output``. ``keep_fp32``: node names
    to keep in FP32 (default: :func:`fp32_nodes`). Returns the metadata written."""
    label = str(source) if isinstance(source, (str, Path)) else "model"
    proto = load_onnx(source) if isinstance(source, (str, Path)) else source
    info = read_info(proto, label)
    if info.precision != "fp32":
        raise ModelFileError(f"{label} is a {info.precision} model; FP16 conversion starts from the FP32 export")
    make_node_names_unique(proto)  # the FP32 list refers to nodes by name
    names = {node.name for node in proto.graph.node}
    keep = fp32_nodes(proto) if keep_fp32 is None else sorted(keep_fp32)
    unknown = sorted(set(keep) - names)
    if unknown:
        raise ModelFileError(f"nodes to keep in FP32 are not in {label}: {unknown[:5]}; "
                             f"its nodes are e.g. {sorted(names)[:5]}")
    converted = to_fp16(proto, set(keep))
    new_info = replace(info, precision="fp16")
    finalize(converted, new_info, {"mfif.fp32_nodes": ",".join(keep)})
    save_onnx(converted, output)
    return new_info
