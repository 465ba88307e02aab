"""SVG export: a picture of the tree for papers and posts, laid out in pure Python.

Left to right: the root on the left, each level one column further right. The layout is the
classic tidy layered tree: leaves take consecutive rows in reading order and every parent sits
centred on its first and last child, so no two subtrees overlap and the picture reads like the
outline. Both passes are loops over a pre-order list (no recursion: looms can be thousands deep).

Nodes are coloured by their effective persona label (a hand label wins over the model's), model
nodes are circles and human ones squares, bookmarks get a gold ring, pruned branches are faded
and dashed, the current node has a dark outline. Each edge's width and opacity grow with the
child's probability: exp of its mean token logprob (the geometric mean of its token
probabilities). Labels are short previews; the full text is each node's <title> tooltip.

All text is made inert (`loom.text`: terminal escapes and other controls as visible `\x1b`
escapes), XML-escaped, and stripped of anything else XML 1.0 cannot hold, so the file always
parses and shows only printable text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from loom.formats.export.colours import UNLABELLED, fresh_colour, safe_colour
from loom.formats.tree import children_of, preorder_ids
from loom.store.model import LoomDocument, Node
from loom.text import cut, inert, one_line
from loom.tokens import mean_logprob, mean_probability

COLUMN = 250  # px between levels: a node, its label, and room for the edges
ROW = 24  # px between leaves
RADIUS = 6
LABEL_CHARS = 28
CHAR_WIDTH = 5.6  # px per character of 11px Helvetica, on average (labels are estimated)
EDGE = "#3d4a66"
TOOLTIP_CHARS = 600
MARGIN = 20
FONT = "font-family='Helvetica, Arial, sans-serif'"

# Everything XML 1.0 forbids in a document (C0 controls but tab/LF/CR, surrogates, FFFE/FFFF).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    """`text`, made inert, as XML character data or attribute value (quotes escaped, characters
    XML cannot hold gone)."""
    clean = _NOT_XML.sub("", inert(text))
    return (
        clean.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&apos;")
    )


@dataclass
class Placed:
    node: Node
    depth: int
    y: float


def layout(doc: LoomDocument) -> list[Placed]:
    """Every node reachable from the root with its depth and row (in rows, not pixels)."""
    by_id = {n.id: n for n in doc.nodes}
    children = children_of(doc.nodes)
    order = [i for i in preorder_ids(doc.root, children) if i in by_id]
    depth: dict[int, int] = {doc.root: 0}
    for node_id in order:
        for child in children[node_id]:
            depth[child] = depth[node_id] + 1
    y: dict[int, float] = {}
    next_leaf = 0
    for node_id in order:  # leaves in reading order
        if not children[node_id]:
            y[node_id] = next_leaf
            next_leaf += 1
    for node_id in reversed(order):  # children come after parents in pre-order
        kids = children[node_id]
        if kids:
            y[node_id] = (y[kids[0]] + y[kids[-1]]) / 2
    return [Placed(by_id[i], depth[i], y[i]) for i in order]


def edge_probability(node: Node) -> float | None:
    return mean_probability(mean_logprob(node.tokens.logprobs))


def _label(node: Node) -> str | None:
    return node.manual_persona or (node.persona.label if node.persona else None)


def _legend(doc: LoomDocument, colours: dict[str, str], used: list[str]) -> tuple[list[str], int]:
    """The legend's SVG lines (title, persona colours, shapes, edge widths) and its height."""
    title = xml_text(one_line(doc.title) or "Untitled loom")
    bold = "font-size='16' font-weight='bold'"
    out = [f"<text x='{MARGIN}' y='{MARGIN + 14}' {FONT} {bold}>{title}</text>"]

    def item(x: float, y: float, shape: str, name: str) -> float:
        """Draw one entry at (x, y); the x where the next one starts."""
        out.append(shape)
        out.append(f"<text x='{x + 19}' y='{y}' {FONT} font-size='12'>{xml_text(name)}</text>")
        return x + 36 + 7 * len(name)

    y, x = MARGIN + 38, float(MARGIN)
    for name, colour in [(n, colours[n]) for n in used] + [("no label", UNLABELLED)]:
        name = one_line(name, 24)
        x = item(x, y, f"<circle cx='{x + 6}' cy='{y - 4}' r='{RADIUS}' fill='{colour}'/>", name)
    y, x = y + 22, float(MARGIN)
    grey = f"fill='{UNLABELLED}'"
    x = item(x, y, f"<circle cx='{x + 6}' cy='{y - 4}' r='{RADIUS}' {grey}/>", "model")
    x = item(x, y, f"<rect x='{x}' y='{y - 10}' width='12' height='12' rx='2' {grey}/>", "human")
    ring = "fill='none' stroke='#e0a800' stroke-width='2.5'"
    x = item(x, y, f"<circle cx='{x + 6}' cy='{y - 4}' r='{RADIUS + 2}' {ring}/>", "bookmarked")
    x = item(
        x, y, f"<circle cx='{x + 6}' cy='{y - 4}' r='{RADIUS}' {grey} opacity='0.35'/>", "pruned"
    )
    x = item(
        x,
        y,
        f"<circle cx='{x + 6}' cy='{y - 4}' r='{RADIUS}' {grey} stroke='#111' stroke-width='2.5'/>",
        "current",
    )
    out.append(f"<text x='{x}' y='{y}' {FONT} font-size='12'>edge width: child's token p</text>")
    x += 175
    for p in (0.1, 0.5, 0.9):
        width, opacity = _stroke(p)
        out.append(
            f"<line x1='{x}' y1='{y - 4}' x2='{x + 30}' y2='{y - 4}' stroke='{EDGE}'"
            f" stroke-width='{width:.2f}' stroke-opacity='{opacity:.2f}'/>"
        )
        out.append(f"<text x='{x + 34}' y='{y}' {FONT} font-size='12'>{p:g}</text>")
        x += 62
    return out, y + 18 - MARGIN


