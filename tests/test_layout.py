"""The package's shape: no import cycles among its modules, no module over 600 lines, and the engine and curvature
asking objectives' declared abilities instead of `hasattr` / `getattr`.

The import graph is read from the source (`ast`), so it holds every import, at the top of a module or inside a
function, except those under `if TYPE_CHECKING:` (type annotations only). `from package import name` points at
`package.name` when that is a module, else at the package's `__init__`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from testing_utils import REPO_ROOT

PACKAGE = REPO_ROOT / "hf_landscape"
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of `tree` outside `if TYPE_CHECKING:` blocks."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that the module `name` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
        out.update(t for t in targets if t in modules and t != name)
    return out


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


# --- the checks themselves are checked on a small made-up package ----------------------------------------------


def test_the_graph_finds_a_cycle_and_ignores_type_checking_imports(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def f():\n    from .c import g\n")
    (package / "c.py").write_text("from .a import x\n")
    (package / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x\n")
    (package / "e.py").write_text("from .d import y\n")
    modules = {
        ".".join(p.relative_to(tmp_path).with_suffix("").parts).removesuffix(".__init__"): p
        for p in package.rglob("*.py")
    }
    graph = import_graph(modules)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"} and graph["pkg.d"] == set()
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_the_package_is_read_whole():
    assert {"hf_landscape", "hf_landscape.probe", "hf_landscape.engine.runner", "hf_landscape.cli.main"} <= set(MODULES)
    graph = import_graph(MODULES)
    assert "hf_landscape.engine.runner" in graph["hf_landscape.probe"]


# --- the package ----------------------------------------------------------------------------------------------


def test_no_import_cycles_among_the_packages_modules():
    assert cycles(import_graph(MODULES)) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_600_lines(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines"


ASKING = ["engine", "curvature", "objectives/loss.py", "probe.py", "analysis"]


def test_engine_and_curvature_ask_objectives_their_declared_abilities():
    """No `hasattr(objective, ...)` / `getattr(self.objective, ...)`: callers use `objectives.base.supports`."""
    offending = []
    for place in ASKING:
        root = PACKAGE / place
        for path in [root] if root.is_file() else sorted(root.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("hasattr", "getattr"):
                    subject = ast.unparse(node.args[0]) if node.args else ""
                    if "objective" in subject:
                        offending.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert offending == []


def test_the_mutation_groups_name_modules_and_tests_that_exist():
    """`make mutate`'s module list follows the layout (`[tool.mutmut]`, `[tool.hf_landscape.mutation.groups]`)."""
    import tomllib

    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    groups = config["hf_landscape"]["mutation"]["groups"]
    named = [*config["mutmut"]["only_mutate"], *(p for g in groups.values() for p in g["mutate"] + g["tests"])]
    assert [p for p in named if not (REPO_ROOT / p).is_file()] == []
    assert {p for g in groups.values() for p in g["mutate"]} <= set(config["mutmut"]["only_mutate"])
