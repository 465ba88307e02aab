"""loom-json: lossless round trips of everything a loom holds."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from support.compare import differences
from support.formats import chain_document, random_document, wide_document

from loom.formats import read_document, render_document, write_document
from loom.store.model import LoomDocument


def _round_trip(doc: LoomDocument, **kwargs: object) -> LoomDocument:
    text = render_document(doc, "loom-json", **kwargs)  # type: ignore[arg-type]
    return read_document(text.encode("utf-8"))


@pytest.mark.parametrize("seed", range(12))
def test_random_looms_round_trip_losslessly(seed: int) -> None:
    doc = random_document(seed)
    back = _round_trip(doc)
    assert differences(doc, back) == []


def test_round_trip_through_a_file_and_a_stream(tmp_path: Path) -> None:
    doc = random_document(99)
    path = tmp_path / "out.json"
    write_document(doc, "loom-json", path)
    assert differences(doc, read_document(path)) == []
    text_stream, byte_stream = io.StringIO(), io.BytesIO()
    write_document(doc, "loom-json", text_stream)
    write_document(doc, "loom-json", byte_stream)
    assert text_stream.getvalue().encode("utf-8") == byte_stream.getvalue() == path.read_bytes()


def test_the_differences_helper_notices_changes() -> None:
    # Guards the round-trip tests: a comparison that saw nothing would make them vacuous.
    doc = random_document(3)
    back = _round_trip(doc)
    model = next(n for n in back.nodes if n.author == "model" and len(n.tokens))
    model.tokens.logprobs[0] = np.float32(-0.123)
    back.nodes[0].text += "!"
    back.meta["extra"] = 1
    found = differences(doc, back)
    assert any("logprobs" in d for d in found)
    assert any("text" in d for d in found)
    assert any(d.startswith("meta") for d in found)


def test_version_2_follows_its_contract() -> None:
    doc = random_document(5)
    text = render_document(doc, "loom-json")
    assert text.isascii()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert (data["format"], data["version"], data["root"]) == ("loom-json", 2, 1)
    assert list(data)[:7] == ["format", "version", "title", "root", "current", "personas", "vocab"]
    vocab = {int(k): v for k, v in data["vocab"].items()}
    columns = [n["tokens"] for n in data["nodes"] if n["tokens"]]
    assert any(set(c) >= {"ids", "logprobs", "top_ids", "top_logprobs"} for c in columns)
    for c in columns:
        assert all(len(c[k]) == len(c["ids"]) for k in c if k in ("logprobs", "entropy", "top_ids"))
        assert all(i in vocab or str(n) in c.get("texts", {}) for n, i in enumerate(c["ids"]))
    assert any(None in c.get("logprobs", []) for c in columns) or any(
        "logprobs" not in c for c in columns
    )
    assert len(text.splitlines()) >= len(doc.nodes)  # one node per line
    assert differences(doc, read_document(text.encode())) == []


def test_file_follows_the_contract() -> None:
    # Version 1, still written on request (`--format-version 1`).
    doc = random_document(5)
    text = render_document(doc, "loom-json", version=1)
    assert text.isascii()
    # Strict JSON: unknown logprobs are null, never NaN.
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert (data["format"], data["version"], data["root"]) == ("loom-json", 1, 1)
    assert data["current"] == doc.meta["current"]
    assert "current" not in data.get("meta", {})
    node = data["nodes"][0]
    for key in ("id", "parent", "author", "text", "created_at", "tokens", "generation"):
        assert key in node
    for key in ("persona", "manual_persona", "bookmarked", "pruned", "tags"):
        assert key in node
    tokens = [t for n in data["nodes"] for t in n["tokens"]]
    assert any(t["logprob"] is None for t in tokens)
    assert any(t["top"] and set(t["top"][0]) == {"id", "text", "logprob"} for t in tokens)
    assert any("entropy" in t for t in tokens)
    assert len(text.splitlines()) >= len(doc.nodes)  # one node per line


def test_an_explicit_current_node_wins() -> None:
    doc = random_document(1)
    back = _round_trip(doc, current=2)
    assert back.meta["current"] == 2
    assert differences(doc, back, ignore_meta=("current",)) == []


def test_deep_and_wide_trees_round_trip() -> None:
    for doc in (chain_document(3000), wide_document(500)):
        back = _round_trip(doc)
        assert differences(doc, back) == []


def test_branch_export_keeps_only_the_path() -> None:
    doc = random_document(8)
    target = doc.nodes[-1]
    back = _round_trip(doc, current=target.id, whole_tree=False)
    by_id = {n.id: n for n in doc.nodes}
    expected, node = [], target
    while True:
        expected.append(node.id)
        if node.parent is None:
            break
        node = by_id[node.parent]
    assert [n.id for n in back.nodes] == sorted(expected, key=[n.id for n in doc.nodes].index)
    assert back.events == []
    assert back.meta["current"] == target.id


def test_unordered_nodes_are_put_parents_first() -> None:
    doc = random_document(4)
    data = json.loads(render_document(doc, "loom-json"))
    data["nodes"].reverse()
    back = read_document(json.dumps(data).encode())
    seen: set[int] = set()
    for node in back.nodes:
        assert node.parent is None or node.parent in seen
        seen.add(node.id)
    assert sorted(n.id for n in back.nodes) == sorted(n.id for n in doc.nodes)
