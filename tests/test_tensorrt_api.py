"""The TensorRT API that mfif uses exists in TensorRT 10.3 (JetPack 6.1), the newest 10.x and the
newest 11.x, checked against the real Python bindings without a GPU (issue 14, part 3).

The bindings wheels (about 1.3 MB each) come from PyPI once into a cache folder
(``$MFIF_TEST_WHEELS`` or ``~/.cache/mfif-test-wheels``); their native libraries (libnvinfer and
friends, gigabytes: the x86-64 ``tensorrt-cuXX-libs`` wheels on PyPI download them from NVIDIA's
own index, which a test machine often cannot reach) are replaced by stand-ins that the C compiler
builds here, exporting the symbols the bindings' extension module needs to load
(``nm -D --undefined-only``).
Nothing is run through them: the bindings are imported and inspected, which is all the check
needs. Then tensorrt_api_probe.py compares every TensorRT name the project's source uses (found
with ``ast``) with what each version offers. Skips with the reason when offline or without a C
compiler.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).resolve().parent / "tensorrt_api_probe.py"
CACHE = Path(os.environ.get("MFIF_TEST_WHEELS") or Path.home() / ".cache" / "mfif-test-wheels")
# JetPack 6.1/6.2's TensorRT, the newest 10.x, the newest 11.x (the CUDA 13 build the extras pick).
VERSIONS = [("tensorrt-cu12-bindings", "10.3.0"), ("tensorrt-cu12-bindings", "10.16.1.11"),
            ("tensorrt-cu13-bindings", "11.4.0.106")]
# Every project file that calls TensorRT (export/build_cli.py reads only trt.__version__, and its
# argparse `parser` is not TensorRT's).
SOURCES = ["runtime/backends/tensorrt.py", "export/tensorrt_builder.py"]


def wheel_for(package: str, version: str) -> Path:
    """The cached bindings wheel for this Python, downloaded once with pip."""
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    pattern = f"{package.replace('-', '_')}-{version}-{tag}-*.whl"
    found = sorted(CACHE.glob(pattern))
    if found:
        return found[0]
    CACHE.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                             "--disable-pip-version-check", "-q", "-d", str(CACHE), f"{package}=={version}"],
                            capture_output=True, text=True, timeout=300)
    found = sorted(CACHE.glob(pattern))
    if not found:
        pytest.skip(f"could not download {package}=={version} for {tag} into {CACHE} (offline?): "
                    f"{(result.stderr or result.stdout).strip()[-300:]}")
    return found[0]


def undefined_tensorrt_symbols(extension: Path) -> list[str]:
    """Symbols the extension module takes from TensorRT's libraries: undefined, without a symbol
    version (glibc and libstdc++ symbols carry one), not Python's, not already in this process."""
    import ctypes

    listing = subprocess.run(["nm", "-D", "--undefined-only", str(extension)], capture_output=True, text=True,
                             check=True).stdout
    here = ctypes.CDLL(None)
    symbols = []
    for line in listing.splitlines():
        name = line.split()[-1]
        if "@" in name or name.startswith(("Py", "_Py")) or line.split()[0] == "w" or hasattr(here, name):
            continue
        symbols.append(name)
    return symbols


def needed_libraries(extension: Path) -> list[str]:
    text = subprocess.run(["readelf", "-d", str(extension)], capture_output=True, text=True, check=True).stdout
    names = [line.split("[", 1)[1].split("]", 1)[0] for line in text.splitlines() if "(NEEDED)" in line]
    return [name for name in names if name.startswith("libnv")]


def bindings_with_stand_ins(wheel: Path, folder: Path) -> Path:
    """Unpack the wheel and build stand-in libraries beside its extension module (it finds them
    through its $ORIGIN run path)."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(folder)
    package = folder / "tensorrt_bindings"
    [extension] = [p for p in package.iterdir() if p.name.startswith("tensorrt") and ".so" in p.name]
    libraries = needed_libraries(extension)
    assert libraries, f"{extension} needs no TensorRT library? (readelf found none)"
    source = folder / "stand_in.c"
    source.write_text("".join(f"void *{name}(void) {{ return 0; }}\n" for name in undefined_tensorrt_symbols(extension)))
    empty = folder / "empty.c"
    empty.write_text("int mfif_stand_in;\n")
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    for index, library in enumerate(libraries):   # all symbols in the first, the others only have to exist
        subprocess.run([compiler, "-shared", "-fPIC", "-o", str(package / library), f"-Wl,-soname,{library}",
                        str(source if index == 0 else empty)], check=True, capture_output=True, text=True)
    return folder


@pytest.fixture(scope="module")
def tools():
    missing = [tool for tool in ("nm", "readelf") if shutil.which(tool) is None]
    if not (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")):
        missing.append("a C compiler (cc)")
    if missing:
        pytest.skip(f"needs {', '.join(missing)} to build stand-ins for TensorRT's native libraries")


@pytest.mark.parametrize("package, version", VERSIONS, ids=[v for _, v in VERSIONS])
def test_every_tensorrt_name_mfif_uses_exists(tools, tmp_path, package, version):
    folder = bindings_with_stand_ins(wheel_for(package, version), tmp_path / "bindings")
    run = subprocess.run([sys.executable, str(PROBE), str(folder), *SOURCES], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, f"the bindings of TensorRT {version} did not import or the probe failed:\n{run.stderr[-2000:]}"
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["version"] == version
    checked = report["checked"]
    # The probe really looked: the calls at the heart of building and running an engine are among them.
    for essential in ("tensorrt.Runtime", "IExecutionContext.execute_async_v3", "IExecutionContext.set_tensor_address",
                      "IBuilderConfig.set_timing_cache(ignore_mismatch=)", "Builder.build_serialized_network",
                      "ICudaEngine.get_tensor_profile_shape", "Logger implements ILogger.log"):
        assert essential in checked, f"{essential} was not checked; checked: {checked}"
    assert report["missing"] == [], f"TensorRT {version} lacks what mfif uses: {report['missing']}"


def test_the_probe_notices_a_name_that_does_not_exist(tools, tmp_path):
    """The check can fail: a source using a method TensorRT does not have is reported."""
    package, version = VERSIONS[-1]
    folder = bindings_with_stand_ins(wheel_for(package, version), tmp_path / "bindings")
    bad = tmp_path / "bad.py"
    bad.write_text("def go(trt, config, builder):\n"
                   "    config.set_flag(trt.BuilderFlag.FP16_EVERYWHERE)\n"
                   "    config.set_timing_cache(None, ignore_mismatches=True)\n"
                   "    builder.build_engine_now(None)\n"
                   "    class Monitor(trt.IProgressMonitor):\n"
                   "        def phase_start(self, name, parent, steps): pass\n")
    run = subprocess.run([sys.executable, str(PROBE), str(folder), str(bad)], capture_output=True, text=True,
                         timeout=120)
    missing = " | ".join(json.loads(run.stdout.strip().splitlines()[-1])["missing"])
    assert "tensorrt.BuilderFlag.FP16_EVERYWHERE" in missing
    assert "IBuilderConfig.set_timing_cache(ignore_mismatches=)" in missing
    assert "Builder.build_engine_now" in missing
    assert "Monitor implements IProgressMonitor.step_complete" in missing
