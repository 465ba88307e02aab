"""Graphviz DOT export: one box per node, one edge per parent link.

Boxes show a short preview of the text (the full text is the tooltip, for SVG output). Pruned
nodes are dashed, bookmarked ones bold, the current node doubled; a persona label colours the
box with the persona's colour. An edge's width grows with the child's mean token probability
(`loom.tokens.mean_probability`, as everywhere) and its tooltip gives it.

Every string is a DOT quoted string: backslashes doubled (so none can start a label escape such
as \\N or \\G), quotes escaped, newlines written as the label line break \\n, and control
characters made inert (`loom.text`).
"""

from __future__ import annotations

import math

from loom.store.model import LoomDocument, Node
from loom.text import cut, inert
from loom.tokens import mean_logprob
from loom.tokens import mean_probability as mean_of

PREVIEW_CHARS = 48
TOOLTIP_CHARS = 1000


def quote(text: str) -> str:
    """`text` as a DOT quoted string that Graphviz shows exactly as `inert(text)`."""
    body = inert(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{body}"'


def mean_probability(node: Node) -> float | None:
    return mean_of(mean_logprob(node.tokens.logprobs))


def write(doc: LoomDocument, current: int | None) -> str:
    colours = {p.name: p.color for p in doc.personas}
    lines = [
        "digraph loom {",
        f'  graph [rankdir=LR, charset="UTF-8", label={quote(doc.title)}, labelloc=t];',
        '  node [shape=box, style="rounded", fontname="Helvetica", fontsize=10];',
        '  edge [arrowsize=0.6, color="gray40"];',
    ]
    for node in doc.nodes:
        lines.append(f"  n{node.id} [{', '.join(_node_attrs(node, colours, current))}];")
    for node in doc.nodes:
        if node.parent is None:
            continue
        attrs = []
        p = mean_probability(node)
        if p is not None and math.isfinite(p):
            attrs.append(f"penwidth={0.5 + 3.5 * p:.2f}")
            attrs.append(f"tooltip={quote(f'mean token probability {p:.3f}')}")
        if node.pruned:
            attrs.append("style=dashed")
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"  n{node.parent} -> n{node.id}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _node_attrs(node: Node, colours: dict[str, str], current: int | None) -> list[str]:
    label = cut(node.text.strip() or "(empty)", PREVIEW_CHARS)
    style = ["rounded"]
    if node.pruned:
        style.append("dashed")
    if node.bookmarked:
        style.append("bold")
    if node.author == "human":
        style.append("filled")  # people's text in grey boxes, the model's in white
    attrs = [
        f"label={quote(label)}",
        f"tooltip={quote(cut(node.text, TOOLTIP_CHARS))}",
        f"style={quote(','.join(style))}",
    ]
    persona = node.manual_persona or (node.persona.label if node.persona else None)
    if persona:
        attrs.append(f"color={quote(colours.get(persona, 'black'))}")
        attrs.append(f"xlabel={quote(persona)}")
    if node.bookmarked:
        attrs.append("penwidth=2")
    if node.id == current:
        attrs.append("peripheries=2")
    if node.author == "human":
        attrs.append('fillcolor="#f2f2f2"')
    return attrs
