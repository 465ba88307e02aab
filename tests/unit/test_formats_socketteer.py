"""socketteer/loom save files: real files in, the same tree out, deep and wide trees both ways."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from support.compare import token_differences
from support.formats import (
    DATA,
    chain_document,
    count_nested,
    leaf_paths,
    nested_leaf_paths,
    random_document,
    wide_document,
)

from loom.formats import jsonio, read_document, render_document, write_document
from loom.formats.socketteer import format_timestamp, parse_timestamp
from loom.store.model import LoomDocument

REAL_FILES = ["socketteer_dialectical.json", "socketteer_teleology.json"]


def _export(doc: LoomDocument, **kwargs: Any) -> dict[str, Any]:
    data: dict[str, Any] = jsonio.loads(render_document(doc, "socketteer", **kwargs))
    return data


def _reimport(doc: LoomDocument) -> LoomDocument:
    return read_document(render_document(doc, "socketteer").encode())


def test_dialectical_imports_faithfully() -> None:
    doc = read_document(DATA / "socketteer_dialectical.json")
    assert doc.title == "socketteer_dialectical"
    assert len(doc.nodes) == 14
    root = doc.nodes[0]
    assert root.text.startswith("The following quote is from an unpublished article")
    assert root.meta["socketteer_id"] == "0a5457a8-5212-11eb-9b79-d92542d8d351"
    # The old-style `"bookmark": true` attribute, on the file's selected node.
    marked = [n for n in doc.nodes if n.bookmarked]
    assert [n.meta["socketteer_id"] for n in marked] == ["698ed199-5212-11eb-9b79-d92542d8d351"]
    assert doc.meta["current"] == marked[0].id
    assert doc.meta["socketteer"]["generation_settings"]["model"] == "davinci"
    # No `meta.source` anywhere: every node reads as written by a person.
    assert {n.author for n in doc.nodes} == {"human"}
    # Ids follow reading order, so the file's sibling order survives sorting by id.
    second = [n for n in doc.nodes if n.parent == 1]
    assert second[0].text.startswith("Paradox is the passion")
    assert [n.id for n in second] == sorted(n.id for n in second)


def test_teleology_imports_authors_times_and_hoisting() -> None:
    doc = read_document(DATA / "socketteer_teleology.json")
    assert len(doc.nodes) == 17
    placeholders = [n for n in doc.nodes if n.text == "\n\n** Generating **"]
    assert len(placeholders) == 4 and {n.author for n in placeholders} == {"human"}
    generated = [n for n in doc.nodes if n.meta.get("socketteer", {}).get("generation")]
    assert len(generated) == 12 and {n.author for n in generated} == {"model"}
    first = next(n for n in generated if n.text.startswith("Teleology\n"))
    assert first.created_at == parse_timestamp("2023-02-14-17.02.33")
    assert format_timestamp(first.created_at) == "2023-02-14-17.02.33"
    # The hoisted root keeps its masked head (a nested subtree) as foreign data.
    assert (
        doc.nodes[0].meta["socketteer"]["masked_head"]["id"]
        == "f2e5d98e-ac87-11ed-8661-0d9eaf142f06"
    )
    selected = next(n for n in doc.nodes if n.id == doc.meta["current"])
    assert selected.meta["socketteer_id"] == "ded6d89b-ac97-11ed-8661-0d9eaf142f06"


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_file_round_trips_to_the_same_tree(name: str) -> None:
    original = json.loads((DATA / name).read_text(encoding="utf-8"))
    doc = read_document(DATA / name)
    exported = _export(doc)
    assert count_nested(exported["root"]) == count_nested(original["root"]) == len(doc.nodes)
    assert nested_leaf_paths(exported["root"]) == nested_leaf_paths(original["root"])
    assert exported["selected_node_id"] == original["selected_node_id"]
    for key, value in original.items():  # every top-level field comes back unchanged
        if key != "root":
            assert exported[key] == value, key
    again = read_document(render_document(doc, "socketteer").encode(), "socketteer")
    assert len(again.nodes) == len(doc.nodes)
    assert leaf_paths(again) == leaf_paths(doc)
    assert render_document(again, "socketteer") == render_document(doc, "socketteer")


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_file_nodes_keep_their_fields(name: str) -> None:
    original = json.loads((DATA / name).read_text(encoding="utf-8"))
    exported = _export(read_document(DATA / name))
    before, after = _by_id(original["root"]), _by_id(exported["root"])
    assert set(before) == set(after)
    for node_id, node in before.items():
        out = after[node_id]
        for key, value in node.items():
            if key == "children":
                assert [c["id"] for c in out["children"]] == [c["id"] for c in value]
            elif key == "bookmark":
                assert out["bookmark"] is True and "bookmark" in out["tags"]
            else:
                assert out[key] == value, (node_id, key)


def _by_id(root: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out, stack = {}, [root]
    while stack:
        node = stack.pop()
        out[node["id"]] = node
        stack.extend(node["children"])
    return out


def test_deep_tree_both_ways_past_the_recursion_limit(tmp_path: Path) -> None:
    depth = 3000
    assert depth * 2 > sys.getrecursionlimit()  # nested JSON needs two levels per tree level
    doc = chain_document(depth)
    path = tmp_path / "deep.json"
    write_document(doc, "socketteer", path)
    data = jsonio.loads(path.read_text(encoding="utf-8"))
    assert count_nested(data["root"]) == depth
    back = read_document(path)
    assert [n.text for n in back.nodes] == [n.text for n in doc.nodes]
    assert [n.parent for n in back.nodes] == [n.parent for n in doc.nodes]


def test_deep_file_written_elsewhere_imports() -> None:
    # Built by hand, as socketteer itself would nest it, then read with loom.
    leaf: dict[str, Any] = {"id": "n2999", "text": "end", "children": []}
    node = leaf
    for i in range(2998, -1, -1):
        node = {"id": f"n{i}", "text": f"{i} ", "children": [node]}
    text = jsonio.dumps({"root": node, "selected_node_id": "n2999"})
    doc = read_document(text.encode())
    assert len(doc.nodes) == 3000
    assert doc.nodes[-1].text == "end" and doc.meta["current"] == 3000


def test_wide_tree_both_ways() -> None:
    doc = wide_document(500)
    exported = _export(doc)
    assert len(exported["root"]["children"]) == 500
    assert [c["text"] for c in exported["root"]["children"]] == [n.text for n in doc.nodes[1:]]
    back = _reimport(doc)
    assert len(back.nodes) == 501
    assert leaf_paths(back) == leaf_paths(doc)


def test_loom_data_survives_a_trip_through_socketteer() -> None:
    doc = random_document(21)
    back = _reimport(doc)
    assert leaf_paths(back) == leaf_paths(doc)
    assert back.title == doc.title and back.personas == doc.personas
    by_text = {n.text: n for n in back.nodes}  # random_document texts end in a unique "#id"
    assert len(by_text) == len(doc.nodes)
    for mine in doc.nodes:
        theirs = by_text[mine.text]
        assert theirs.author == mine.author
        assert (theirs.bookmarked, theirs.pruned) == (mine.bookmarked, mine.pruned)
        assert sorted(theirs.tags) == sorted(mine.tags)
        assert (theirs.generation, theirs.persona) == (mine.generation, mine.persona)
        assert theirs.manual_persona == mine.manual_persona
        assert token_differences(mine.tokens, theirs.tokens) == []
        if len(mine.tokens) or mine.generation or mine.persona or mine.manual_persona:
            assert theirs.created_at == mine.created_at
        else:  # socketteer keeps whole seconds
            assert theirs.created_at == int(mine.created_at)


def test_socketteer_sees_bookmarks_archives_and_custom_tags() -> None:
    doc = random_document(21)
    exported = _export(doc)
    nodes = {n["text"]: n for n in _all(exported["root"])}
    for mine in doc.nodes:
        tags = nodes[mine.text].get("tags", [])
        assert ("bookmark" in tags) == mine.bookmarked
        assert ("archived" in tags) == mine.pruned  # socketteer hides archived nodes
        # Nodes that came from socketteer without `meta` get one only if the author needs it.
        source = nodes[mine.text].get("meta", {}).get("source", "prompt")
        assert source == ("AI" if mine.author == "model" else "prompt")
    custom = {t for n in doc.nodes for t in n.tags}
    assert custom and custom <= set(exported["tags"])
    assert exported["tags"]["funny"]["scope"] == "node"


def test_tokens_of_text_edited_in_socketteer_are_dropped() -> None:
    doc = random_document(21)
    exported = _export(doc)
    edited = next(n for n in _all(exported["root"]) if n.get("loom", {}).get("tokens"))
    edited["text"] += " (edited in socketteer)"
    back = read_document(jsonio.dumps(exported).encode())
    node = next(n for n in back.nodes if n.text == edited["text"])
    assert len(node.tokens) == 0
    assert any("tokens dropped" in w for w in back.meta["import_warnings"])


def test_branch_export_nests_only_the_path() -> None:
    doc = random_document(8)
    target = doc.nodes[-1]
    exported = _export(doc, current=target.id, whole_tree=False)
    assert exported["selected_node_id"] == _all(exported["root"])[-1]["id"]
    chain = _all(exported["root"])
    assert all(len(n["children"]) <= 1 for n in chain)
    assert chain[-1]["text"] == target.text


def _all(root: dict[str, Any]) -> list[dict[str, Any]]:
    out, stack = [], [root]
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(node["children"]))
    return out


def test_exporting_twice_gives_the_same_file() -> None:
    """Nodes made in loom have no socketteer id: theirs come from their loom ids, not chance."""
    doc = random_document(21)
    first, second = render_document(doc, "socketteer"), render_document(doc, "socketteer")
    assert first == second
    ids = [n["id"] for n in _walk(json.loads(first)["root"])]
    assert len(ids) == len(set(ids)) == len(doc.nodes)


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    out, stack = [], [node]
    while stack:
        item = stack.pop()
        out.append(item)
        stack.extend(item.get("children", []))
    return out
