"""Checkpoints as safetensors (no pickle), with the model name and config inside, so a file alone
rebuilds its model. Extra tensors (for example the optimizer state for resuming) are stored under
the ``extra/`` prefix; plain string metadata (epoch, validation scores) rides along."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from mfif.errors import ModelFileError
from mfif.files import write_bytes_atomic
from mfif.hashing import sha256_file
from mfif.train.models import build_model

FORMAT_VERSION = "1"
EXTRA_PREFIX = "extra/"


@dataclass
class Checkpoint:
    model: nn.Module
    metadata: dict[str, str] = field(default_factory=dict)
    extra_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    sha256: str = ""


def save_checkpoint(path: str | Path, model: nn.Module, metadata: dict[str, str] | None = None,
                    extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write atomically (never a half-written checkpoint under the real name, never an earlier
    one lost to a failed write), readable by others like any file the project writes."""
    from safetensors.torch import save

    path = Path(path)
    tensors = {name: value.detach().contiguous().cpu() for name, value in model.state_dict().items()}
    for name, value in (extra_tensors or {}).items():
        tensors[EXTRA_PREFIX + name] = value.detach().contiguous().cpu()
    header = {str(k): str(v) for k, v in (metadata or {}).items()}
    header.update({"mfif.format": FORMAT_VERSION, "mfif.model": model.name, "mfif.config": json.dumps(model.config)})
    # safetensors' own save_file creates its file 0600; bytes through the project's writer get 0644.
    return write_bytes_atomic(path, save(tensors, metadata=header))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load and rebuild a model; a missing, truncated or foreign file is a ModelFileError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"checkpoint {path} ({path.stat().st_size} bytes) is not a readable safetensors "
                             f"file ({exc}); it may be truncated or corrupted: re-download or re-train it") from exc
    if "mfif.model" not in metadata or "mfif.config" not in metadata:
        raise ModelFileError(f"checkpoint {path} has no mfif model name/config in its metadata "
                             f"(keys: {sorted(metadata)}); it was not written by mfif train")
    model = build_model(metadata["mfif.model"], **json.loads(metadata["mfif.config"]))
    state = {k: v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIX)}
    extra = {k[len(EXTRA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EXTRA_PREFIX)}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"checkpoint {path} does not match model {metadata['mfif.model']} "
                             f"with config {metadata['mfif.config']}: {exc}") from exc
    return Checkpoint(model.eval(), metadata, extra, sha256_file(path))
