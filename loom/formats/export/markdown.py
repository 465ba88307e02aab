"""Markdown export: a path as prose, or the whole tree as a nested outline.

Control characters are made inert (`loom.text.inert`: ESC as `\x1b`) so the file is safe to
print. In the outline every node is one bullet, its later lines indented
under it, and line-starts that Markdown would read as structure (headings, quotes, bullets,
numbered items, rules, fences) are backslash-escaped so a node's text can never open a bullet
or heading of its own. `&`, `<` and `>` become HTML entities, because Markdown renderers pass
inline HTML through and would run a model's `<script>`. Other inline markup is left as written.
"""

from __future__ import annotations

import html
import re

from loom.formats.tree import path_ids, walk
from loom.store.model import LoomDocument, Node
from loom.text import inert, one_line

# Line starts Markdown would take as block structure (after up to three spaces of indent).
_BLOCK_MARK = re.compile(r"^( {0,3})([#>*+\-=_`~|])")
_NUMBERED = re.compile(r"^( {0,3}\d+)([.)])")
# Levels of nesting the outline indents; deeper nodes are shown at this level with their depth.
MAX_INDENT_DEPTH = 16


def write_path(doc: LoomDocument, current: int) -> str:
    by_id = {n.id: n for n in doc.nodes}
    path = [by_id[i] for i in path_ids(doc, current)]
    text = _inert(inert("".join(n.text for n in path)))
    head = f"# {_inert(one_line(doc.title)) or 'Untitled loom'}\n\n"
    head += f"*The path from the root to node {current}: {len(path)} nodes.*\n\n"
    return head + text + ("" if text.endswith("\n") else "\n")


def write_outline(doc: LoomDocument, current: int | None) -> str:
    lines = [f"# {_inert(one_line(doc.title)) or 'Untitled loom'}", ""]
    legend = (
        f"*{len(doc.nodes)} nodes. ★ bookmarked, ✂ pruned, ▶ the current node, "
        "[name] a persona label, #tag a tag.*"
    )
    lines.append(legend)
    lines.append("")
    personas = {
        n.id: n.manual_persona or (n.persona.label if n.persona else None) for n in doc.nodes
    }
    capped = False
    for node, depth in walk(doc):
        # Indenting every level makes the file quadratic in the depth (a 100k-deep chain would
        # be gigabytes); past the cap nodes stay at the deepest indent and say their depth.
        indent = "  " * min(depth, MAX_INDENT_DEPTH)
        body = _bullet_text(node, personas[node.id], node.id == current)
        if depth >= MAX_INDENT_DEPTH:
            body = f"*(depth {depth})* {body}"
            capped = True
        first, *rest = body.split("\n")
        lines.append(f"{indent}- {first}")
        lines.extend(f"{indent}  {line}" if line else "" for line in rest)
    if capped:
        lines[2] = legend[:-1] + (
            f" (depth N): a node N levels down (the outline indents {MAX_INDENT_DEPTH} at most).*"
        )
    return "\n".join(lines) + "\n"


def _bullet_text(node: Node, persona: str | None, is_current: bool) -> str:
    marks = []
    if is_current:
        marks.append("▶")
    if node.bookmarked:
        marks.append("★")
    if node.pruned:
        marks.append("✂")
    if persona:
        marks.append(f"[{_inert(one_line(persona))}]")
    marks.extend(f"#{_inert(one_line(tag))}" for tag in node.tags)
    text = _inert(inert(node.text))
    lines = [_escape_line(line) for line in text.split("\n")] if text else ["*(empty)*"]
    if marks:
        lines[0] = " ".join(marks) + " " + lines[0]
    return "\n".join(lines)


def _inert(text: str) -> str:
    return html.escape(text, quote=False)


def _escape_line(line: str) -> str:
    line = _BLOCK_MARK.sub(r"\1\\\2", line, count=1)
    return _NUMBERED.sub(r"\1\\\2", line, count=1)