def _stroke(p: float) -> tuple[float, float]:
    p = min(max(p, 0.0), 1.0)
    return 0.6 + 4.4 * p, 0.25 + 0.75 * p


def _short(node: Node) -> str:
    return one_line(node.text.strip() or "(empty)", LABEL_CHARS)


def _label_end(x: float, node: Node) -> float:
    """Where a node's label ends (estimated): its edges to children start there, so lines
    never cross text."""
    return x + RADIUS + 5 + CHAR_WIDTH * len(_short(node)) + 4


def write(doc: LoomDocument, current: int | None) -> str:
    placed = layout(doc)
    colours = {p.name: safe_colour(p.color, i) for i, p in enumerate(doc.personas)}
    used: list[str] = [p.name for p in doc.personas]
    for item in placed:  # labels outside the persona set still get a colour of their own
        label = _label(item.node)
        if label is not None and label not in colours:
            colours[label] = fresh_colour(list(colours.values()))
            used.append(label)
    legend, legend_height = _legend(doc, colours, used)
    top = MARGIN + legend_height + 16
    max_depth = max((p.depth for p in placed), default=0)
    rows = max((p.y for p in placed), default=0) + 1
    width = max(MARGIN * 2 + (max_depth + 1) * COLUMN, 900)
    height = int(top + rows * ROW + MARGIN)
    pos = {p.node.id: (MARGIN + 10 + p.depth * COLUMN, top + p.y * ROW) for p in placed}
    by_id = {p.node.id: p.node for p in placed}

    edges: list[str] = []
    shapes: list[str] = []
    for item in placed:
        node = item.node
        x, y = pos[node.id]
        if node.parent is not None and node.parent in pos:
            px, py = pos[node.parent]
            start = _label_end(px, by_id[node.parent])
            mid = (start + x) / 2
            p = edge_probability(node)
            if p is None:
                style = "stroke='#8a8f9c' stroke-width='1' stroke-dasharray='3 3'"
            else:
                w, o = _stroke(p)
                style = f"stroke='{EDGE}' stroke-width='{w:.2f}' stroke-opacity='{o:.2f}'"
            if node.pruned:
                style += " opacity='0.35'"
            edges.append(
                f"<path d='M{start:.1f},{py:.1f} C{mid:.1f},{py:.1f} {mid:.1f},{y:.1f}"
                f" {x - RADIUS:.1f},{y:.1f}' fill='none' {style}/>"
            )
        shapes.append(_node_svg(node, x, y, colours, current))

    out = [
        "<?xml version='1.0' encoding='UTF-8'?>",
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}'>",
        f"<rect width='{width}' height='{height}' fill='#ffffff'/>",
        *legend,
        "<g class='edges'>",
        *edges,
        "</g>",
        "<g class='nodes'>",
        *shapes,
        "</g>",
        "</svg>",
    ]
    return "\n".join(out) + "\n"


def _node_svg(node: Node, x: float, y: float, colours: dict[str, str], current: int | None) -> str:
    label = _label(node)
    fill = colours.get(label, UNLABELLED) if label is not None else UNLABELLED
    outline = "stroke='#111' stroke-width='2.5'" if node.id == current else "stroke='#ffffff'"
    if node.author == "human":
        s = RADIUS + 0.5
        shape = (
            f"<rect x='{x - s:.1f}' y='{y - s:.1f}' width='{2 * s:.1f}' height='{2 * s:.1f}'"
            f" rx='2' fill='{fill}' {outline}/>"
        )
    else:
        shape = f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{RADIUS}' fill='{fill}' {outline}/>"
    parts = ["<g opacity='0.35'>" if node.pruned else "<g>"]
    tip = f"#{node.id}" + (f" [{one_line(label)}]" if label else "") + ": " + one_line(node.text)
    parts.append(f"<title>{xml_text(cut(tip, TOOLTIP_CHARS))}</title>")
    if node.bookmarked:
        parts.append(
            f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{RADIUS + 2}' fill='none'"
            " stroke='#e0a800' stroke-width='2.5'/>"
        )
    parts.append(shape)
    parts.append(
        f"<text x='{x + RADIUS + 5:.1f}' y='{y + 4:.1f}' {FONT} font-size='11'"
        f" fill='#222'>{xml_text(_short(node))}</text>"
    )
    parts.append("</g>")
    return "".join(parts)
