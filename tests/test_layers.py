"""The package's modules import in one direction: no import cycle inside
``edx_hooks/``, counting imports inside functions and under ``TYPE_CHECKING``
too (the layers must not loop, even for annotations)."""

from __future__ import annotations

import ast
from pathlib import Path

import edx_hooks

ROOT = Path(edx_hooks.__file__).resolve().parent


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (packages by their ``__init__``)."""
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` inside ``module``."""
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``module`` imports, anywhere in its source.

    ``import a.b.c`` runs a, a.b and a.b.c: each is an edge. A module's own
    ancestor packages are not: Python has initialised them before it runs
    (``from . import known`` inside ``store.database`` needs ``store.known``,
    not ``store``), unless a name that is no submodule is taken from one
    (``from .. import __version__``), which does need its ``__init__``.
    """
    is_package = path.name == "__init__.py"
    ancestors = {module.rsplit(".", n)[0] for n in range(1, module.count(".") + 1)}
    found: set[str] = set()

    def add(name: str, whole: bool = False) -> None:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix not in known or prefix == module:
                continue
            if prefix in ancestors and not (whole and prefix == name):
                continue
            found.add(prefix)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in known:  # ``from . import x``: x is a module
                    add(submodule)
                else:  # a name defined in ``target``: its module runs
                    add(target, whole=True)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
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
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_finder_sees_a_cycle():
    """The check itself: a loop through a function-level import is found."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_resolve():
    assert resolve("edx_hooks.store.database", False, 2, None) == "edx_hooks"
    assert resolve("edx_hooks.store", True, 1, "schema") == "edx_hooks.store.schema"
    assert resolve("edx_hooks.cli", False, 1, "store") == "edx_hooks.store"


def test_the_graph_sees_every_kind_of_import():
    """Function-level, ``TYPE_CHECKING`` and ``from . import x`` imports all count."""
    edges = graph()
    assert "edx_hooks.store.schema" in edges["edx_hooks.store"]
    assert "edx_hooks.logs" in edges["edx_hooks.lms"]          # from . import logs
    assert "edx_hooks.app" in edges["edx_hooks.cli"]
    assert "edx_hooks.store.known" in edges["edx_hooks.store.database"]  # from . import known
    assert "edx_hooks" in edges["edx_hooks.console.base"]      # from .. import __version__
    assert "edx_hooks.store" not in edges["edx_hooks.store.database"]


def test_function_and_type_checking_imports_count(tmp_path):
    """An import inside a function or under ``TYPE_CHECKING`` is an edge too."""
    (tmp_path / "pkg").mkdir()
    for name, source in {"__init__": "", "a": "def f():\n    from . import b\n",
                         "b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from .a import f\n"}.items():
        (tmp_path / "pkg" / f"{name}.py").write_text(source)
    known = {"pkg": tmp_path / "pkg" / "__init__.py", "pkg.a": tmp_path / "pkg" / "a.py",
             "pkg.b": tmp_path / "pkg" / "b.py"}
    edges = {name: imports(name, path, known) for name, path in known.items()}
    assert edges["pkg.a"] == {"pkg.b"} and edges["pkg.b"] == {"pkg.a"}
    assert cycles(edges) == [["pkg.a", "pkg.b"]]


def test_no_import_cycle():
    found = cycles(graph())
    assert not found, "import cycles inside edx_hooks/: " + "; ".join(
        " <-> ".join(c) for c in found)


def test_the_bottom_layer_imports_nothing_from_the_package():
    """The setting types build on nothing but the exceptions, which build on
    nothing: every layer may use them."""
    edges = graph()
    assert edges["edx_hooks.errors"] == set()
    assert edges["edx_hooks.setting_types"] == {"edx_hooks.errors"}
