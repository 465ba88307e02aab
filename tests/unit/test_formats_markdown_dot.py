"""Markdown and DOT exports: all the content is there, and nothing in the text can break out."""

from __future__ import annotations

import math
import re
import shutil
import subprocess

import numpy as np
import pytest
from support.formats import chain_document, random_document

from loom.formats import render_document
from loom.formats.export.dot import PREVIEW_CHARS, mean_probability
from loom.formats.export.markdown import MAX_INDENT_DEPTH
from loom.formats.tree import path_ids, walk
from loom.store.model import LoomDocument, Node, Persona, PersonaLabel
from loom.text import cut, inert
from loom.tokens import TokenArray

RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
DEFAULTS = {"graph", "node", "edge"}


def _small() -> LoomDocument:
    nasty = 'say "hi"\\n\x1b[2J\r\nsecond line\x00'
    probs = TokenArray.from_ids([1, 2], ["A", "B"])
    probs.logprobs[:] = [math.log(0.9), math.log(0.5)]
    nodes = [
        Node(1, None, "human", "The prompt.\n# not a heading\n- not a bullet", 1.0),
        Node(2, 1, "model", nasty, 2.0, bookmarked=True, tags=["t1"]),
        Node(3, 1, "model", "AB", 3.0, tokens=probs, pruned=True),
        Node(4, 2, "model", "", 4.0, persona=PersonaLabel("waluigi", "model", {"waluigi": 0.9})),
        Node(5, 2, "human", "1. numbered", 5.0, manual_persona="luigi"),
    ]
    return LoomDocument(
        title='Title "q"\n\x1b[1m',
        root=1,
        nodes=nodes,
        personas=[Persona("luigi", "", "green"), Persona("waluigi", "", "#aa00ff")],
        meta={"current": 4},
    )


# --- Markdown ----------------------------------------------------------------------------------


def test_outline_has_every_node_once_at_its_depth() -> None:
    doc = random_document(11)
    out = render_document(doc, "markdown")
    assert not RAW_CONTROL.search(out)
    lines = out.splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(r"^ *- ", line)]
    assert len(starts) == len(doc.nodes)  # text that looks like a bullet was escaped
    for start, end, (node, depth) in zip(starts, [*starts[1:], len(lines)], walk(doc), strict=True):
        assert len(lines[start]) - len(lines[start].lstrip(" ")) == 2 * depth
        # The bullet's last line (continuations included) ends with the node's own "#id".
        body = [line for line in lines[start:end] if line]
        assert body[-1].endswith(f"#{node.id}")


def test_outline_escapes_and_marks() -> None:
    out = render_document(_small(), "markdown")
    lines = out.splitlines()
    assert lines[0] == '# Title "q"↵\\x1b[1m'
    assert "- The prompt." in lines
    assert "  \\# not a heading" in lines  # inside the bullet, and not a heading
    assert "  \\- not a bullet" in lines
    assert '  - ★ #t1 say "hi"\\n\\x1b[2J' in lines
    assert "    second line\\x00" in lines  # CRLF became a continuation line
    assert "  - ✂ AB" in lines
    assert "    - ▶ [waluigi] *(empty)*" in lines
    assert "    - [luigi] 1\\. numbered" in lines


def test_path_as_prose() -> None:
    doc = _small()
    out = render_document(doc, "markdown", whole_tree=False)
    head, _, body = out.partition("\n\n*The path from the root to node 4: 3 nodes.*\n\n")
    assert head == '# Title "q"↵\\x1b[1m'
    expected = "".join(n.text for n in doc.nodes if n.id in (1, 2, 4))
    assert body == inert(expected) + "\n"
    assert "AB" not in body and "numbered" not in body


def test_path_of_a_chosen_node() -> None:
    doc = random_document(12)
    target = doc.nodes[7]
    out = render_document(doc, "markdown", current=target.id, whole_tree=False)
    by_id = {n.id: n for n in doc.nodes}
    assert out.endswith(inert("".join(by_id[i].text for i in path_ids(doc, target.id))) + "\n")


def test_deep_outline_and_path() -> None:
    doc = chain_document(3000)
    outline = render_document(doc, "markdown")
    # Past MAX_INDENT_DEPTH levels the indent stops growing and the depth is written instead.
    assert outline.splitlines()[-1] == " " * 2 * MAX_INDENT_DEPTH + "- *(depth 2999)* x3000 "
    prose = render_document(doc, "markdown", current=3000, whole_tree=False)
    assert prose.endswith("x2999 x3000 \n")


# --- DOT ---------------------------------------------------------------------------------------

_TOKEN = re.compile(r'\s*(?:(->)|([{}\[\];,=])|("(?:[^"\\]|\\.)*")|([A-Za-z0-9_.#]+))', re.S)


