"""The Markdown outline of a deep tree stays linear in size (a 100k-deep chain once took 23 GB)."""

from __future__ import annotations

import re
from pathlib import Path

from support.cli import run_loom
from support.formats import chain_document

from loom.formats import markdown, render_document
from loom.store.loom import Loom
from loom.store.model import LoomDocument, Node

DEEP = 20_000


def _bullets(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lstrip().startswith("- ")]


def test_a_deep_chain_outline_is_linear_in_the_number_of_nodes(tmp_path: Path) -> None:
    src = tmp_path / "deep.loom"
    Loom.from_document(src, chain_document(DEEP)).close()
    out = tmp_path / "deep.md"
    done = run_loom("export", src, "--format", "markdown", "--tree", "-o", out)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    per_node = len(text) / DEEP
    assert per_node < 80, f"{per_node:.0f} bytes per node: the indent grows with depth"
    bullets = _bullets(text)
    assert len(bullets) == DEEP
    widest = max(len(line) - len(line.lstrip()) for line in text.splitlines())
    assert widest <= 2 * markdown.MAX_INDENT_DEPTH + 2


def test_depth_past_the_cap_is_written_as_a_number() -> None:
    cap = markdown.MAX_INDENT_DEPTH
    text = render_document(chain_document(cap + 5), "markdown")
    bullets = _bullets(text)
    shallow, deep = bullets[cap - 1], bullets[cap + 3]
    assert shallow.startswith("  " * (cap - 1) + "- ")
    assert f"x{cap} " in shallow and "depth" not in shallow
    assert deep.startswith("  " * cap + "- ")
    assert re.search(rf"\bdepth {cap + 3}\b", deep), deep
    assert f"x{cap + 4} " in deep


def test_continuation_lines_of_deep_nodes_stay_under_their_bullet() -> None:
    depth = markdown.MAX_INDENT_DEPTH + 3
    nodes = [
        Node(id=i, parent=None if i == 1 else i - 1, author="model", text=f"n{i}\nmore {i}",
             created_at=0.0)
        for i in range(1, depth + 2)
    ]  # fmt: skip
    text = render_document(LoomDocument(title="t", root=1, nodes=nodes), "markdown")
    lines = text.splitlines()
    last = lines.index(next(line for line in lines if f"n{depth + 1}" in line))
    bullet_indent = len(lines[last]) - len(lines[last].lstrip())
    assert lines[last + 1] == " " * (bullet_indent + 2) + f"more {depth + 1}"
