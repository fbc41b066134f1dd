"""Build TensorRT engines from the exporter's ONNX files (FP32, FP16 or Q/DQ INT8), for TensorRT
10.x and 11.x, with the Python API.

The network is strongly typed: precision comes from the ONNX graph (the FP16 file computes in
FP16, the Q/DQ file in INT8), which works on 10.x and is the only way on 11.x, where the FP16/INT8
builder flags and calibrators are gone. Each build has one or more optimization profiles over
height and width, a persisted timing cache (later builds on the same GPU and TensorRT are much
faster), progress bars, and optional version- or hardware-compatible engines.

The engine cache: beside ``model.engine`` the record ``model.engine.json`` holds the key (ONNX
sha256, TensorRT version, GPU name and compute capability, precision, profiles, options). A build
whose key matches an intact engine is skipped; any difference rebuilds and says why.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from mfif.errors import ConfigError, EngineBuildError, ModelFileError
from mfif.files import write_bytes_atomic
from mfif.hashing import sha256_bytes, sha256_file
from mfif.lazy import require
from mfif.progress import on_terminal
from mfif.runtime.engine_cache import (HARDWARE_LEVELS, EngineKey, EngineRecord, Profile, default_profile, load_verified,
                                  read_record, record_path, write_engine)
from mfif.runtime.model_info import ModelInfo

AXES = ("batch", "sources", "channels", "height", "width")
HARDWARE_ENUM = {"none": "NONE", "ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}
# The first TensorRT with each level (docs/tensorrt.md lists every option's minimum; tests/test_tensorrt_api.py
# checks them against the real bindings).
HARDWARE_MIN_TENSORRT = {"ampere+": "8.6", "same-cc": "10.9"}


# ------------------------------------------------------------------------------------ the ONNX side


@dataclass(frozen=True)
class OnnxFacts:
    path: Path
    sha256: str
    info: ModelInfo
    input_dims: tuple[int | None, ...]   # None where the axis is dynamic


def read_onnx(path: str | Path) -> OnnxFacts:
    """The model info the exporter wrote into the ONNX metadata and the input's dimensions."""
    onnx = require("onnx", extra="tensorrt", purpose="reading the model's metadata before a TensorRT build")
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX file
        raise ModelFileError(f"{path} is not a readable ONNX file ({exc}); export one with 'mfif export'") from exc
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    info = ModelInfo.from_metadata(metadata, str(path))
    inputs = {value.name: value for value in model.graph.input}
    if info.input_name not in inputs:
        raise ModelFileError(f"{path}: its metadata names input {info.input_name!r}, the graph has {sorted(inputs)}")
    dims = tuple(d.dim_value if d.HasField("dim_value") else None
                 for d in inputs[info.input_name].type.tensor_type.shape.dim)
    if len(dims) != 5:
        raise ModelFileError(f"{path}: input {info.input_name!r} has {len(dims)} dimensions; mfif models take "
                             "(1, K, C, H, W)")
    return OnnxFacts(path, sha256_file(path), info, dims)


def default_sizes(info: ModelInfo) -> dict[str, list[int]]:
    """The default profile's sizes as the build command's size lists."""
    profile = default_profile(info)
    (h0, w0), (h1, w1), (h2, w2) = profile.min_hw, profile.opt_hw, profile.max_hw
    return {"min_height": [h0], "opt_height": [h1], "max_height": [h2],
            "min_width": [w0], "opt_width": [w1], "max_width": [w2]}


def check_profiles_fit(profiles: list[Profile], facts: OnnxFacts) -> None:
    """Every profile must fit the ONNX input: a fixed axis must hold exactly its value."""
    for index, profile in enumerate(profiles):
        low, _, high = profile.shapes()
        for axis, fixed in enumerate(facts.input_dims):
            if fixed is None or fixed <= 0:
                continue
            if low[axis] != fixed or high[axis] != fixed:
                span = str(low[axis]) if low[axis] == high[axis] else f"{low[axis]}..{high[axis]}"
                raise ConfigError(f"profile {index} asks for {AXES[axis]} {span}, but the ONNX input "
                                  f"{facts.info.input_name!r} of {facts.path} is fixed at {fixed} on that axis")
    info = facts.info
    for profile in profiles:
        if info.sources and profile.sources != info.sources:
            raise ConfigError(f"model {info.model} takes exactly {info.sources} sources, not {profile.sources}")
        if info.channels and profile.channels != info.channels:
            raise ConfigError(f"model {info.model} takes {info.channels} channel(s), not {profile.channels}")


