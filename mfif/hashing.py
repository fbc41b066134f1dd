"""File hashes: a checkpoint's and an ONNX file's sha256 tie exported models and engines to
what they were made from."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
