"""The event log rebuilds the loom; export/import to LoomDocument keeps everything."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.store import WordTokenizer, doc_snapshot, model_tokens, snapshot, varied_session

from loom.store.errors import LoomError, LoomExistsError
from loom.store.loom import Loom
from loom.store.model import LoomDocument, Node
from loom.store.replay import Replay, rebuild, state_at
from loom.tokens import TokenArray


@pytest.fixture
def loom(tmp_path: Path) -> Iterator[Loom]:
    with Loom.create(
        tmp_path / "s.loom", title="s", prompt="Bob:", prompt_tokens=model_tokens("Bob:")
    ) as lm:
        yield lm


def without_depths(snap: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in snap.items() if k != "depths"}


def test_rebuild_from_the_log_equals_the_final_state(loom: Loom) -> None:
    varied_session(loom)
    final = doc_snapshot(loom.to_document())
    assert doc_snapshot(rebuild(loom.events(), tokens=loom)) == final


def test_rebuild_from_exported_events_needs_nothing_else(loom: Loom) -> None:
    varied_session(loom)
    doc = loom.to_document()
    json.dumps(doc.events, allow_nan=False)  # strict JSON: formats write it as it is
    assert doc_snapshot(rebuild(doc.events)) == doc_snapshot(doc)


def test_rebuild_of_references_without_their_loom_is_refused(loom: Loom) -> None:
    varied_session(loom)
    with pytest.raises(LoomError, match="tokens=loom"):
        rebuild(loom.events())


def test_state_at_every_seq_equals_what_the_loom_was_then(loom: Loom) -> None:
    marks = varied_session(loom)
    events = loom.to_document().events
    for seq, snap in marks:
        assert doc_snapshot(state_at(events, seq)) == without_depths(snap), f"at seq {seq}"


def test_replay_steps_one_event_at_a_time(loom: Loom) -> None:
    loom.add_child(loom.root_id, " one")
    loom.add_child(loom.root_id, " two")
    replay = Replay(loom.events(), tokens=loom)
    assert replay.loom is None and replay.seq == 0
    first = replay.step()
    assert first is not None and first.kind == "create"
    view = replay.loom
    assert view is not None and view.readonly and view.stats()["nodes"] == 1
    replay.step()
    assert view.stats()["nodes"] == 2
    replay.advance_to(None)
    assert replay.done and view.stats()["nodes"] == 3 and replay.step() is None
    with pytest.raises(LoomError):
        view.add_child(view.root_id, " not in a replay")


def test_replay_refuses_a_log_that_does_not_start_with_a_snapshot(loom: Loom) -> None:
    loom.add_child(loom.root_id, " one")
    with pytest.raises(LoomError, match="snapshot"):
        rebuild(loom.to_document().events[1:])


def test_export_import_round_trip_keeps_ids_and_everything(loom: Loom, tmp_path: Path) -> None:
    varied_session(loom)
    doc = loom.to_document()
    with Loom.from_document(tmp_path / "copy.loom", doc) as copy:
        assert doc_snapshot(copy.to_document()) == doc_snapshot(doc)
        assert snapshot(copy)["depths"] == snapshot(loom)["depths"]
        kinds = [e.kind for e in copy.events()]
        assert kinds[: len(doc.events)] == [e["kind"] for e in doc.events]
        assert kinds[-1] == "import" and not copy.can_undo
        again = copy.to_document()
        assert doc_snapshot(rebuild(again.events)) == doc_snapshot(doc)
        assert doc_snapshot(rebuild(copy.events(), tokens=copy)) == doc_snapshot(doc)
        new = copy.add_child(copy.root_id, " more")
        assert new > max(n.id for n in doc.nodes)
        assert copy.undo() is not None and copy.undo() is None


def test_partial_tokens_survive_export_and_import(loom: Loom, tmp_path: Path) -> None:
    a = loom.add_child(loom.root_id, " He", author="model", tokens=model_tokens(" He"))
    loom.edit(a, " He ran")
    with Loom.from_document(tmp_path / "p.loom", loom.to_document()) as copy:
        assert copy.header(a).tokens_partial
        assert copy.node(a).tokens.texts == [" He"]


def test_import_of_a_foreign_document_without_tokens_or_events(tmp_path: Path) -> None:
    nodes = [
        Node(id=10, parent=None, author="human", text="Root", created_at=1.0),
        Node(id=30, parent=20, author="model", text=" deeper", created_at=3.0, tags=["t"]),
        Node(id=20, parent=10, author="model", text=" child", created_at=2.0, bookmarked=True),
    ]
    doc = LoomDocument(title="foreign", root=10, nodes=nodes, meta={"source": "x", "current": 30})
    with Loom.from_document(tmp_path / "f.loom", doc, tokenizer=WordTokenizer()) as lm:
        assert lm.root_id == 10 and lm.current == 30 and lm.title == "foreign"
        assert lm.path_text(30) == "Root child deeper"
        assert lm.header(30).depth == 2 and lm.header(20).tokens_partial
        assert lm.bookmarks() == [20] and lm.tagged("t") == [30]
        assert lm.path_tokens(30).texts == ["Root", " child", " deeper"]
        assert lm.to_document().meta == {"source": "x", "current": 30}


def _doc(*nodes: tuple[int, int | None]) -> LoomDocument:
    return LoomDocument(
        title="bad",
        root=nodes[0][0],
        nodes=[
            Node(id=i, parent=p, author="human", text=f"n{i}", created_at=0.0) for i, p in nodes
        ],
    )


@pytest.mark.parametrize(
    "doc",
    [
        _doc((1, None), (2, 3), (3, 2)),  # a cycle away from the root
        _doc((1, None), (2, 99)),  # a dangling parent
        _doc((1, None), (1, None)),  # a duplicate id
        _doc((1, None), (2, None)),  # two roots
        LoomDocument(title="x", root=5, nodes=[]),  # no root
        LoomDocument(
            title="x",
            root=1,
            nodes=[Node(id=1, parent=None, author="human", text="r", created_at=0.0)],
            events=[{"seq": 1, "kind": "nonsense", "ts": 0, "payload": {}}],
        ),
    ],
)
def test_a_failed_import_leaves_nothing_behind(tmp_path: Path, doc: LoomDocument) -> None:
    with pytest.raises(LoomError) as info:
        Loom.from_document(tmp_path / "bad.loom", doc)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_import_refuses_an_existing_path(loom: Loom, tmp_path: Path) -> None:
    target = tmp_path / "taken.loom"
    target.write_bytes(b"precious")
    with pytest.raises(LoomExistsError):
        Loom.from_document(target, loom.to_document())
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("s.loom")] == ["taken.loom"]


def test_loom_json_round_trip_through_the_formats_module(loom: Loom, tmp_path: Path) -> None:
    formats = pytest.importorskip("loom.formats")
    varied_session(loom)
    doc = loom.to_document()
    formats.write_document(doc, "loom-json", tmp_path / "x.json")
    back = formats.read_document(tmp_path / "x.json")
    with Loom.from_document(tmp_path / "back.loom", back) as copy:
        assert doc_snapshot(copy.to_document()) == doc_snapshot(doc)
        assert doc_snapshot(rebuild(back.events)) == doc_snapshot(doc)


def test_empty_tokens_and_k0_tokens_round_trip(tmp_path: Path) -> None:
    k0 = TokenArray.from_ids([1, 2], ["a", "b"])
    doc = LoomDocument(
        title="",
        root=1,
        nodes=[
            Node(id=1, parent=None, author="human", text="ab", created_at=0.0, tokens=k0),
            Node(id=2, parent=1, author="human", text="", created_at=0.0),
        ],
    )
    with Loom.from_document(tmp_path / "k.loom", doc) as lm:
        assert lm.node(1).tokens.texts == ["a", "b"] and lm.node(1).tokens.k == 0
        assert len(lm.node(2).tokens) == 0 and not lm.header(2).tokens_partial
