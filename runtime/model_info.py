"""What a model file says about itself. The exporter writes these keys into the ONNX file's
metadata (and the TensorRT builder beside the engine); the runtime reads them instead of guessing."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mfif.errors import ModelFileError
from mfif.hashing import sha256_bytes

PREFIX = "mfif."
LAYOUT = "sources: B,K,C,H,W float32 [0,1]; fused: B,C,H,W; weights: B,K,H,W"


@dataclass(frozen=True)
class ModelInfo:
    model: str                      # focusmap, xu2018, mustafa2019
    version: str = "1"
    precision: str = "fp32"         # fp32, fp16 (float32 I/O), int8 (Q/DQ)
    input_name: str = "sources"
    output_names: tuple[str, ...] = ("fused",)  # plus "weights" for weight-map models
    channels: int = 0               # 1 or 3; 0 means any channel count
    sources: int = 0             # exact number of sources; 0 means any N >= 2
    size_multiple: int = 1          # H and W must be multiples of this (the runtime pads)
    pad_multiple: int = 0           # the runtime pads H and W to this (0: to size_multiple); see tiling
    receptive_radius: int = 0       # input pixels, each way, an output pixel depends on (0: unknown)
    channel_order: str = "BGR"
    value_range: tuple[float, float] = (0.0, 1.0)
    batch: int = 1                  # exported with batch 1
    checkpoint_sha256: str = ""
    graph_sha256: str = ""          # of the serialized graph (nodes and weights), checked at load
    config: dict = field(default_factory=dict)

    @property
    def pad_to(self) -> int:
        """The multiple the runtime pads frame heights and widths to (and engine profiles use)."""
        return max(1, self.pad_multiple or self.size_multiple)

    @property
    def has_weight_map(self) -> bool:
        return "weights" in self.output_names

    def to_metadata(self) -> dict[str, str]:
        values = asdict(self)
        out = {PREFIX + key: json.dumps(value) if not isinstance(value, str) else value for key, value in values.items()}
        out[PREFIX + "layout"] = LAYOUT
        return out

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], source: str = "model") -> "ModelInfo":
        if PREFIX + "model" not in metadata:
            raise ModelFileError(f"{source} carries no mfif metadata (keys: {sorted(metadata)[:8]}); "
                                 "export it with 'mfif export' so the runtime knows its inputs")
        values = {}
        for name, spec in cls.__dataclass_fields__.items():
            raw = metadata.get(PREFIX + name)
            if raw is None:
                continue
            try:
                values[name] = raw if spec.type == "str" else json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ModelFileError(f"{source}: metadata {PREFIX + name}={raw!r} is not valid") from exc
        for name in ("output_names", "value_range"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def onnx_graph_bytes(data: bytes | memoryview) -> memoryview:
    """The serialized graph inside a serialized ONNX model: field 7 of ModelProto, a
    length-delimited protobuf field. Read without the onnx package, which the runtime does not
    import; the metadata (field 14) lies outside it, so recording the hash there leaves it valid."""
    data = memoryview(data)
    position = 0
    try:
        while position < len(data):
            key, position = _varint(data, position)
            field_number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                _, position = _varint(data, position)
            elif wire_type in (1, 5):
                position += 8 if wire_type == 1 else 4
            elif wire_type == 2:
                length, position = _varint(data, position)
                if field_number == 7:
                    if position + length > len(data):
                        break
                    return data[position:position + length]
                position += length
            else:
                break
    except IndexError:
        pass
    raise ModelFileError(f"no complete ONNX graph in these {len(data)} bytes: the file is truncated or not ONNX")


def verify_graph(path: str | Path, info: ModelInfo) -> None:
    """Check an ONNX file's graph (nodes and weights) against the hash the exporter recorded, so a
    corrupted file (bit flips, a bad copy) is refused instead of fusing wrong. Files exported
    before the hash was recorded carry none and pass."""
    if not info.graph_sha256:
        return
    actual = sha256_bytes(onnx_graph_bytes(Path(path).read_bytes()))
    if actual != info.graph_sha256:
        raise ModelFileError(f"{path} is corrupted: its graph and weights hash to {actual[:16]}..., not the "
                             f"{info.graph_sha256[:16]}... recorded when it was exported; copy or export it again")
