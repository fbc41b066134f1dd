"""Export a fusion net to one self-contained ONNX file with dynamic height and width.

Choices (see docs/export.md):
- Opset 17: TensorRT 10.x (JetPack 6.1/6.2, RTX boxes) and 11.x, the versions mfif build supports,
  parse it (so does JetPack 6.0's TensorRT 8.6, which mfif does not run).
- The TorchScript-based exporter (``dynamo=False``). torch 2.13's default dynamo exporter has no
  opset 17 implementations (it emits opset 18 and its down-conversion fails on ReduceMean), while
  the TorchScript exporter gives a clean opset 17 graph with named dynamic axes for these nets.
- Batch 1, dynamic H and W; K (the number of sources) and C dynamic for models that take any
  (focusmap) unless fixed with ``sources``/``channels``; K = 2 and C fixed for the two-stream nets.
- The file carries :class:`runtime.model_info.ModelInfo` in its metadata.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import mfif
from mfif.errors import ConfigError, InputError, ModelFileError
from mfif.files import write_bytes_atomic
from mfif.lazy import require
from mfif.hashing import sha256_bytes
from mfif.runtime.model_info import ModelInfo

if TYPE_CHECKING:
    import onnx
    from torch import nn

OPSET = 17
MIN_OPSET = 13          # per-channel Q/DQ needs 13
INPUT_NAME = "sources"
TRACE_SIZE = 64         # height and width of the tracing input (rounded up to the size multiple)
PARITY_SIZES = ((97, 131), (480, 640), (1080, 1920))


def _torch():
    return require("torch", extra="export", purpose="exporting models")


def _onnx():
    return require("onnx", extra="export", purpose="reading and writing ONNX files")


# ----------------------------------------------------------------------------- models


def load_model(source, overrides: dict | None = None) -> tuple["nn.Module", str, dict[str, str]]:
    """(model in eval mode, checkpoint sha256, checkpoint metadata) from a checkpoint path, a
    :class:`train.checkpoint.Checkpoint` or an ``nn.Module`` (which has no checkpoint hash).
    ``overrides`` changes config values that leave the weights as they are (focusmap's ``scale``,
    its speed/quality knob): the model is rebuilt with them and given the same weights."""
    model, sha256, metadata = _load_model(source)
    if not overrides:
        return model, sha256, metadata
    from mfif.train.models import build_model

    config = {**model.config, **overrides}
    unknown = sorted(set(overrides) - set(model.config))
    if unknown:
        raise ConfigError(f"model {model.name} has no config value {unknown[0]!r}; it has {sorted(model.config)}")
    rebuilt = build_model(model.name, **config)
    try:
        rebuilt.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"overriding {overrides} changes the weights of {model.name} (its layers no longer match "
                          f"the checkpoint); only options such as focusmap's scale can change at export") from exc
    return rebuilt.eval(), sha256, metadata


def _load_model(source) -> tuple["nn.Module", str, dict[str, str]]:
    torch = _torch()
    from mfif.train.checkpoint import Checkpoint, load_checkpoint

    if isinstance(source, (str, Path)):
        source = load_checkpoint(source)
    if isinstance(source, Checkpoint):
        return source.model.eval(), source.sha256, dict(source.metadata)
    if isinstance(source, torch.nn.Module):
        for attribute in ("name", "config", "sources", "size_multiple", "has_weight_map"):
            if not hasattr(source, attribute):
                raise ConfigError(f"module {type(source).__name__} lacks the attribute {attribute!r} that "
                                  "mfif models carry; build it with train.models.build_model")
        return source.eval(), "", {}
    raise ConfigError(f"cannot export {type(source).__name__}: give a checkpoint path, a Checkpoint or an nn.Module")


def model_info(model: "nn.Module", sha256: str = "", sources: int | None = None, channels: int | None = None,
               precision: str = "fp32", version: str = "1") -> ModelInfo:
    """The metadata an exported file of ``model`` carries."""
    from mfif.train.models import receptive_radius

    outputs = ("fused", "weights") if model.has_weight_map else ("fused",)
    return ModelInfo(model=model.name, version=str(version), precision=precision, input_name=INPUT_NAME,
                     output_names=outputs, channels=int(channels or getattr(model, "channels", 0)),
                     sources=int(sources or model.sources or 0), size_multiple=int(model.size_multiple),
                     pad_multiple=int(getattr(model, "pad_multiple", model.size_multiple)),
                     receptive_radius=receptive_radius(model), checkpoint_sha256=sha256, config=dict(model.config))


def _check_sources(model: "nn.Module", sources: int | None) -> int | None:
    if sources is None:
        return None
    if model.sources is not None and sources != model.sources:
        raise ConfigError(f"model {model.name} takes exactly {model.sources} sources; sources={sources} "
                          "is not possible (leave it unset)")
    if sources < 2:
        raise ConfigError(f"sources must be >= 2, not {sources}")
    return sources


def _check_channels(model: "nn.Module", channels: int | None) -> int | None:
    fixed = getattr(model, "channels", None)
    if channels is None:
        return fixed
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (grey) or 3 (BGR), not {channels}")
    if fixed is not None and channels != fixed:
        raise ConfigError(f"model {model.name} was built for {fixed} channels; channels={channels} is not possible "
                          "(leave it unset)")
    return channels


# ----------------------------------------------------------------------------- export


def export_onnx(source, output: str | Path, *, opset: int = OPSET, simplify: bool = True,
                sources: int | None = None, channels: int | None = None) -> ModelInfo:
    """Export ``source`` (checkpoint path, Checkpoint or nn.Module) to ``output`` as FP32 ONNX.
    ``sources`` fixes K and ``channels`` (1 or 3) fixes C for models that take any (both stay
    dynamic by default). Returns the metadata written. To change a config value that keeps the
    weights (focusmap's scale), pass ``load_model(source, overrides)``'s model or checkpoint."""
    torch = _torch()
    onnx = _onnx()
    model, sha256, metadata = load_model(source)
    sources = _check_sources(model, sources)
    channels = _check_channels(model, channels)
    if not MIN_OPSET <= opset <= 20:
        raise ConfigError(f"opset {opset} is outside the supported range {MIN_OPSET}..20 (default {OPSET})")
    info = model_info(model, sha256, sources, channels, version=metadata.get("version", "1"))

    k = sources or model.sources or 2
    side = -(-TRACE_SIZE // info.size_multiple) * info.size_multiple
    example = torch.rand(1, k, info.channels or 3, side, side)
    spatial = {2: "height", 3: "width"}
    axes = {INPUT_NAME: {3: "height", 4: "width"}, "fused": dict(spatial)}
    if info.has_weight_map:
        axes["weights"] = dict(spatial)
    if info.channels == 0:
        axes[INPUT_NAME][2] = axes["fused"][1] = "channels"
    if info.sources == 0:
        axes[INPUT_NAME][1] = "k"
        if info.has_weight_map:
            axes["weights"][1] = "k"
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            kwargs = {"return_weights": True} if info.has_weight_map else None
            torch.onnx.export(model, (example,), buffer, kwargs=kwargs, dynamo=False, input_names=[INPUT_NAME],
                              output_names=list(info.output_names), dynamic_axes=axes, opset_version=opset,
                              do_constant_folding=True)
    except Exception as exc:  # torch raises many types here; name the model and the cause
        raise ModelFileError(f"exporting model {model.name} {model.config} to ONNX opset {opset} failed: "
                             f"{exc}") from exc
    proto = onnx.load_from_string(buffer.getvalue())
    if simplify:
        proto = simplify_graph(proto)
    set_interface_dims(proto, info)
    proto.producer_name, proto.producer_version = "mfif", mfif.__version__
    proto.doc_string = f"mfif {model.name} fusion net; metadata keys mfif.* describe inputs and outputs"
    info = finalize(proto, info)
    save_onnx(proto, output)
    return info


def simplify_graph(proto: "onnx.ModelProto") -> "onnx.ModelProto":
    """Constant folding and graph clean-up with onnxsim."""
    onnxsim = require("onnxsim", extra="export", purpose="simplifying ONNX graphs (or pass --no-simplify)")
    simplified, ok = onnxsim.simplify(proto)
    if not ok:
        raise ModelFileError("onnxsim could not validate the simplified graph against the original; "
                             "export without simplification (--no-simplify)")
    return simplified


def set_interface_dims(proto: "onnx.ModelProto", info: ModelInfo) -> None:
    """Name the dimensions of the graph's inputs and outputs as the metadata says: batch 1,
    K fixed or 'k', C fixed, 'height' and 'width' (exporters and onnxsim make up names)."""
    k, c = info.sources or "k", info.channels or "channels"
    shapes = {info.input_name: [1, k, c, "height", "width"], "fused": [1, c, "height", "width"],
              "weights": [1, k, "height", "width"]}
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        for dim, size in zip(dims, shapes[value.name]):
            if isinstance(size, int):
                dim.dim_value = size
            else:
                dim.dim_param = size


def make_node_names_unique(proto: "onnx.ModelProto") -> int:
    """Give every node a non-empty, unique name (``<op>_<n>`` for unnamed ones, ``<name>_<n>``
    for repeats), as TensorRT's error messages and layer-precision settings refer to them.
    Returns the number of nodes renamed."""
    used = {node.name for node in proto.graph.node if node.name}
    kept, renamed = set(), 0
    for node in proto.graph.node:
        if node.name and node.name not in kept:  # the first node of a name keeps it
            kept.add(node.name)
            continue
        base, n = node.name or node.op_type, 1
        while f"{base}_{n}" in used:
            n += 1
        node.name = f"{base}_{n}"
        used.add(node.name)
        renamed += 1
    return renamed


def sort_nodes(proto: "onnx.ModelProto") -> None:
    """Order the nodes topologically (converters append the Cast nodes they insert at the end,
    which onnx.checker rejects), keeping the original order among ready nodes."""
    available = {value.name for value in [*proto.graph.input, *proto.graph.initializer]} | {""}
    pending, ordered = list(proto.graph.node), []
    while pending:
        ready = [node for node in pending if all(name in available for name in node.input)]
        if not ready:
            raise ModelFileError(f"the graph has a cycle or a missing input around node {pending[0].name!r} "
                                 f"(inputs {list(pending[0].input)})")
        for node in ready:
            available.update(node.output)
        ordered.extend(ready)
        done = {id(node) for node in ready}
        pending = [node for node in pending if id(node) not in done]
    ordered = [copy.deepcopy(node) for node in ordered]  # detach from the field cleared below
    del proto.graph.node[:]
    proto.graph.node.extend(ordered)


def finalize(proto: "onnx.ModelProto", info: ModelInfo, extra: dict[str, str] | None = None) -> ModelInfo:
    """Topological order, unique node names, metadata (ModelInfo keys with the graph's hash, and
    ``extra``), and a full onnx.checker pass. Returns the ModelInfo written."""
    onnx = _onnx()
    sort_nodes(proto)
    make_node_names_unique(proto)
    info = dataclasses.replace(info, graph_sha256=sha256_bytes(proto.graph.SerializeToString()))
    values = {**info.to_metadata(), **(extra or {})}
    kept = [entry for entry in proto.metadata_props if entry.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in values.items():
        proto.metadata_props.add(key=key, value=value)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ModelFileError(f"the exported {info.model} ({info.precision}) graph fails onnx.checker: {exc}") from exc
    return info


def save_onnx(proto: "onnx.ModelProto", output: str | Path) -> Path:
    """Write one self-contained file (no external-data side file); a temporary name is used until
    the write is complete."""
    output = Path(output)
    if proto.ByteSize() >= 2**31:
        raise ModelFileError(f"model {output.name} is {proto.ByteSize()} bytes, over protobuf's 2 GiB limit "
                             "for one file")
    return write_bytes_atomic(output, proto.SerializeToString())


# ----------------------------------------------------------------------------- reading files


def load_onnx(path: str | Path) -> "onnx.ModelProto":
    """Load and check an ONNX file; a missing, truncated or corrupted file, or one that keeps its
    weights in a side file, is a ModelFileError that names the path and its size."""
    onnx = _onnx()
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"ONNX file not found: {path}")
    size = path.stat().st_size
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
        onnx.checker.check_model(proto)
    except (DecodeError, onnx.checker.ValidationError, ValueError, RuntimeError, OSError) as exc:
        raise ModelFileError(f"{path} ({size} bytes) is not a valid ONNX model ({type(exc).__name__}: {exc}); "
                             "it may be truncated or corrupted: export it again with 'mfif export'") from exc
    if not proto.graph.node:
        raise ModelFileError(f"{path} ({size} bytes) holds no graph; it may be truncated: export it again")
    external = [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ModelFileError(f"{path} keeps {len(external)} tensors in external data files (e.g. {external[0]}); "
                             "mfif expects one self-contained file: export it with 'mfif export'")
    return proto


def read_info(proto: "onnx.ModelProto | str | Path", source: str = "model") -> ModelInfo:
    """The ModelInfo in the metadata of ``proto`` (a model or a file), after checking that the
    graph's interface matches it."""
    if isinstance(proto, (str, Path)):
        proto, source = load_onnx(proto), str(proto)
    info = ModelInfo.from_metadata({p.key: p.value for p in proto.metadata_props}, source=source)
    check_interface(proto, info, source)
    return info


def check_interface(proto: "onnx.ModelProto", info: ModelInfo, source: str = "model") -> None:
    """The graph must take ``sources`` (1, K, C, H, W) float32 and give ``fused`` (and ``weights``)."""
    onnx = _onnx()
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [v for v in proto.graph.input if v.name not in initializers]

    def describe(values):
        parts = []
        for v in values:
            dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            parts.append(f"{v.name}{dims} {onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower()}")
        return ", ".join(parts) or "none"

    dims = [d.dim_value or None for d in inputs[0].type.tensor_type.shape.dim] if len(inputs) == 1 else []
    ok = (len(inputs) == 1 and inputs[0].name == info.input_name and len(dims) == 5
          and inputs[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
          and dims[1] in (None, info.sources or None) and dims[2] in (None, info.channels or None))
    outputs = [v.name for v in proto.graph.output]
    if not ok or tuple(outputs) != tuple(info.output_names):
        k, c = info.sources or "K", info.channels or "C"
        raise ModelFileError(f"{source}: inputs/outputs do not match its mfif metadata: expected input "
                             f"{info.input_name}[1,{k},{c},H,W] float and outputs {list(info.output_names)}, found "
                             f"inputs {describe(inputs)} and outputs {describe(proto.graph.output)}")


# ----------------------------------------------------------------------------- running and parity


def check_size(info: ModelInfo, height: int, width: int) -> None:
    """H and W must be positive multiples of the net's size multiple."""
    m = info.size_multiple
    if height < m or width < m or height % m or width % m:
        raise InputError(f"size {height}x{width} does not suit model {info.model}: height and width must be positive "
                         f"multiples of {m} (pad or crop the frames, e.g. to {max(m, height // m * m)}x"
                         f"{max(m, width // m * m)})")


def ort_session(model: "str | Path | onnx.ModelProto", threads: int = 0):
    """An ONNX Runtime CPU session for a file or an in-memory model."""
    ort = require("onnxruntime", extra="cpu", purpose="running ONNX models")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelFileError(f"ONNX Runtime cannot load {model if isinstance(model, (str, Path)) else 'the model'}: "
                             f"{exc}") from exc


def random_sources(info: ModelInfo, height: int, width: int, sources: int = 2, seed: int = 0) -> np.ndarray:
    """Smooth random sources (1, K, C, H, W) float32 in [0, 1] for parity checks: noise blurred at
    several scales, so every layer sees structure rather than white noise."""
    rng = np.random.default_rng(seed)
    k = info.sources or sources
    channels = info.channels or 3
    out = np.empty((1, k, channels, height, width), np.float32)
    for i in range(k):
        coarse = rng.random((k + 2, channels, max(2, height // 16), max(2, width // 16)), dtype=np.float32)
        up = np.kron(coarse.mean(0), np.ones((16, 16), np.float32))[:, :height, :width]
        up = np.pad(up, ((0, 0), (0, height - up.shape[1]), (0, width - up.shape[2])), mode="edge")
        fine = rng.random((channels, height, width), dtype=np.float32)
        out[0, i] = np.clip(0.7 * up + 0.3 * fine, 0.0, 1.0)
    return out


def parity(onnx_path: str | Path, source, sizes=PARITY_SIZES, sources: int = 2, seed: int = 0) -> list[dict]:
    """Max abs difference between ONNX Runtime (CPU) and PyTorch for every output at each size.
    ``source`` is the exported checkpoint path, Checkpoint or nn.Module."""
    torch = _torch()
    model, _, _ = load_model(source)
    proto = load_onnx(onnx_path)
    info = read_info(proto, str(onnx_path))
    session = ort_session(proto)
    results = []
    for height, width in sizes:
        check_size(info, height, width)
        inputs = random_sources(info, height, width, sources, seed)
        got = session.run(None, {info.input_name: inputs})
        with torch.no_grad():
            want = model(torch.from_numpy(inputs), **({"return_weights": True} if info.has_weight_map else {}))
        want = want if isinstance(want, tuple) else (want,)
        errors = {name: float(np.abs(a - b.numpy()).max()) for name, a, b in zip(info.output_names, got, want)}
        results.append({"size": [height, width], "sources": inputs.shape[1], "max_abs_error": errors})
    return results


def output_psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB of ``test`` against ``reference``, both in [0, 1] (inf when identical)."""
    mse = float(np.mean((np.asarray(reference, np.float64) - np.asarray(test, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))
