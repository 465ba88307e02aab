"""The house rules DESIGN.md §2 sets for the domain packages."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = ("store", "engine", "personas")
UI_MODULES = {"textual", "rich"}


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_domain_packages_never_import_ui_libraries() -> None:
    offenders = []
    files = [p for pkg in DOMAIN for p in (ROOT / "loom" / pkg).rglob("*.py")]
    assert files, "the domain packages must exist"
    for path in files:
        if _imported_roots(path) & UI_MODULES:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_engine_knows_nothing_of_the_store() -> None:
    for path in (ROOT / "loom" / "engine").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("loom.store"), path
            if isinstance(node, ast.Import):
                assert all(not a.name.startswith("loom.store") for a in node.names), path