# ------------------------------------------------------------------------------------- the cache


@dataclass
class BuildSettings:
    profiles: list[Profile]
    timing_cache: Path | None = None      # None: no timing cache
    workspace_mib: int | None = None      # None: TensorRT's default (the GPU's memory)
    version_compatible: bool = False
    hardware_compatibility: str = "none"
    optimization_level: int = 3
    device: int = 0
    verbose: bool = False

    def validate(self) -> None:
        if not self.profiles:
            raise ConfigError("a build needs at least one profile")
        if self.hardware_compatibility not in HARDWARE_LEVELS:
            raise ConfigError(f"hardware compatibility {self.hardware_compatibility!r} is not one of "
                              f"{', '.join(HARDWARE_LEVELS)}")
        if not 0 <= self.optimization_level <= 5:
            raise ConfigError(f"builder optimization level must be 0..5, not {self.optimization_level}")
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise ConfigError(f"workspace must be at least 1 MiB, not {self.workspace_mib}")
        if self.device < 0:
            raise ConfigError(f"CUDA device index must be >= 0, not {self.device}")


def make_key(facts: OnnxFacts, tensorrt_version: str, gpu_name: str, compute_capability: str,
             settings: BuildSettings) -> EngineKey:
    return EngineKey(onnx_sha256=facts.sha256, tensorrt_version=tensorrt_version, gpu_name=gpu_name,
                     compute_capability=compute_capability, precision=facts.info.precision,
                     profiles=tuple(settings.profiles), version_compatible=settings.version_compatible,
                     hardware_compatibility=settings.hardware_compatibility,
                     optimization_level=settings.optimization_level)


def cache_status(engine_path: str | Path, wanted: EngineKey) -> list[str]:
    """Why the engine at ``engine_path`` is not the one ``wanted`` describes (empty: reuse it)."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        return [f"no engine at {engine_path}"]
    try:
        _, record = load_verified(engine_path)
    except ModelFileError as exc:
        return [str(exc)]
    return [f"{line} (cached vs wanted)" for line in record.key.differences(wanted)]


# ------------------------------------------------------------------------------------- progress


class BuildProgress:
    """Progress bars for TensorRT's build phases (nested phases get their own lines). TensorRT
    calls these from several threads. ``cancel()`` makes the next step report ask TensorRT to stop."""

    def __init__(self, file=None, enabled: bool = True) -> None:
        self._tqdm = require("tqdm", extra="tensorrt", purpose="build progress").tqdm if enabled else None
        self._file = file
        self._bars: dict[str, object] = {}
        self._depth: dict[str, int] = {}
        self._lock = threading.Lock()
        self.cancelled = False
        self.phases_seen: list[str] = []

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        with self._lock:
            depth = self._depth.get(parent_phase, -1) + 1 if parent_phase else 0
            self._depth[phase_name] = depth
            self.phases_seen.append(phase_name)
            if self._tqdm is not None:
                self._bars[phase_name] = self._tqdm(total=max(int(num_steps), 1), desc="  " * depth + phase_name,
                                                    position=depth, leave=depth == 0, file=self._file,
                                                    unit="step", dynamic_ncols=True)

    def step_complete(self, phase_name: str, step: int) -> bool:
        with self._lock:
            bar = self._bars.get(phase_name)
            if bar is not None:
                bar.n = int(step) + 1
                bar.refresh()
            return not self.cancelled

    def phase_finish(self, phase_name: str) -> None:
        with self._lock:
            bar = self._bars.pop(phase_name, None)
            self._depth.pop(phase_name, None)
            if bar is not None:
                bar.n = bar.total
                bar.close()

    def cancel(self) -> None:
        self.cancelled = True

    def close(self) -> None:
        with self._lock:
            for bar in self._bars.values():
                bar.close()
            self._bars.clear()


def _progress_monitor(trt, progress: BuildProgress):
    """TensorRT's IProgressMonitor, forwarding to ``progress``. An exception must not escape into
    TensorRT: a failing progress display cancels the build instead."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            try:
                progress.phase_start(phase_name, parent_phase, num_steps)
            except BaseException:  # noqa: BLE001 - see the docstring
                progress.cancel()

        def step_complete(self, phase_name, step):
            try:
                return progress.step_complete(phase_name, step)
            except BaseException:  # noqa: BLE001
                progress.cancel()
                return False

        def phase_finish(self, phase_name):
            try:
                progress.phase_finish(phase_name)
            except BaseException:  # noqa: BLE001
                progress.cancel()

    return Monitor()


