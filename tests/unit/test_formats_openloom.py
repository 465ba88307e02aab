"""Open Loom: OpenLoom 1.0 trees in, loom's version 2 (1.0 plus extensions) out and back."""

from __future__ import annotations

import json
from typing import Any

import pytest
from support.compare import differences
from support.formats import DATA, chain_document, random_document, wide_document

from loom.formats import read_document, render_document

V1_NODE_KEYS = {
    "id",
    "text",
    "author",
    "modelId",
    "createdTime",
    "parentId",
    "childrenIds",
    "rememberedChildId",
}
V1_TREE_KEYS = {
    "id",
    "title",
    "description",
    "lastModified",
    "systemMessage",
    "rootNodeId",
    "currentNodeId",
    "nodes",
    "bookmarkedNodes",
}


@pytest.mark.parametrize("seed", range(8))
def test_random_looms_round_trip_losslessly(seed: int) -> None:
    doc = random_document(seed)
    back = read_document(render_document(doc, "openloom").encode())
    assert differences(doc, back) == []


def test_a_loom_without_a_current_node_comes_back_on_its_root() -> None:
    doc = random_document(2)
    del doc.meta["current"]
    back = read_document(render_document(doc, "openloom").encode())
    assert back.meta["current"] == doc.root  # OpenLoom requires a currentNodeId
    assert differences(doc, back, ignore_meta=("current",)) == []


def test_output_is_a_valid_openloom_1_tree() -> None:
    doc = random_document(6)
    data: dict[str, Any] = json.loads(render_document(doc, "openloom"))
    assert (data["format"], data["version"]) == ("open-loom", 3)
    assert set(data) >= V1_TREE_KEYS
    assert data["rootNodeId"] == str(doc.root)
    for key, node in data["nodes"].items():
        assert set(node) >= V1_NODE_KEYS and node["id"] == key
        assert node["author"] in ("user", "assistant")
        for child in node["childrenIds"]:
            assert data["nodes"][child]["parentId"] == key
        assert node["createdTime"].endswith("Z")
    assert set(data["bookmarkedNodes"]) == {str(n.id) for n in doc.nodes if n.bookmarked}
    # rememberedChildId traces the path from the root to the current node.
    node, path = data["nodes"][data["rootNodeId"]], []
    while node["rememberedChildId"] is not None:
        node = data["nodes"][node["rememberedChildId"]]
        path.append(node["id"])
    assert path[-1] == data["currentNodeId"] == str(doc.meta["current"])


def test_reading_a_1_0_file() -> None:
    doc = read_document(DATA / "openloom_v1.json")
    assert doc.title == "Croissant opinions"
    assert [n.text for n in doc.nodes] == [
        "You are Bob.",
        "Bob, what do you think of croissants?",
        "Honestly? I love them. Don't tell anyone.",  # childrenIds order, not key order
        "I despise them, sincerely and patriotically.",
    ]
    assert [n.author for n in doc.nodes] == ["human", "human", "model", "model"]
    assert doc.nodes[0].meta["openloom_author"] == "system"
    assert doc.nodes[2].meta["openloom_id"] == "A0000000-0000-4000-8000-000000000004"
    assert doc.nodes[2].meta["openloom_model"] == "davinci-002"
    assert [n.bookmarked for n in doc.nodes] == [False, False, True, False]
    assert doc.meta["current"] == 3
    assert doc.nodes[1].created_at == 1731782430.25
    assert doc.meta["openloom"]["systemMessage"] == "You are Bob."
    again = json.loads(render_document(doc, "openloom"))
    assert again["systemMessage"] == "You are Bob."
    assert again["nodes"]["3"]["author"] == "assistant"


def test_deep_and_wide_trees() -> None:
    for doc in (chain_document(3000), wide_document(500)):
        back = read_document(render_document(doc, "openloom").encode())
        assert differences(doc, back, ignore_meta=("current",)) == []


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.update(version=4), "newer than this loom reads"),
        (lambda d: d.update(rootNodeId="nope"), "root node 'nope' is missing"),
        (lambda d: d["nodes"]["3"].update(parentId="zzz"), "dangling parent 'zzz'"),
        (lambda d: d["nodes"]["3"]["extensions"]["loom"].update(author="cat"), "loom author"),
    ],
)
def test_bad_files(edit: Any, expected: str) -> None:
    from loom.formats import FormatError

    data = json.loads(render_document(random_document(1, size=5), "openloom"))
    edit(data)
    with pytest.raises(FormatError, match=expected):
        read_document(json.dumps(data).encode())


def test_nodes_added_by_another_app_renumber_and_drop_the_log() -> None:
    doc = random_document(3, size=6)
    data = json.loads(render_document(doc, "openloom"))
    data["nodes"]["x"] = {
        "id": "x",
        "text": "added elsewhere",
        "author": "user",
        "modelId": "",
        "createdTime": "2024-01-01T00:00:00Z",
        "parentId": "1",
        "childrenIds": [],
        "rememberedChildId": None,
    }
    data["nodes"]["1"]["childrenIds"].append("x")
    back = read_document(json.dumps(data).encode())
    assert len(back.nodes) == 7 and back.events == []
    assert any("events dropped" in w for w in back.meta["import_warnings"])
    added = next(n for n in back.nodes if n.text == "added elsewhere")
    assert added.meta["openloom_id"] == "x" and added.parent == back.root
    assert sorted(n.text for n in back.nodes) == sorted([*(n.text for n in doc.nodes), added.text])
