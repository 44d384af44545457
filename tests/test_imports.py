"""The core's modules import without a circle: the graph of the imports between auditor/*.py
(at any level, inside functions too, so no import placed in a function dodges a circle; only
``if TYPE_CHECKING:`` imports are left out) is acyclic, and every module imports in a fresh
interpreter."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import auditor

PACKAGE = Path(auditor.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of `tree` outside ``if TYPE_CHECKING:`` blocks."""
    found, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _type_checking_only(node):
            todo.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return found


def imported(module: str) -> set[str]:
    """The auditor modules `module` imports (``__init__`` for the package itself)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] if "." in a.name else "__init__"
                      for a in node.names if a.name.split(".")[0] == "auditor"}
            continue
        if node.level == 0 and (node.module or "").split(".")[0] != "auditor":
            continue  # another package
        if node.level > 1:
            raise AssertionError(f"auditor/{module}.py: import from above the package")
        parts = (node.module or "").split(".")
        if node.level == 0:
            parts = parts[1:]  # from auditor.x import ...
        if parts and parts[0]:
            names.add(parts[0])
        else:  # from . import x (a module) or from auditor import name (the package)
            names |= {a.name if a.name in MODULES else "__init__" for a in node.names}
    return {name for name in names if name in MODULES and name != module}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (module -> modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_import_graph_of_the_core_is_acyclic():
    graph = {module: imported(module) for module in MODULES}
    assert graph["engine"] >= {"audit", "cells", "distributed"}  # the parser sees the imports
    circle = cycle(graph)
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_the_cycle_finder_finds_a_circle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_an_import_in_a_function_counts_and_type_checking_does_not():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .spec import X\n"
                     "def f():\n    from .engine import run_audit\n")
    assert [n.module for n in _imports(tree) if n.level] == ["engine"]


def test_every_module_imports_in_a_fresh_interpreter():
    code = "import importlib\nfor name in %r:\n    importlib.import_module('auditor.' + name)\n" % [
        m for m in MODULES if m != "__init__"]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
