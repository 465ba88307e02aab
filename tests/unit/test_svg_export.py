"""SVG export: well-formed XML whatever the text, a tidy layered layout, persona colours, and edges
weighted by the child's probability."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from support.formats import chain_document, random_document, wide_document

from loom.formats import render_document
from loom.formats.export.colours import PALETTE, UNLABELLED, safe_colour
from loom.formats.export.svg import layout, xml_text
from loom.store.model import LoomDocument, Node, Persona, PersonaLabel
from loom.tokens import TokenArray

NS = "{http://www.w3.org/2000/svg}"
BAD = "</script><script>alert(1)</script> <img src=x onerror=alert(2)> \x1b[31mred\x1b[0m \x00!"


def parse(doc: LoomDocument, current: int | None = None) -> ET.Element:
    return ET.fromstring(render_document(doc, "svg", current=current).encode("utf-8"))


def node_groups(root: ET.Element) -> list[ET.Element]:
    (nodes,) = [g for g in root.iter(f"{NS}g") if g.get("class") == "nodes"]
    return list(nodes)


def edge_paths(root: ET.Element) -> list[ET.Element]:
    (edges,) = [g for g in root.iter(f"{NS}g") if g.get("class") == "edges"]
    return list(edges)


def tokens_with(logprob: float, n: int = 3) -> TokenArray:
    t = TokenArray.from_ids(list(range(n)), ["a"] * n)
    t.logprobs[:] = logprob
    return t


def test_random_looms_are_well_formed_with_one_shape_per_node() -> None:
    for seed in range(5):
        doc = random_document(seed)
        root = parse(doc)
        assert root.tag == f"{NS}svg"
        assert len(node_groups(root)) == len(doc.nodes)
        assert len(edge_paths(root)) == len(doc.nodes) - 1


def test_malicious_text_is_literal_text_and_nothing_else() -> None:
    nodes = [
        Node(1, None, "human", BAD, 0.0),
        Node(2, 1, "model", "<b>" + BAD, 0.0, manual_persona=BAD, tags=[BAD]),
    ]
    doc = LoomDocument(title=BAD, root=1, nodes=nodes, personas=[Persona(BAD, BAD, BAD)])
    text = render_document(doc, "svg")
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", text)
    root = ET.fromstring(text.encode("utf-8"))
    tags = {el.tag.removeprefix(NS) for el in root.iter()}
    assert tags <= {"svg", "rect", "text", "circle", "g", "title", "path", "line"}
    every_text = " ".join("".join(el.itertext()) for el in root.iter(f"{NS}text"))
    assert "</script><script>alert(1)</script>" in every_text  # shown, as text
    titles = " ".join(el.text or "" for el in root.iter(f"{NS}title"))
    # controls shown as escapes (loom.text), never as themselves
    assert "<img src=x onerror=alert(2)> \\x1b[31mred\\x1b[0m \\x00!" in titles
    for el in root.iter():
        assert not any(k.startswith("on") or "href" in k for k in el.attrib)
        assert all("url(" not in v for v in el.attrib.values())


def test_xml_text_keeps_only_what_xml_can_hold() -> None:
    # controls become escapes, a lone surrogate U+FFFD, a non-character is shown as its code
    assert xml_text("a\x00b\x0bc\ufffe\ud800d&<>\"'") == (
        "a\\x00b\\x0bc\\ufffe\ufffdd&amp;&lt;&gt;&quot;&apos;"
    )
    assert xml_text("tab\tnewline\n🧵") == "tab\tnewline\n🧵"


def test_deep_and_wide_trees_lay_out_without_recursion() -> None:
    deep = parse(chain_document(6000))
    assert len(node_groups(deep)) == 6000
    wide = parse(wide_document(5000))
    assert len(node_groups(wide)) == 5001


def test_tidy_layout_levels_and_parents_centred() -> None:
    doc = random_document(3, size=120)
    placed = layout(doc)
    by_id = {p.node.id: p for p in placed}
    assert len({(p.depth, p.y) for p in placed}) == len(placed)  # nothing overlaps
    children: dict[int, list[int]] = {}
    for p in placed:
        if p.node.parent is not None:
            children.setdefault(p.node.parent, []).append(p.node.id)
            assert p.depth == by_id[p.node.parent].depth + 1
    for parent, kids in children.items():
        ys = [by_id[k].y for k in kids]
        assert by_id[parent].y == (ys[0] + ys[-1]) / 2
        assert ys == sorted(ys)
    leaves = sorted(p.y for p in placed if p.node.id not in children)
    assert leaves == list(range(len(leaves)))  # leaves on consecutive rows


def test_colours_follow_the_effective_label_and_are_safe() -> None:
    personas = [
        Persona("luigi", "", "green"),
        Persona("waluigi", "", "url(http://evil.example/x)"),
        Persona("wario", "", "#AbC"),
    ]
    label = PersonaLabel("luigi", "model", {"luigi": 0.9})
    nodes = [
        Node(1, None, "human", "root", 0.0),
        Node(2, 1, "model", " model says luigi", 0.0, persona=label),
        Node(3, 1, "model", " hand says waluigi", 0.0, persona=label, manual_persona="waluigi"),
        Node(4, 1, "model", " wario", 0.0, manual_persona="wario"),
        Node(5, 1, "model", " nobody", 0.0),
        Node(6, 1, "model", " outsider", 0.0, manual_persona="stranger"),
    ]
    doc = LoomDocument(title="c", root=1, nodes=nodes, personas=personas)
    root = parse(doc)
    fills = {}
    for group in node_groups(root):
        title = group.find(f"{NS}title")
        assert title is not None and title.text is not None
        node_id = int(title.text.split(" ")[0].split(":")[0][1:])
        shape = [el for el in group if el.tag in (f"{NS}circle", f"{NS}rect")][-1]
        fills[node_id] = shape.get("fill")
    assert fills[2] == safe_colour("green")
    assert fills[3] == PALETTE[1]  # the hand label wins; its unsafe colour became the palette's
    assert fills[4] == "#abc"
    assert fills[5] == UNLABELLED
    assert fills[6] not in (UNLABELLED, fills[2], fills[3], fills[4])  # a colour of its own
    legend = " ".join(el.text or "" for el in root.iter(f"{NS}text"))
    for name in ("luigi", "waluigi", "wario", "stranger", "no label", "bookmarked", "pruned"):
        assert name in legend
    assert "url(" not in render_document(doc, "svg")


def test_edge_width_and_opacity_grow_with_the_childs_probability() -> None:
    nodes = [Node(1, None, "human", "root", 0.0)]
    for i, p in enumerate([0.05, 0.3, 0.6, 0.95]):
        nodes.append(Node(i + 2, 1, "model", f" p{p}", 0.0, tokens=tokens_with(float(np.log(p)))))
    nodes.append(Node(6, 1, "human", " typed", 0.0))
    root = parse(LoomDocument(title="", root=1, nodes=nodes))
    paths = edge_paths(root)
    widths = [float(e.get("stroke-width", "0")) for e in paths[:4]]
    opacities = [float(e.get("stroke-opacity", "0")) for e in paths[:4]]
    assert widths == sorted(widths) and widths[0] < widths[-1]
    assert opacities == sorted(opacities) and opacities[0] < opacities[-1]
    assert paths[4].get("stroke-dasharray")  # no probability: a thin dashed edge


@pytest.mark.parametrize("marks", ["pruned", "bookmarked", "current"])
def test_marks_are_drawn(marks: str) -> None:
    node = Node(
        2, 1, "model", " x", 0.0, pruned=marks == "pruned", bookmarked=marks == "bookmarked"
    )
    doc = LoomDocument(title="", root=1, nodes=[Node(1, None, "human", "r", 0.0), node])
    root = parse(doc, current=2 if marks == "current" else None)
    group = node_groups(root)[1]
    if marks == "pruned":
        assert group.get("opacity") == "0.35"
    elif marks == "bookmarked":
        assert any(el.get("stroke") == "#e0a800" for el in group)
    else:
        assert any(el.get("stroke") == "#111" for el in group)
