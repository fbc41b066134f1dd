"""Frame sizes on the command line: one spelling everywhere, WIDTHxHEIGHT as cameras and trtexec
users write it (640x480), or a name (480p, 720p, 1080p, 2160p)."""

from __future__ import annotations

from mfif.errors import ConfigError

RESOLUTIONS = {"480p": (480, 640), "720p": (720, 1280), "1080p": (1080, 1920), "2160p": (2160, 3840)}


def parse_resolution(text: str, *, option: str = "resolution", minimum: int = 8) -> tuple[int, int]:
    """'640x480' (width x height) or a name from RESOLUTIONS -> (height, width)."""
    text = text.strip().lower()
    if text in RESOLUTIONS:
        return RESOLUTIONS[text]
    try:
        width, height = (int(part) for part in text.split("x"))
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not WIDTHxHEIGHT (e.g. 640x480) "
                          f"nor one of {', '.join(RESOLUTIONS)}") from None
    if width < minimum or height < minimum:
        raise ConfigError(f"{option} {text!r} is too small: width and height must be >= {minimum}")
    return height, width
