"""One `mfif` namespace: the repository's stage folders are mapped into it by pyproject.toml, the
wheel installs nothing else, and every way of importing sees exactly one copy of each module."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STAGES = ("runtime", "train", "export", "calibration", "evaluation", "benchmarks")


def test_every_module_loads_once_under_the_mfif_name_only():
    # Run from the repository root, where `python -m pytest` and `torchrun` put the folders
    # themselves on sys.path: a module imported as both `runtime.x` and `mfif.runtime.x` would be
    # two copies with two sets of globals.
    code = (
        "import importlib, pkgutil, sys\n"
        f"stages = {STAGES!r}\n"
        "failed = []\n"
        "for stage in stages:\n"
        "    package = importlib.import_module('mfif.' + stage)\n"
        "    for module in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + '.'):\n"
        "        try:\n"
        "            importlib.import_module(module.name)\n"
        "        except ImportError as exc:  # an optional extra that is not installed (tensorrt)\n"
        "            failed.append(module.name)\n"
        "roots = tuple(sys.argv[1] + '/' + folder + '/' for folder in ('mfif',) + stages)\n"
        "files = {}\n"
        "for name, module in list(sys.modules.items()):\n"
        "    path = getattr(module, '__file__', None)\n"
        "    if path and path.startswith(roots):\n"
        "        files.setdefault(path, []).append(name)\n"
        "twice = {path: names for path, names in files.items() if len(names) > 1}\n"
        "outside = sorted(name for names in files.values() for name in names if not name.startswith('mfif'))\n"
        "print(len(files), twice, outside, failed)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, timeout=300,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr
    count, twice, outside, failed = result.stdout.strip().split(" ", 3)
    assert int(count) > 40, result.stdout          # the walk really imported the project
    assert (twice, outside) == ("{}", "[]"), result.stdout
    assert all(name.startswith("mfif.runtime.backends") for name in eval(failed)), failed


def test_public_api_names_one_fuser():
    import mfif
    from mfif.runtime import Fuser

    assert mfif.Fuser is Fuser
    with pytest.raises(AttributeError, match="no attribute 'Fusr'"):
        mfif.Fusr  # noqa: B018


def test_wheel_installs_only_mfif_with_the_shipped_models(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source)
    for folder in ("mfif", *STAGES):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("mfif-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"mfif", wheel.name.split("-py3")[0] + ".dist-info"}
    shipped = {name for name in names if name.endswith((".onnx", ".safetensors"))}
    assert {"mfif/runtime/models/focusmap.onnx", "mfif/runtime/models/focusmap_fp16.onnx",
            "mfif/runtime/models/focusmap_int8.onnx", "mfif/train/weights/focusmap.safetensors",
            "mfif/train/weights/xu2018.safetensors", "mfif/train/weights/mustafa2019.safetensors"} <= shipped

    # Installed on its own (not from the repository), it finds and runs its default model.
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = ("import numpy as np, mfif\nfrom mfif import Fuser\n"
            "fused = Fuser()(np.zeros((16, 16, 3), np.uint8), np.full((16, 16, 3), 90, np.uint8))\n"
            "print(mfif.__file__, fused.shape)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={"PYTHONPATH": str(target), "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(target / "mfif" / "__init__.py"), "(16,", "16,", "3)"]


def _extras() -> tuple[dict, dict]:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project, project["optional-dependencies"]


def _expanded(extras: dict, name: str) -> list[str]:
    """The requirements of extra ``name`` with the ``mfif[...]`` extras it includes spelled out."""
    import re

    found = []
    for requirement in extras[name]:
        included = re.fullmatch(r"mfif\[([^\]]+)\]", requirement.replace(" ", ""))
        found += [r for part in included.group(1).split(",") for r in _expanded(extras, part)] if included \
            else [requirement]
    return found


def _package(requirement: str) -> str:
    import re

    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower().replace("_", "-")


def test_one_onnxruntime_floor_and_never_the_cpu_build_beside_the_gpu_build():
    _, extras = _extras()
    cpu_build = {requirement.replace(" ", "") for name in extras for requirement in _expanded(extras, name)
                 if _package(requirement) == "onnxruntime"}
    assert cpu_build == {"onnxruntime>=1.27"}, cpu_build
    for name in extras:
        packages = {_package(requirement) for requirement in _expanded(extras, name)}
        assert not {"onnxruntime", "onnxruntime-gpu"} <= packages, f"extra {name!r} pulls both ONNX Runtime builds"
    # Every combination a doc tells users to install stays on one build.
    for combination in (("export", "gpu"), ("export", "gpu-cu12"), ("eval", "gpu"), ("train", "gpu"), ("dev",)):
        packages = {_package(r) for name in combination for r in _expanded(extras, name)}
        assert not {"onnxruntime", "onnxruntime-gpu"} <= packages, combination


def test_classifiers_name_the_pythons_ci_and_the_docs_cover():
    project, _ = _extras()
    versions = {c.rsplit(":: ", 1)[1] for c in project["classifiers"]
                if c.startswith("Programming Language :: Python :: 3.")}
    assert "3.11" in versions                               # what .ci/run tests
    assert "3.10" in versions                               # JetPack 6's Python (docs/deploy-jetson.md)
    assert project["requires-python"] == f">={min(versions, key=lambda v: tuple(map(int, v.split('.'))))}"
    assert "Python 3.10" in (REPO / "docs" / "deploy-jetson.md").read_text()
