"""TensorRT engine profiles and the engine's cache key, shared by the builder (``export/``) and the
runtime backend. Plain Python: nothing here imports TensorRT or CUDA.

An engine ``model.engine`` has a record ``model.engine.json`` beside it holding its cache key (the
ONNX file's sha256, TensorRT version, GPU name and compute capability, precision, profiles and the
compatibility options), the engine file's own size and sha256, and the model's ``ModelInfo``
(engines carry no ONNX metadata). The runtime checks the record before it deserializes anything;
the builder compares it with what it would build and rebuilds when they differ.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mfif.errors import ConfigError, InputError, ModelFileError
from mfif.files import write_bytes_atomic
from mfif.hashing import sha256_bytes
from mfif.runtime.model_info import ModelInfo

RECORD_FORMAT = "mfif-engine/1"
RECORD_SUFFIX = ".json"
HARDWARE_LEVELS = ("none", "same-cc", "ampere+")  # TensorRT's HardwareCompatibilityLevel, in words
# The default profile covers the common camera modes from VGA (480x640) to 1080p (1080x1920), tuned for 720p.
DEFAULT_MIN_HW = (480, 640)
DEFAULT_OPT_HW = (720, 1280)
DEFAULT_MAX_HW = (1080, 1920)


# ----------------------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class Profile:
    """One optimization profile of the input ``sources`` (1, K, C, H, W): H and W range over
    min..max and the kernels are tuned for opt; K (sources) and C (channels) are fixed."""

    min_hw: tuple[int, int]
    opt_hw: tuple[int, int]
    max_hw: tuple[int, int]
    sources: int = 2
    channels: int = 3

    def __post_init__(self) -> None:
        for name in ("min_hw", "opt_hw", "max_hw"):
            value = getattr(self, name)
            if not (isinstance(value, (tuple, list)) and len(value) == 2):
                raise ConfigError(f"profile {name} must be (height, width), not {value!r}")
            object.__setattr__(self, name, (int(value[0]), int(value[1])))

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) shapes of the input tensor, as TensorRT's ``set_shape`` takes them."""
        head = (1, self.sources, self.channels)
        return head + self.min_hw, head + self.opt_hw, head + self.max_hw

    def contains(self, shape: tuple[int, ...]) -> bool:
        batch, sources, channels, height, width = shape
        return (batch == 1 and sources == self.sources and channels == self.channels
                and self.min_hw[0] <= height <= self.max_hw[0] and self.min_hw[1] <= width <= self.max_hw[1])

    def describe(self) -> str:
        (h0, w0), (h1, w1), (h2, w2) = self.min_hw, self.opt_hw, self.max_hw
        return f"{h0}x{w0} .. {h2}x{w2} (HxW, tuned for {h1}x{w1}), {self.sources} sources x {self.channels} channels"

    def validate(self, size_multiple: int = 1) -> None:
        """min <= opt <= max per dimension, every size positive and a multiple of ``size_multiple``."""
        size_multiple = max(1, int(size_multiple))
        if self.sources < 1 or self.channels < 1:
            raise ConfigError(f"profile needs at least 1 source and 1 channel, not sources={self.sources}, "
                              f"channels={self.channels}")
        for axis, name in ((0, "height"), (1, "width")):
            low, opt, high = self.min_hw[axis], self.opt_hw[axis], self.max_hw[axis]
            if low < 1:
                raise ConfigError(f"profile min {name} must be at least 1, not {low}")
            if not low <= opt <= high:
                raise ConfigError(f"profile {name} must satisfy min <= opt <= max, got min={low}, opt={opt}, "
                                  f"max={high}")
            for kind, value in (("min", low), ("opt", opt), ("max", high)):
                if value % size_multiple:
                    raise ConfigError(f"profile {kind} {name} {value} is not a multiple of {size_multiple}, which "
                                      f"this model needs (the runtime pads frames to it); use "
                                      f"{round_up(value, size_multiple)}")

    def to_dict(self) -> dict:
        return {"min": list(self.min_hw), "opt": list(self.opt_hw), "max": list(self.max_hw),
                "sources": self.sources, "channels": self.channels}

    @classmethod
    def from_dict(cls, data: dict) -> "Profile":
        try:
            return cls(tuple(data["min"]), tuple(data["opt"]), tuple(data["max"]), int(data["sources"]),
                       int(data["channels"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"bad profile entry {data!r} in an engine record: {exc}") from exc

    @classmethod
    def from_shapes(cls, low: tuple[int, ...], opt: tuple[int, ...], high: tuple[int, ...]) -> "Profile":
        """From the (min, opt, max) 5-D shapes an engine reports for its input."""
        if not (len(low) == len(opt) == len(high) == 5) or low[:3] != high[:3] or low[:3] != opt[:3] or low[0] != 1:
            raise ModelFileError(f"engine input profile {tuple(low)} .. {tuple(high)} is not (1, K, C, H, W) with "
                                 "fixed K and C; it was not built by mfif build")
        return cls(tuple(low[3:]), tuple(opt[3:]), tuple(high[3:]), int(low[1]), int(low[2]))


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``value``."""
    multiple = max(1, int(multiple))
    return -(-int(value) // multiple) * multiple


def default_profile(info: ModelInfo, sources: int | None = None, channels: int | None = None) -> Profile:
    """The default profile for a model, its sizes rounded up to the multiple the runtime pads
    frames to (1080p frames arrive as 1088 rows with the shipped model)."""
    up = lambda hw: (round_up(hw[0], info.pad_to), round_up(hw[1], info.pad_to))  # noqa: E731
    return Profile(up(DEFAULT_MIN_HW), up(DEFAULT_OPT_HW), up(DEFAULT_MAX_HW),
                   sources or info.sources or 2, channels or info.channels or 3)


def make_profiles(min_h: list[int], opt_h: list[int], max_h: list[int], min_w: list[int], opt_w: list[int],
                  max_w: list[int], sources: int, channels: int, size_multiple: int = 1) -> list[Profile]:
    """Profiles from per-dimension value lists: each list holds one value (shared by every profile)
    or one value per profile. Validates every profile against ``size_multiple``."""
    lists = {"min height": min_h, "opt height": opt_h, "max height": max_h,
             "min width": min_w, "opt width": opt_w, "max width": max_w}
    count = max(len(values) for values in lists.values())
    for name, values in lists.items():
        if len(values) not in (1, count):
            raise ConfigError(f"{name} has {len(values)} values but another size has {count}: give each size "
                              f"either one value (shared by all profiles) or {count} (one per profile)")
    pick = {name: values * count if len(values) == 1 else list(values) for name, values in lists.items()}
    profiles = []
    for i in range(count):
        profile = Profile((pick["min height"][i], pick["min width"][i]), (pick["opt height"][i], pick["opt width"][i]),
                          (pick["max height"][i], pick["max width"][i]), sources, channels)
        try:
            profile.validate(size_multiple)
        except ConfigError as exc:
            raise ConfigError(f"profile {i}: {exc}" if count > 1 else str(exc)) from None
        profiles.append(profile)
    if len(set(profiles)) != len(profiles):
        raise ConfigError("two profiles are identical; drop the duplicate")
    return profiles


def choose_profile(profiles: list[Profile], shape: tuple[int, ...]) -> int:
    """Index of the profile that takes ``shape`` (1, K, C, H, W): among those that contain it, the
    one whose opt size is nearest in pixel-count ratio (kernels are tuned for opt). Out of every range: an InputError
    that names the ranges."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 5:
        raise InputError(f"the engine takes sources of shape (1, K, C, H, W), not {shape}")
    fitting = [i for i, profile in enumerate(profiles) if profile.contains(shape)]
    if not fitting:
        ranges = "; ".join(f"profile {i}: {p.describe()}" for i, p in enumerate(profiles))
        _, sources, channels, height, width = shape
        raise InputError(f"a frame of {height}x{width} (HxW, after padding) with {sources} sources x {channels} "
                         f"channels is outside the engine's profiles ({ranges}). Resize the frames, or rebuild the "
                         "engine with a range that covers them (mfif build --min-height/--max-height/--min-width/"
                         "--max-width, --sources, --channels)")

    def distance(i: int) -> float:  # how many times larger or smaller than opt, by pixel count
        opt_h, opt_w = profiles[i].opt_hw
        return abs(math.log(shape[3] * shape[4] / (opt_h * opt_w)))

    return min(fitting, key=lambda i: (distance(i), i))


# ---------------------------------------------------------------------------------------- cache key


@dataclass(frozen=True)
class EngineKey:
    """What an engine was built from and for. Any difference means another engine."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str          # "8.7"
    precision: str                   # fp32, fp16, int8: from the ONNX (strongly typed build)
    profiles: tuple[Profile, ...]
    version_compatible: bool = False
    hardware_compatibility: str = "none"
    optimization_level: int = 3

    def to_dict(self) -> dict:
        out = asdict(self)
        out["profiles"] = [p.to_dict() for p in self.profiles]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "EngineKey":
        try:
            values = dict(data)
            values["profiles"] = tuple(Profile.from_dict(p) for p in values["profiles"])
            return cls(**values)
        except (KeyError, TypeError) as exc:
            raise ModelFileError(f"engine record key {data!r} is incomplete or has unknown fields: {exc}") from exc

    def differences(self, other: "EngineKey") -> list[str]:
        """One line per field that differs, naming both values (self first, then other)."""
        lines = []
        for name in self.__dataclass_fields__:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                if name == "profiles":
                    mine = "; ".join(p.describe() for p in mine)
                    theirs = "; ".join(p.describe() for p in theirs)
                lines.append(f"{name}: {mine} vs {theirs}")
        return lines


@dataclass
class EngineRecord:
    """The JSON file beside an engine."""

    key: EngineKey
    engine_bytes: int
    engine_sha256: str
    model_info: ModelInfo
    onnx_path: str = ""
    build: dict = field(default_factory=dict)   # seconds, timing cache, tool versions: informative only

    def to_dict(self) -> dict:
        return {"format": RECORD_FORMAT, "key": self.key.to_dict(),
                "engine": {"bytes": self.engine_bytes, "sha256": self.engine_sha256},
                "model_info": self.model_info.to_metadata(), "onnx": self.onnx_path, "build": self.build}

    @classmethod
    def from_dict(cls, data: dict, source: str = "engine record") -> "EngineRecord":
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ModelFileError(f"{source} is not an mfif engine record (format {found!r}, expected "
                                 f"{RECORD_FORMAT!r}); rebuild the engine with 'mfif build'")
        try:
            engine = data["engine"]
            return cls(EngineKey.from_dict(data["key"]), int(engine["bytes"]), str(engine["sha256"]),
                       ModelInfo.from_metadata(data["model_info"], source), str(data.get("onnx", "")),
                       dict(data.get("build", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelFileError(f"{source} is incomplete ({exc!r}); rebuild the engine with 'mfif build'") from exc


def record_path(engine_path: str | Path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + RECORD_SUFFIX)


def read_record(engine_path: str | Path) -> EngineRecord:
    path = record_path(engine_path)
    if not path.is_file():
        raise ModelFileError(f"engine {engine_path} has no record {path} beside it (the cache key and model info "
                             "that mfif build writes); rebuild the engine with 'mfif build'")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"engine record {path} is unreadable ({exc}); "
                             "rebuild the engine with 'mfif build'") from exc
    return EngineRecord.from_dict(data, str(path))


def write_engine(engine_path: str | Path, plan: bytes | memoryview, record: EngineRecord) -> Path:
    """Store the engine and then its record (a crash in between leaves a record that no longer
    matches, so the engine is rebuilt, never trusted)."""
    engine_path = Path(engine_path)
    write_bytes_atomic(engine_path, plan)
    write_bytes_atomic(record_path(engine_path), json.dumps(record.to_dict(), indent=2).encode("utf-8"))
    return engine_path


def load_verified(engine_path: str | Path) -> tuple[bytes, EngineRecord]:
    """The engine's bytes and record, after checking that the file is the one the record describes
    (size and sha256), so a truncated or corrupted file never reaches TensorRT's deserializer."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise ModelFileError(f"engine file not found: {engine_path}")
    record = read_record(engine_path)
    data = engine_path.read_bytes()
    if len(data) != record.engine_bytes:
        raise ModelFileError(f"engine {engine_path} has {len(data)} bytes but its record says {record.engine_bytes}: "
                             "the file is truncated or was replaced; rebuild it with 'mfif build'")
    digest = sha256_bytes(data)
    if digest != record.engine_sha256:
        raise ModelFileError(f"engine {engine_path} is corrupted: sha256 {digest[:16]}... differs from its record's "
                             f"{record.engine_sha256[:16]}...; rebuild it with 'mfif build'")
    return data, record


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def runtime_problems(key: EngineKey, tensorrt_version: str, gpu_name: str, compute_capability: str) -> list[str]:
    """Why an engine cannot run with this TensorRT on this GPU (empty when it can). Engines are
    not portable across TensorRT versions or GPUs unless built version- or hardware-compatible."""
    problems = []
    if key.version_compatible:
        if _version_tuple(tensorrt_version) < _version_tuple(key.tensorrt_version):
            problems.append(f"TensorRT {tensorrt_version} here is older than {key.tensorrt_version}, which built this "
                            "version-compatible engine (it runs on the same or later versions only)")
    elif tensorrt_version != key.tensorrt_version:
        problems.append(f"built with TensorRT {key.tensorrt_version}, this is TensorRT {tensorrt_version}")
    here, built = _version_tuple(compute_capability), _version_tuple(key.compute_capability)
    level = key.hardware_compatibility
    if level == "ampere+":
        if here < (8, 0):
            problems.append(f"this hardware-compatible (Ampere and newer) engine needs compute capability >= 8.0; "
                            f"{gpu_name} has {compute_capability}")
    elif here != built:
        problems.append(f"built for compute capability {key.compute_capability} ({key.gpu_name}), this GPU is "
                        f"{gpu_name} with {compute_capability}")
    elif level == "none" and gpu_name != key.gpu_name:
        problems.append(f"built on {key.gpu_name}, this GPU is {gpu_name} (same compute capability "
                        f"{compute_capability}: kernels were tuned for the other model; build with "
                        "--hardware-compatible same-cc to share one engine between them)")
    return problems