def _tokens(text: str) -> list[str]:
    """A DOT lexer: quoted strings may hold anything but an unescaped quote."""
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        assert match, f"unlexable DOT at {text[pos : pos + 30]!r}"
        out.append(next(g for g in match.groups() if g is not None))
        pos = match.end()
    return out


def _unquote(token: str) -> str:
    """What Graphviz shows for a quoted label: \\" is ", \\\\ is \\, \\n a line break."""
    assert token[0] == token[-1] == '"'
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), token[1:-1])


def _statements(text: str) -> list[tuple[list[str], dict[str, str]]]:
    tokens = _tokens(text)
    assert tokens[:3] == ["digraph", "loom", "{"] and tokens[-1] == "}"
    out, i, body = [], 0, tokens[3:-1]
    while i < len(body):
        head = []
        while body[i] not in ("[", ";"):
            head.append(body[i])
            i += 1
        attrs = {}
        if body[i] == "[":
            i += 1
            while body[i] != "]":
                key, eq, value = body[i : i + 3]
                assert eq == "="
                attrs[key] = value
                i += 3
                if body[i] == ",":
                    i += 1
            i += 1
        assert body[i] == ";"
        i += 1
        out.append((head, attrs))
    return out


def test_dot_parses_and_labels_decode_to_the_text() -> None:
    doc = _small()
    out = render_document(doc, "dot")
    assert not RAW_CONTROL.search(out)
    statements = _statements(out)
    nodes = {h[0]: a for h, a in statements if len(h) == 1 and h[0] not in DEFAULTS}
    edges = {(h[0], h[2]): a for h, a in statements if len(h) == 3}
    assert set(nodes) == {f"n{n.id}" for n in doc.nodes}
    assert set(edges) == {(f"n{n.parent}", f"n{n.id}") for n in doc.nodes if n.parent}
    for node in doc.nodes:
        attrs = nodes[f"n{node.id}"]
        label = cut(node.text.strip() or "(empty)", PREVIEW_CHARS)
        assert _unquote(attrs["label"]) == inert(label)
        assert _unquote(attrs["tooltip"]) == inert(node.text)
    assert _unquote(nodes["n2"]["label"]) == 'say "hi"\\n\\x1b[2J\nsecond line\\x00'
    graph = next(a for h, a in statements if h == ["graph"])
    assert _unquote(graph["label"]) == 'Title "q"\n\\x1b[1m'


def test_dot_styles() -> None:
    out = render_document(_small(), "dot")
    statements = _statements(out)
    nodes = {h[0]: a for h, a in statements if len(h) == 1 and h[0] not in DEFAULTS}
    edges = {h[2]: a for h, a in statements if len(h) == 3}
    assert "bold" in _unquote(nodes["n2"]["style"])  # bookmarked
    assert "dashed" in _unquote(nodes["n3"]["style"]) and edges["n3"]["style"] == "dashed"
    assert _unquote(nodes["n4"]["color"]) == "#aa00ff"  # the model's persona label
    assert _unquote(nodes["n5"]["color"]) == "green"  # a hand label
    assert nodes["n4"]["peripheries"] == "2"  # the current node
    assert "peripheries" not in nodes["n2"]
    # loom's one mean probability: the geometric mean of the tokens' p (0.9 and 0.5)
    assert float(edges["n3"]["penwidth"]) == pytest.approx(
        0.5 + 3.5 * math.sqrt(0.9 * 0.5), abs=0.01
    )
    assert "penwidth" not in edges["n2"]  # no known probabilities


def test_edge_width_grows_with_probability() -> None:
    widths = []
    for p in (0.05, 0.5, 0.95):
        tokens = TokenArray.from_ids([1, 2, 3], ["a", "b", "c"])
        tokens.logprobs[:] = [math.log(p), np.nan, math.log(p)]
        node = Node(2, 1, "model", "abc", 1.0, tokens=tokens)
        assert mean_probability(node) == pytest.approx(p)
        doc = LoomDocument("", 1, [Node(1, None, "human", "", 0.0), node])
        edge = next(a for h, a in _statements(render_document(doc, "dot")) if len(h) == 3)
        widths.append(float(edge["penwidth"]))
    assert widths == sorted(widths) and widths[0] < widths[-1]


def test_dot_of_random_and_deep_looms_lexes() -> None:
    for doc in (random_document(13), chain_document(3000)):
        statements = _statements(render_document(doc, "dot"))
        assert sum(len(h) == 3 for h, _ in statements) == len(doc.nodes) - 1


def test_graphviz_accepts_the_output() -> None:
    # Not skipped when missing: .ci/install-test-deps (the README's test command) installs it.
    assert shutil.which("dot"), "Graphviz is not installed: run .ci/install-test-deps"
    for doc in (_small(), random_document(14)):
        result = subprocess.run(
            ["dot", "-Tsvg"],
            input=render_document(doc, "dot").encode(),
            capture_output=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr.decode()
        assert b"<svg" in result.stdout
        assert b"syntax error" not in result.stderr