# ----------------------------------------------------------------------------------------- build


@dataclass
class BuildResult:
    engine_path: Path
    record: EngineRecord
    rebuilt: bool
    reasons: list[str] = field(default_factory=list)   # why it was (re)built
    seconds: float = 0.0


def default_timing_cache(gpu_slug: str, compute_capability: str, tensorrt_version: str) -> Path:
    """One timing cache per GPU model and TensorRT version, shared by every model built there."""
    from mfif.paths import cache_dir

    return cache_dir() / f"timing-{gpu_slug}-sm{compute_capability}-trt{tensorrt_version}.cache"


def attach_timing_cache(config, path: Path | None, log=print):
    """Give the builder config the timing cache stored at ``path`` (None: no cache). A file that
    TensorRT cannot read (corrupt, truncated, not a timing cache) or that another GPU or TensorRT
    version wrote is named in a message and replaced: the build starts from an empty cache, which is
    written back to ``path`` afterwards. Returns the cache attached, or None when there is none."""
    if path is None:
        return None
    blob = path.read_bytes() if path.is_file() else b""
    if blob:
        try:
            cache = config.create_timing_cache(blob)
            if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
                return cache
            why = "TensorRT refused it: another GPU or TensorRT version wrote it, or it is damaged"
        except Exception as exc:  # the bindings raise on data they cannot parse
            why = f"TensorRT could not read it: {exc}"
        log(f"timing cache {path} ({len(blob)} bytes) is not usable here ({why}); building with a new one that "
            "replaces it")
    try:
        cache = config.create_timing_cache(b"")
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return cache
        why = "no reason given"
    except Exception as exc:  # noqa: BLE001 - a build without a timing cache is only slower
        why = str(exc)
    log(f"TensorRT could not make an empty timing cache ({why}); building without one")
    return None


def parse_errors(parser) -> list[str]:
    """The ONNX parser's errors, one line each, with the node they concern."""
    lines = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        where = []
        node = error.node()
        if node >= 0:
            where.append(f"node {node}")
        for attr in ("node_name", "node_operator"):
            getter = getattr(error, attr, None)
            if getter is not None and getter():
                where.append(getter())
        place = f" ({', '.join(where)})" if where else ""
        lines.append(f"  error {i + 1}{place}: {error.desc()} [{error.code()}]")
    return lines


def build_engine(onnx_path: str | Path, engine_path: str | Path, settings: BuildSettings, force: bool = False,
                 progress: BuildProgress | None = None, log=print) -> BuildResult:
    """Build ``engine_path`` from ``onnx_path`` unless an intact engine with the same key is there:
    parse the ONNX file, configure the builder, build, write the engine, its record and the timing
    cache."""
    from mfif.runtime import cuda_buffers as cb
    from mfif.runtime.backends.tensorrt import import_tensorrt, make_logger

    settings.validate()
    facts = read_onnx(onnx_path)
    check_profiles_fit(settings.profiles, facts)
    trt = import_tensorrt()
    gpu = cb.gpu_info(settings.device)
    _check_hardware_compatibility(settings, gpu)
    engine_path = Path(engine_path)
    wanted = make_key(facts, trt.__version__, gpu.name, gpu.compute_capability, settings)
    reasons = ["--force"] if force else cache_status(engine_path, wanted)
    if not reasons:
        return BuildResult(engine_path, read_record(engine_path), rebuilt=False)
    log(f"building {engine_path} because: " + "; ".join(reasons))
    cb.set_device(settings.device)
    logger = make_logger(trt, settings.verbose)
    builder, network, parser = _parse(trt, logger, facts.path)
    config = _configure(trt, logger, builder, settings, facts.info.input_name)
    timing_cache = attach_timing_cache(config, settings.timing_cache, log)
    start = time.perf_counter()
    try:
        # Bars on a terminal only (mfif.progress): a log gets the lines above and below.
        plan = _build(trt, cb, builder, network, config, settings.device, progress or BuildProgress(enabled=on_terminal()))
    except Exception as exc:  # TensorRT raises many types here; name the file and the cause
        raise EngineBuildError(f"TensorRT build of {facts.path} failed: {exc}") from exc
    seconds = time.perf_counter() - start
    del parser  # it owns the network's weights: kept until the build is done
    if plan is None:
        ranges = "; ".join(p.describe() for p in settings.profiles)
        raise EngineBuildError(f"TensorRT could not build an engine from {facts.path} ({ranges}): "
                               f"{logger.take_errors()}")
    if timing_cache is not None:
        write_bytes_atomic(settings.timing_cache, memoryview(config.get_timing_cache().serialize()))
    record = _write(engine_path, memoryview(plan), wanted, facts, settings, seconds)
    log(f"wrote {engine_path} ({record.engine_bytes / 1e6:.1f} MB, {seconds:.0f} s) and {record_path(engine_path).name}")
    return BuildResult(engine_path, record, rebuilt=True, reasons=reasons, seconds=seconds)


