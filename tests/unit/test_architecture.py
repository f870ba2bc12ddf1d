"""The shape of the tree: no import cycle between the project's modules, dependencies pointing one
way between packages (service -> training -> clustering -> xlgen). That every module imports on its
own in a fresh interpreter is tests/integration/test_imports.py (one interpreter per module)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("xlgen", "clustering", "training", "service")
LAYER = {"xlgen": 0, "clustering": 1, "training": 2, "service": 3}
"""A package may import only packages of a lower layer (and itself)."""


def installed_name(folder: str) -> str:
    """The import name a repository folder installs as: ``xlgen``, or ``xlgen.<folder>`` (pyproject.toml)."""
    return folder if folder == "xlgen" else f"xlgen.{folder}"


def layer(module: str) -> int:
    """The layer of a project module: ``xlgen.service.*`` is the service's, ``xlgen.*`` the core's."""
    parts = module.split(".")
    return LAYER[parts[1]] if len(parts) > 1 and parts[1] in LAYER and parts[1] != "xlgen" else LAYER["xlgen"]


def project_modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = (installed_name(pkg), *path.relative_to(ROOT / pkg).with_suffix("").parts)
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if name.startswith("xlgen.service.migrations."):
                continue  # alembic's scripts: run by alembic with its context, not imported
            out[name] = path
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that ``name`` imports anywhere (module level or inside a function)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # ``from pkg import sub`` imports the module ``pkg.sub``; ``from pkg import name``, ``pkg``
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        elif (isinstance(node, ast.Call) and ast.unparse(node.func) in ("importlib.import_module", "import_module")
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            targets = [node.args[0].value]
        for t in targets:
            while t and t not in modules:  # ``from pkg.mod import name``: the module is the longest known prefix
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if state.get(m) is None and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if state.get(n) is None and (c := visit(n)):
            return c
    return None


def test_the_scan_sees_every_layer() -> None:
    g = graph()
    assert {layer(n) for n in g} == {0, 1, 2, 3}
    assert "xlgen.service.app" in g and "xlgen.training.train" in g and "xlgen.clustering.kmeans" in g
    assert "xlgen.training.train" in g["xlgen.service.jobs"] or any(m.startswith("xlgen.training") for m in g["xlgen.service.cli"])


def test_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_dependencies_point_one_way() -> None:
    bad = [f"{n} imports {m}" for n, ms in graph().items() for m in ms if layer(m) > layer(n)]
    assert not bad, "\n".join(bad)


def test_active_learning_imports_no_service_training_or_clustering() -> None:
    g = graph()
    bad = [f"{n} imports {m}" for n, ms in g.items() if n.startswith("xlgen.active") for m in ms if layer(m) > 0]
    assert not bad, "\n".join(bad)


def test_guidance_never_imports_the_model() -> None:
    g = graph()
    bad = [f"{n} imports {m}" for n, ms in g.items() if n.startswith("xlgen.guidance") for m in ms if m == "xlgen.model"]
    assert not bad, "\n".join(bad)


def test_decoding_is_pure() -> None:
    """Configs, candidates, label scores and the cut: no torch, no backend."""
    tree = ast.parse((ROOT / "xlgen" / "decoding.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(x.split(".")[0] in ("torch", "transformers") or x.startswith("xlgen.backends") for x in names), names


def test_library_deprecations_fail_the_unit_tests() -> None:
    import warnings

    with pytest.raises(FutureWarning):
        warnings.warn_explicit("old", FutureWarning, "modeling_utils.py", 1, module="transformers.modeling_utils")
    warnings.warn_explicit("ours", FutureWarning, "x.py", 1, module="xlgen.x")  # another module's: a warning only
