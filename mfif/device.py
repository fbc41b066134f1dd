"""The one way to name a device, the same in the API and on the command line: a string,
'auto' (a GPU when one is usable, else the CPU), 'cpu', 'cuda' (the default GPU) or 'cuda:N'."""

from __future__ import annotations

from dataclasses import dataclass

from mfif.errors import ConfigError

DEVICE_HELP = "auto (a GPU when one is usable, else the CPU), cpu, cuda or cuda:N (default: auto)"


@dataclass(frozen=True)
class Device:
    kind: str                 # 'auto', 'cpu' or 'cuda'
    index: int | None = None  # the GPU index of 'cuda:N'; None for the default GPU

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse_device(device: str) -> Device:
    """``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'`` as a :class:`Device`; anything else is a
    ConfigError that names it."""
    if isinstance(device, str):
        text = device.strip().lower()
        kind, colon, index = text.partition(":")
        if text in ("auto", "cpu", "cuda"):
            return Device(text)
        if kind == "cuda" and colon and index.isdigit():
            return Device("cuda", int(index))
    raise ConfigError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N' (N = the GPU index)")
