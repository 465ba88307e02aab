"""The house rules (docs/architecture.md), read from the code's own imports.

Rooms, from the ground up; a module may import its own room and the rooms below it, never above:

    0  loom, loom.tokens, loom.text, loom.intervals, loom.paths, loom.config,
       loom.spawned                                           the ground floor
    1  loom.store                                             the tree and its file
    2  loom.formats   loom.engine                             files of other formats; models
    3  loom.personas                                          persona sets, scoring with a model
    4  loom.app                                               what the CLI and the app both do
    5  loom.tui                                               the Textual app
    6  loom.cli                                               the `loom` command

and: formats and engine never import each other; nothing below the TUI imports textual or rich;
nothing imports loom.tui but the CLI; no import circles; the TUI reaches the loom only through
its Session.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "loom"
UI_LIBRARIES = {"textual", "rich"}
LEVEL = {
    "loom": 0,
    "loom.tokens": 0,
    "loom.text": 0,
    "loom.intervals": 0,
    "loom.paths": 0,
    "loom.config": 0,
    "loom.spawned": 0,
    "loom.store": 1,
    "loom.formats": 2,
    "loom.engine": 2,
    "loom.personas": 3,
    "loom.app": 4,
    "loom.tui": 5,
    "loom.cli": 6,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def room(module: str) -> str:
    """The room a module lives in: the longest prefix named in LEVEL."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LEVEL:
            return prefix
    raise AssertionError(f"{module} is in no room: add it to LEVEL and docs/architecture.md")


MODULE_PATHS = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
MODULES = MODULE_PATHS


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports (at module level or inside functions), absolute names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from loom.formats import jsonio` imports the module loom.formats.jsonio; a name
            # that is not a module (`from loom.formats import FORMATS`) imports `base` itself
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULE_PATHS else base)
    return found


def loom_imports(path: Path) -> set[str]:
    return {name for name in imports_of(path) if name in MODULES}


def test_every_module_is_in_a_room() -> None:
    assert len(MODULES) > 80
    for name in MODULES:
        room(name)


def test_no_arrow_runs_up_the_house() -> None:
    upward = []
    for name, path in MODULES.items():
        here = room(name)
        for target in loom_imports(path):
            there = room(target)
            if LEVEL[there] > LEVEL[here]:
                upward.append(f"{name} -> {target}")
    assert upward == []


def test_formats_and_engine_know_nothing_of_each_other_and_the_engine_nothing_of_the_store() -> (
    None
):
    crossing = []
    for name, path in MODULES.items():
        for target in loom_imports(path):
            pair = (room(name), room(target))
            if pair in {("loom.formats", "loom.engine"), ("loom.engine", "loom.formats"),
                        ("loom.engine", "loom.store")}:  # fmt: skip
                crossing.append(f"{name} -> {target}")
    assert crossing == []


def test_nothing_below_the_tui_imports_a_ui_library() -> None:
    offenders = []
    for name, path in MODULES.items():
        if LEVEL[room(name)] >= LEVEL["loom.tui"]:
            continue
        if {i.split(".")[0] for i in imports_of(path)} & UI_LIBRARIES:
            offenders.append(name)
    assert offenders == []


def test_only_the_cli_imports_the_tui() -> None:
    importers = {
        name
        for name, path in MODULES.items()
        if room(name) != "loom.tui" and any(room(t) == "loom.tui" for t in loom_imports(path))
    }
    assert importers == {"loom.cli"}


def test_no_import_circles() -> None:
    graph = {name: sorted(loom_imports(path) - {name}) for name, path in MODULES.items()}
    # a module imports its package's __init__ implicitly; that is not a circle of ours
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(start: str) -> None:  # Tarjan's strongly connected components, iteratively
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        circles.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(graph[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])

    for name in graph:
        if name not in index:
            visit(name)
    assert circles == []


def test_the_tui_reaches_the_loom_only_through_its_session() -> None:
    past = []
    for name, path in MODULES.items():
        if room(name) != "loom.tui":
            continue
        text = path.read_text(encoding="utf-8")
        past += [f"{name}: {m}" for m in re.findall(r"session\.loom\b[.\w]*", text)]
    assert past == []


def test_the_docs_and_the_code_point_at_nothing_outside_the_repository() -> None:
    outside = re.compile(r"DESIGN\.md|shared/seeds|\.\./shared|api_contract")
    hits = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "docs").glob("*.md"), ROOT / "README.md"]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if outside.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}")
    assert hits == []
