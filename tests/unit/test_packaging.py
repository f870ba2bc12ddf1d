"""pyproject.toml declares what the code imports, keeps the extras' packages out of the core's module-level
imports, installs one ONNX Runtime flavour per extra, and states its license as an SPDX expression
(tests/integration/test_install.py builds the wheel and installs it)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib

from tests.conftest import ROOT

PACKAGES = ("xlgen", "training", "clustering", "service")


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string (PEP 503)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def imported_roots() -> dict[str, set[str]]:
    """Top-level module of every absolute import (module level and inside functions) -> files."""
    roots: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    roots.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return roots


def test_every_third_party_import_is_declared():
    project = _project()
    # the runtime dependencies, and the extras a user installs for a backend; not the dev tools
    declared = {_name(r) for r in project["dependencies"]}
    declared |= {_name(r) for name, extra in project["optional-dependencies"].items() if name != "dev" for r in extra}
    providers = importlib.metadata.packages_distributions()
    roots = imported_roots()
    assert {"torch", "transformers", "msgspec", "scipy", "httpx"} <= set(roots)  # the scan sees the code
    undeclared = {}
    for root, files in sorted(roots.items()):
        if root in sys.stdlib_module_names or root == "xlgen":
            continue
        dists = {_name(d) for d in providers.get(root, [])}
        assert dists, f"{root} (imported by {sorted(files)}) is not installed"
        if not dists & declared:
            undeclared[root] = (sorted(dists), sorted(files))
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_extras_install_one_onnxruntime_flavour():
    project = _project()
    flavours = {"onnxruntime", "onnxruntime-gpu"}
    assert not {_name(r) for r in project["dependencies"]} & flavours
    extras = {k: {_name(r) for r in v} for k, v in project["optional-dependencies"].items()}
    assert extras["cpu"] & flavours == {"onnxruntime"}
    assert extras["gpu"] & flavours == {"onnxruntime-gpu"}
    assert all(len(v & flavours) <= 1 for v in extras.values())
    # the setup script, and so the README's commands and the CI, install every extra with the cpu flavour
    assert "all,cpu,dev,docs" in (ROOT / "scripts" / "setup.sh").read_text()
    assert "all,cpu,dev,docs" in (ROOT / "scripts" / "lock.sh").read_text()


def test_the_core_imports_no_extra_at_module_level():
    """xlgen/, training/ and clustering/ import an extra's modules only inside the functions that need them
    (after :func:`xlgen.extras.require`, or where a fast path checks that it is installed)."""
    from xlgen.extras import EXTRAS

    extra_modules = {m for name, mods in EXTRAS.items() if name != "docs" for m in mods}
    found = {}
    for package in ("xlgen", "training", "clustering"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in tree.body:  # module level only
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
                for name in names:
                    if name.split(".")[0] in extra_modules:
                        found.setdefault(str(path.relative_to(ROOT)), []).append(name)
    assert not found, found


def test_license_is_an_spdx_expression():
    project = _project()
    assert project["license"] == "Apache-2.0"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert any(r.replace(" ", "").startswith("setuptools>=77") for r in requires)  # the first to read a license string
