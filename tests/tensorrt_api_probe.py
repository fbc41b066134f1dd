"""Run in a child process by test_tensorrt_api.py: import one version of TensorRT's real Python
bindings (loaded against stand-in native libraries) and check every TensorRT name, enum member,
method, property and keyword argument that the given source files use.

    python tensorrt_api_probe.py BINDINGS_DIR SOURCE.py [SOURCE.py ...]

What counts as "TensorRT" in a source file, found with ``ast`` so the list cannot go stale:
- attribute chains on the module, ``trt.X.Y.Z``;
- attributes and calls on objects whose TensorRT class is known: names in RECEIVERS (the
  variables that hold TensorRT objects), and whatever a known method returns (read from the
  bindings' own signature, ``-> tensorrt.ICudaEngine``), e.g. ``config.get_timing_cache().serialize()``;
- keyword arguments of those calls, against the bindings' signatures;
- classes that subclass a TensorRT interface (``class Logger(trt.ILogger)``) must define every
  method the interface declares (TensorRT calls them);
- ``HARDWARE_ENUM``/``HARDWARE_MIN_TENSORRT`` of the builder: each level exists exactly from its
  stated minimum version on.
Code under ``if <test on trt.__version__>`` counts only where that test holds for this version.

Prints one JSON object: {"version": ..., "checked": [...], "missing": [...]}.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
import sys

# Variables (or ``self.`` attributes) that hold a TensorRT object, by name, in the project's code.
RECEIVERS = {
    "_runtime": "Runtime", "runtime": "Runtime",
    "_engine": "ICudaEngine", "engine": "ICudaEngine",
    "_context": "IExecutionContext", "context": "IExecutionContext",
    "builder": "Builder", "network": "INetworkDefinition", "parser": "OnnxParser",
    "config": "IBuilderConfig", "trt_profile": "IOptimizationProfile", "error": "ParserError",
    "timing_cache": "ITimingCache",
}
RETURNS = re.compile(r"->\s*(?:[\w.]*\.)?(\w+)\s*$", re.M)


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


class Probe(ast.NodeVisitor):
    def __init__(self, trt, filename: str) -> None:
        self.trt, self.filename = trt, filename
        self.checked: set[str] = set()
        self.missing: list[str] = []
        self.alias = "trt"

    # ---- helpers
    def where(self, node) -> str:
        return f"{self.filename}:{node.lineno}"

    def need(self, ok: bool, what: str, node) -> None:
        self.checked.add(what)
        if not ok:
            self.missing.append(f"{what} ({self.where(node)})")

    def cls(self, name: str):
        return getattr(self.trt, name, None)

    def type_of(self, node) -> str | None:
        """The TensorRT class name of an expression's value, when known."""
        if isinstance(node, ast.Name):
            return RECEIVERS.get(node.id)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            return RECEIVERS.get(node.attr)
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                if isinstance(func.value, ast.Name) and func.value.id == self.alias:
                    return func.attr if inspect.isclass(getattr(self.trt, func.attr, None)) else None
                owner = self.type_of(func.value)
                method = getattr(self.cls(owner), func.attr, None) if owner else None
                found = RETURNS.findall((getattr(method, "__doc__", "") or "").split("\n\n")[0])
                if found and inspect.isclass(getattr(self.trt, found[0], None)):
                    return found[0]
        return None

    def chain(self, node) -> list[str] | None:
        """['X', 'Y'] for trt.X.Y, else None."""
        names = []
        while isinstance(node, ast.Attribute):
            names.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id == self.alias and names:
            return names[::-1]
        return None

    # ---- visitors
    def visit_If(self, node: ast.If) -> None:
        test = ast.unparse(node.test)
        if "__version__" in test and self.alias in test:
            try:
                holds = bool(eval(compile(ast.Expression(node.test), self.filename, "eval"),
                                  {self.alias: self.trt, "int": int, "str": str}))
            except Exception:  # noqa: BLE001 - a test we cannot evaluate: check both branches
                holds = None
            self.visit(node.test)
            for branch, active in ((node.body, holds is not False), (node.orelse, holds is not True)):
                if active:
                    for statement in branch:
                        self.visit(statement)
            return
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        names = self.chain(node)
        if names is not None:
            value, ok = self.trt, True
            for name in names:
                value = getattr(value, name, None)
                ok = ok and value is not None
            self.need(ok, "tensorrt." + ".".join(names), node)
            return  # the inner attributes are part of this chain
        owner = self.type_of(node.value)
        if owner is not None:
            self.need(hasattr(self.cls(owner), node.attr), f"{owner}.{node.attr}", node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and node.keywords:
            owner = self.type_of(func.value)
            method = getattr(self.cls(owner), func.attr, None) if owner else None
            if method is not None:
                signature = (method.__doc__ or "").split("\n\n")[0]
                for keyword in node.keywords:
                    if keyword.arg is not None:
                        ok = re.search(rf"[(,]\s*{keyword.arg}\s*:", signature) is not None
                        self.need(ok, f"{owner}.{func.attr}({keyword.arg}=)", node)
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for base in node.bases:
            names = self.chain(base)
            interface = getattr(self.trt, names[-1], None) if names and len(names) == 1 else None
            if inspect.isclass(interface):
                defined = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
                for name, member in vars(interface).items():
                    if not name.startswith("_") and callable(member) and not inspect.isclass(member):
                        self.need(name in defined, f"{node.name} implements {names[-1]}.{name}", node)
        self.generic_visit(node)


def hardware_levels(trt, source: str, filename: str) -> tuple[list[str], list[str]]:
    """HARDWARE_ENUM's levels exist exactly from HARDWARE_MIN_TENSORRT on."""
    tree = ast.parse(source)
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("HARDWARE_ENUM", "HARDWARE_MIN_TENSORRT"):
                values[node.targets[0].id] = ast.literal_eval(node.value)
    if len(values) < 2:
        return [], []
    checked, missing = [], []
    here = version_tuple(trt.__version__)
    for level, member in values["HARDWARE_ENUM"].items():
        exists = hasattr(trt.HardwareCompatibilityLevel, member)
        expected = level == "none" or here >= version_tuple(values["HARDWARE_MIN_TENSORRT"][level])
        what = f"HardwareCompatibilityLevel.{member} ({'from' if level != 'none' else 'always'} " \
               f"{values['HARDWARE_MIN_TENSORRT'].get(level, '')})"
        checked.append(what)
        if exists != expected:
            missing.append(f"{what}: {'present' if exists else 'absent'} in {trt.__version__} ({filename})")
    return checked, missing


def main() -> None:
    bindings_dir, sources = sys.argv[1], sys.argv[2:]
    sys.path.insert(0, bindings_dir)
    trt = importlib.import_module("tensorrt_bindings")
    checked, missing = set(), []
    for filename in sources:
        source = open(filename, encoding="utf-8").read()
        probe = Probe(trt, filename)
        probe.visit(ast.parse(source))
        checked |= probe.checked
        missing += probe.missing
        more_checked, more_missing = hardware_levels(trt, source, filename)
        checked |= set(more_checked)
        missing += more_missing
    print(json.dumps({"version": trt.__version__, "checked": sorted(checked), "missing": missing}))


if __name__ == "__main__":
    main()
