"""What a model file says about itself. The exporter writes these keys into the ONNX file's
metadata (and the TensorRT builder beside the engine); the runtime reads them instead of guessing."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from mfif.errors import ModelFileError

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
    num_inputs: int = 0             # exact number of sources; 0 means any N >= 2
    size_multiple: int = 1          # H and W must be multiples of this (the runtime pads)
    channel_order: str = "BGR"
    value_range: tuple[float, float] = (0.0, 1.0)
    batch: int = 1                  # exported with batch 1
    checkpoint_sha256: str = ""
    config: dict = field(default_factory=dict)

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
