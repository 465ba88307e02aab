"""loomsidian data.json import: notes, several roots, and never the settings (API keys)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from support.formats import DATA

from loom.formats import FormatError, list_notes, read_document, render_document
from loom.formats.tree import path_ids
from loom.store.model import LoomDocument

FIXTURE = DATA / "loomsidian_data.json"


def _path_text(doc: LoomDocument, node_id: int) -> str:
    by_id = {n.id: n for n in doc.nodes}
    return "".join(by_id[i].text for i in path_ids(doc, node_id))


def test_first_note_is_imported_and_the_others_are_named() -> None:
    doc = read_document(FIXTURE)
    assert doc.title == "lighthouse"
    assert doc.meta["loomsidian_note"] == "stories/lighthouse.md"
    (warning,) = doc.meta["import_warnings"]
    assert "2 notes" in warning and "'scratch.md'" in warning
    # Two parentless nodes: they hang under a new empty root.
    root = doc.nodes[0]
    assert (root.text, root.parent) == ("", None)
    assert len([n for n in doc.nodes if n.parent == root.id]) == 2
    assert len(doc.nodes) == 7 + 1


def test_texts_paths_bookmarks_and_current() -> None:
    doc = read_document(FIXTURE)
    by_key = {n.meta["loomsidian_id"]: n for n in doc.nodes if "loomsidian_id" in n.meta}
    current = by_key["9b0e1c5e-5d4f-4c59-a0a4-1f6a2b7c3d11"]
    assert doc.meta["current"] == current.id
    assert _path_text(doc, current.id) == (
        "The keeper of the lighthouse had not spoken to anyone in eleven years."
        " Then, one night in March, the lamp began to answer him."
        "\n\n\u201cWho is there?\u201d it flashed, in a Morse he had not taught it."
    )
    assert [n.meta["loomsidian_id"] for n in doc.nodes if n.bookmarked] == [
        "7c1a9e22-8d4b-4f0e-b3a1-5e6f7a8b9c02"
    ]
    bookmarked = by_key["7c1a9e22-8d4b-4f0e-b3a1-5e6f7a8b9c02"]
    assert bookmarked.created_at == 1709251260.0  # lastVisited, in JavaScript milliseconds
    assert bookmarked.meta["loomsidian"]["color"] == "purple"
    # No lastVisited: the parent's time stands in.
    assert by_key["a3b4c5d6-e7f8-4a9b-8c0d-1e2f3a4b5c63"].created_at == 1709251200.0
    # Children keep the plugin's order.
    kids = [n.text for n in doc.nodes if n.parent == bookmarked.id]
    assert kids[0].startswith("\n\n\u201cWho") and kids[1].startswith("\n\nHe did")
    assert {n.author for n in doc.nodes} == {"human"}  # upstream records no authors


def test_settings_and_api_keys_are_never_imported() -> None:
    doc = read_document(FIXTURE)
    text = render_document(doc, "loom-json")
    assert "sk-fixture-secret" not in text
    assert "modelPresets" not in text


def test_a_named_note() -> None:
    doc = read_document(FIXTURE, note="scratch.md")
    assert doc.title == "scratch"
    assert [n.text for n in doc.nodes] == ["Dear diary,"]
    assert "import_warnings" not in doc.meta


def test_an_unknown_note_lists_the_notes() -> None:
    with pytest.raises(FormatError) as info:
        read_document(FIXTURE, note="missing.md")
    assert "'stories/lighthouse.md', 'scratch.md'" in str(info.value)


def _note(nodes: Any, current: str = "a") -> bytes:
    return json.dumps(
        {"settings": {}, "state": {"n.md": {"current": current, "nodes": nodes}}}
    ).encode()


def test_list_form_nodes_with_authors() -> None:
    nodes = [
        {"id": "a", "text": "Once", "parentId": None, "author": "genesis"},
        {"id": "b", "value": " upon", "parentId": "a", "author": "gpt-4-base", "bookmarked": True},
    ]
    doc = read_document(_note(nodes, current="b"))
    assert [(n.text, n.author) for n in doc.nodes] == [("Once", "human"), (" upon", "model")]
    assert doc.nodes[1].meta["loomsidian_author"] == "gpt-4-base"
    assert doc.nodes[1].bookmarked and doc.meta["current"] == 2


def test_a_missing_parent_is_kept_and_reported() -> None:
    nodes = {
        "a": {"text": "root", "parentId": None},
        "b": {"text": "orphan", "parentId": "gone"},
    }
    doc = read_document(_note(nodes))
    assert sorted(n.text for n in doc.nodes) == ["", "orphan", "root"]
    assert any("'gone'" in w for w in doc.meta["import_warnings"])


def test_cycles_are_rejected() -> None:
    nodes = {
        "a": {"text": "root", "parentId": None},
        "b": {"text": "x", "parentId": "c"},
        "c": {"text": "y", "parentId": "b"},
    }
    with pytest.raises(FormatError, match="cycle"):
        read_document(_note(nodes))


def test_empty_data_json() -> None:
    with pytest.raises(FormatError, match="no notes"):
        read_document(b'{"settings": {}, "state": {}}', "loomsidian")


def test_a_bare_note_state() -> None:
    state = {"current": "a", "hoisted": [], "nodes": {"a": {"text": "hi", "parentId": None}}}
    doc = read_document(json.dumps(state).encode())
    assert [n.text for n in doc.nodes] == ["hi"]
    assert doc.meta["loomsidian"] == {"hoisted": []}


def test_a_wide_note() -> None:
    nodes = {"r": {"text": "root", "parentId": None}}
    nodes.update({f"c{i}": {"text": f" {i}", "parentId": "r"} for i in range(500)})
    doc = read_document(_note(nodes, current="c499"))
    assert len(doc.nodes) == 501
    assert [n.text for n in doc.nodes[1:]] == [f" {i}" for i in range(500)]


def test_a_deep_note() -> None:
    nodes = {"n0": {"text": "0", "parentId": None}}
    nodes.update({f"n{i}": {"text": f" {i}", "parentId": f"n{i - 1}"} for i in range(1, 3000)})
    doc = read_document(_note(nodes, current="n2999"))
    assert len(doc.nodes) == 3000
    assert path_ids(doc, doc.meta["current"]) == list(range(1, 3001))


def test_listing_notes_and_a_long_list_is_cut_short() -> None:
    assert list_notes(FIXTURE) == ["stories/lighthouse.md", "scratch.md"]
    note = {"current": "a", "nodes": {"a": {"text": "", "parentId": None}}}
    state = {f"note{i}.md": note for i in range(40)}
    doc = read_document(json.dumps({"state": state}).encode())
    (warning,) = doc.meta["import_warnings"]
    assert "40 notes" in warning and "and 29 more" in warning and "note39" not in warning
