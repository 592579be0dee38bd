"""The emulator's modules import each other without cycles, and nothing hides one.

Why: import cycles between a service and its admin routes were once papered over with a
function-level import and a TYPE_CHECKING import. The rule now (see `server`): an admin
module depends on its service (or on a protocol of it), a service never imports its admin
module, and `server` wires the two. This test keeps it so: it reads the sources, so a
cycle hidden inside a function or behind TYPE_CHECKING counts too.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import gcpcall.emulator

PACKAGE = "gcpcall.emulator"
SOURCES = Path(gcpcall.emulator.__file__).parent


def imports_of(tree: ast.Module) -> list[tuple[str, ast.AST]]:
    """(emulator module imported, the import node) for every import in the module."""
    found: list[tuple[str, ast.AST]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node) for a in node.names if a.name.startswith(PACKAGE + ".")]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PACKAGE:
                found += [(f"{PACKAGE}.{a.name}", node) for a in node.names]
            elif node.module.startswith(PACKAGE + "."):
                found.append((node.module, node))
    return found


def modules() -> dict[str, ast.Module]:
    return {
        f"{PACKAGE}.{path.stem}": ast.parse(path.read_text(), str(path))
        for path in sorted(SOURCES.glob("*.py"))
        if path.stem != "__init__"
    }


def test_the_emulator_import_graph_has_no_cycle() -> None:
    graph = {name: {target for target, _ in imports_of(tree)} for name, tree in modules().items()}

    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError

    assert set(graph) <= set(order)


def test_imports_are_at_module_level_and_never_behind_type_checking() -> None:
    for name, tree in modules().items():
        top_level = {id(node) for node in tree.body}
        for target, node in imports_of(tree):
            assert id(node) in top_level, f"{name} imports {target} inside a function or block"
        for node in ast.walk(tree):
            if isinstance(node, ast.If):
                test = ast.unparse(node.test)
                assert "TYPE_CHECKING" not in test, f"{name} has an `if {test}:` block"


def test_services_never_import_their_admin_modules() -> None:
    trees = modules()
    for admin in [name for name in trees if name.endswith("_admin")]:
        service = admin.removesuffix("_admin")
        if service in trees:
            imported = {target for target, _ in imports_of(trees[service])}
            assert admin not in imported, f"{service} imports {admin}"