def _check_hardware_compatibility(settings: BuildSettings, gpu) -> None:
    if settings.hardware_compatibility != "none" and gpu.integrated:
        raise ConfigError(f"hardware-compatible engines are not supported on {gpu.name} (Jetson/JetPack); build "
                          "without --hardware-compatible, on the device that runs the engine")
    if settings.hardware_compatibility == "ampere+" and tuple(map(int, gpu.compute_capability.split("."))) < (8, 0):
        raise ConfigError(f"--hardware-compatible ampere+ needs an Ampere or newer GPU to build on; {gpu.name} has "
                          f"compute capability {gpu.compute_capability}")


def _parse(trt, logger, path: Path):
    """TensorRT's builder, and the network its ONNX parser read from ``path`` (strongly typed: the
    precision comes from the file)."""
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 11:  # 11.x is always strongly typed and ignores the flag
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        raise EngineBuildError(f"TensorRT {trt.__version__} could not parse {path}:\n" + "\n".join(parse_errors(parser)))
    return builder, network, parser


def _configure(trt, logger, builder, settings: BuildSettings, input_name: str):
    """The builder config: workspace, optimization level, one optimization profile per
    ``settings.profiles`` entry, version and hardware compatibility."""
    config = builder.create_builder_config()
    if settings.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    config.builder_optimization_level = settings.optimization_level
    for profile in settings.profiles:
        trt_profile = builder.create_optimization_profile()
        trt_profile.set_shape(input_name, *profile.shapes())
        if config.add_optimization_profile(trt_profile) < 0:
            raise EngineBuildError(f"TensorRT rejected the profile {profile.describe()}: {logger.take_errors()}")
    if settings.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if settings.hardware_compatibility != "none":
        level = getattr(trt.HardwareCompatibilityLevel, HARDWARE_ENUM[settings.hardware_compatibility], None)
        if level is None:
            raise ConfigError(f"TensorRT {trt.__version__} has no hardware compatibility level "
                              f"{settings.hardware_compatibility!r}: it needs TensorRT "
                              f"{HARDWARE_MIN_TENSORRT[settings.hardware_compatibility]} or newer; use "
                              "'ampere+' or build on each GPU model (see docs/tensorrt.md)")
        config.hardware_compatibility_level = level
    return config


def _build(trt, cb, builder, network, config, device: int, progress: BuildProgress):
    """The serialized engine (None when TensorRT could not build one; its exception when it
    raised). The build runs in a worker thread, on ``device``, so that Ctrl-C in this thread can
    cancel it cleanly."""
    monitor = _progress_monitor(trt, progress)  # referenced here for as long as TensorRT calls it
    config.progress_monitor = monitor

    def build_on_device():
        cb.use_device(device)  # the CUDA device is per thread: this one builds
        return builder.build_serialized_network(network, config)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tensorrt-build") as pool:
        future = pool.submit(build_on_device)
        try:
            while not future.done():
                wait([future], timeout=0.2)
        except KeyboardInterrupt:
            progress.cancel()  # TensorRT stops at its next step report; leaving the pool waits for it
            raise
        finally:
            progress.close()
    return future.result()


def _write(engine_path: Path, data: memoryview, key: EngineKey, facts: OnnxFacts, settings: BuildSettings,
           seconds: float) -> EngineRecord:
    """The engine and, beside it, its record (the key it was built for and how)."""
    first = settings.profiles[0]
    info = dataclasses.replace(facts.info, sources=first.sources, channels=first.channels)
    record = EngineRecord(key, data.nbytes, sha256_bytes(data), info, str(facts.path),
                          {"seconds": round(seconds, 1), "timing_cache": str(settings.timing_cache or ""),
                           "workspace_mib": settings.workspace_mib, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    write_engine(engine_path, data, record)
    return record
