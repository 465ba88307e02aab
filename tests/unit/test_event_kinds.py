"""Every event kind the store can write is read by every reader of the log.

The kinds come from `loom.store.events.KINDS`; the session below makes each one through the
public `Loom` API (and undoes and redoes every undoable one, and a group), and the test fails if
a kind is added there without being made here. Readers checked: the display history
(`formats.history`, behind `loom replay --headless`, the TUI replay and the HTML timeline), the
store's replay (`loom.store.replay`, behind `loom fork`: its state after every step must equal
the live loom's), the HTML export's timeline data, and the `loom` commands themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_loom
from support.history import assert_history_matches_replay
from support.store import doc_snapshot, model_tokens

from loom.formats.export.html_data import timeline
from loom.store import document
from loom.store import events as ev
from loom.store.history import read_history
from loom.store.loom import Loom, NewNode
from loom.store.model import Memory, Persona, PersonaLabel
from loom.store.replay import state_at

Marks = list[tuple[int, dict[str, Any]]]


def _mark(lm: Loom, marks: Marks) -> None:
    marks.append((lm.events()[-1].seq, doc_snapshot(lm.to_document(events=False))))


def _undo_redo(lm: Loom, marks: Marks) -> None:
    """Undo the step just made and redo it, marking the state after each."""
    assert lm.undo() is not None
    _mark(lm, marks)
    assert lm.redo() is not None
    _mark(lm, marks)


def every_kind_session(tmp_path: Path) -> tuple[Loom, Marks]:
    """A loom whose log holds every kind; (seq, state) after each public call."""
    with Loom.create(
        tmp_path / "first.loom", title="t", prompt="Bob:", prompt_tokens=model_tokens("Bob:")
    ) as first:  # create
        first.add_child(first.root_id, " before the import")
        doc = first.to_document()
    # import (after the carried log), one node a snapshot event: import, then import_nodes
    batch, document.SNAPSHOT_BATCH = document.SNAPSHOT_BATCH, 1
    try:
        lm = Loom.from_document(tmp_path / "kinds.loom", doc)
    finally:
        document.SNAPSHOT_BATCH = batch
    marks: Marks = []
    _mark(lm, marks)
    root = lm.root_id
    edits: list[tuple[str, Any]] = []

    def step(kind: str, call: Any) -> Any:
        result = call()
        assert lm.events()[-1].kind == kind, kind
        _mark(lm, marks)
        _undo_redo(lm, marks)
        edits.append((kind, result))
        return result

    a, b = step(
        ev.ADD,
        lambda: lm.add_children(
            root, [NewNode(" Luigi bows", tokens=model_tokens(" Luigi bows")), NewNode(" Wa")]
        ),
    )
    step(ev.EDIT, lambda: lm.edit(b, " Waluigi sneers"))
    tail = step(ev.SPLIT, lambda: lm.split(a, at_char=6))
    step(ev.MERGE, lambda: lm.merge_into_parent(tail))
    step(ev.PRUNE, lambda: lm.prune(a))
    step(ev.UNPRUNE, lambda: lm.unprune(a))
    step(ev.BOOKMARK, lambda: lm.set_bookmark(b, True))
    step(ev.TAG, lambda: lm.add_tag(b, "villain"))
    step(ev.UNTAG, lambda: lm.remove_tag(b, "villain"))
    step(ev.MOVE, lambda: lm.move(b, a))
    luigi = PersonaLabel("luigi", "model", {"luigi": 0.8, "waluigi": 0.2})
    step(ev.PERSONA, lambda: lm.set_persona(a, luigi))
    step(ev.MANUAL_PERSONA, lambda: lm.set_manual_persona(b, "waluigi"))
    personas = [Persona("luigi", "kind", "green", 0.5), Persona("waluigi", "mean", "red", 0.5)]
    step(ev.PERSONAS, lambda: lm.set_personas(personas))
    step(ev.TITLE, lambda: lm.set_title("croissants"))
    step(ev.MEMORY, lambda: lm.set_memory(a, Memory("Bob hates croissants.\n")))
    step(ev.MEMORY, lambda: lm.set_memory(None, Memory("[A play]", depth=4)))
    census = {
        "node": a,
        "seed": 7,
        "settings": {"rollouts": 2, "tokens": 3},
        "names": ["luigi", "waluigi"],
        "model": "toy",
        "model_sha256": "",
        "token_index": None,
        "outcomes": [
            {
                "forced": [],
                "text": "",
                "p": 1.0,
                "rollouts": [
                    {"tokens": model_tokens(" and waves"), "label": "luigi",
                     "posterior": {"luigi": 0.9, "waluigi": 0.1}, "repetition": False,
                     "collapse": False, "batch_seed": 1, "batch_index": i}
                    for i in range(2)
                ],
            }
        ],
    }  # fmt: skip
    step(ev.CENSUS, lambda: lm.add_census(census))
    with lm.batch(auto="explore"):  # an automatic step of guided growth, even of one edit
        lm.add_child(a, " grown by itself")
    assert lm.events()[-1].kind == ev.GROUP and lm.events()[-1].payload["auto"] == "explore"
    _mark(lm, marks)
    _undo_redo(lm, marks)
    c = lm.add_child(b, " and leaves")
    _mark(lm, marks)
    step(ev.DELETE, lambda: lm.delete_subtree(c))

    lm.set_current(b)  # visit
    assert lm.events()[-1].kind == ev.VISIT
    _mark(lm, marks)

    lm.add_scores("toy", "", [(b, model_tokens(lm.node(b).text))])  # score: a model's reading
    assert lm.events()[-1].kind == ev.SCORE and lm.node(b).scores[0].model == "toy"
    _mark(lm, marks)

    with lm.batch():  # group: one undo step of several edits
        lm.add_tag(a, "hero")
        lm.set_bookmark(a, True)
        lm.edit(a, " Luigi bows low")
    assert lm.events()[-1].kind == ev.GROUP
    _mark(lm, marks)
    _undo_redo(lm, marks)

    lm.undo()
    _mark(lm, marks)
    lm.add_child(root, " a new branch")  # discard_redo: the undone group can no longer be redone
    assert ev.DISCARD_REDO in [e.kind for e in lm.events()[-2:]]
    _mark(lm, marks)
    assert not lm.can_redo
    return lm, marks


@pytest.fixture
def session(tmp_path: Path) -> Iterator[tuple[Loom, Marks]]:
    lm, marks = every_kind_session(tmp_path)
    with lm:
        yield lm, marks


def test_the_session_writes_every_kind_the_store_knows(session: tuple[Loom, Marks]) -> None:
    lm, _ = session
    written = {e.kind for e in lm.events()}
    assert written == set(ev.KINDS), f"not made by this test: {set(ev.KINDS) - written}"
    undone = {e.payload["target"] for e in lm.events() if e.kind == ev.UNDO}
    by_seq = {e.seq: e.kind for e in lm.events()}
    assert {by_seq[s] for s in undone} >= set(ev.UNDOABLE)  # every undoable kind undone...
    redone = {e.payload["target"] for e in lm.events() if e.kind == ev.REDO}
    assert {by_seq[s] for s in redone} >= set(ev.UNDOABLE)  # ...and redone


def test_the_display_history_reads_every_kind(session: tuple[Loom, Marks]) -> None:
    lm, _ = session
    _, steps = read_history(lm.events())
    assert [s.kind for s in steps] == [e.kind for e in lm.events()]
    groups = [s for s in steps if s.kind == ev.GROUP]
    group = next(s for s in groups if "automatic" not in s.summary)
    assert "3" in group.summary  # says how many edits it joined
    assert any(s.summary.startswith("automatic step (explore)") for s in groups)
    census = next(s for s in steps if s.kind == ev.CENSUS)
    assert census.summary.startswith("census of 2 rollouts") and "100%" in census.summary
    assert_history_matches_replay(lm.to_document().events)


def test_the_store_replay_is_the_live_state_after_every_call(
    session: tuple[Loom, Marks],
) -> None:
    lm, marks = session
    events = lm.to_document().events
    for seq, state in marks:
        assert doc_snapshot(state_at(events, seq)) == state, f"after event {seq}"
    refs = lm.events()  # token references resolved through the loom, as `loom fork` does
    for seq, state in marks[::7]:
        assert doc_snapshot(state_at(refs, seq, tokens=lm)) == state, f"after event {seq}"


def test_token_references_are_found_in_the_text_of_every_kind(
    session: tuple[Loom, Marks],
) -> None:
    """The export finds the log's token references by a search of each payload's text: it finds
    what a walk of the parsed payload finds, for every kind, and none in a text that spells one."""
    lm, _ = session
    spelled = lm.add_child(lm.root_id, ' {"$tok": 1}', author="human")  # as text, not a reference
    every: set[int] = set()
    for event in lm.events():
        walked: list[Any] = []
        ev.map_tokens(event.payload, lambda v, found=walked: found.append(v.get(ev.TOKEN_REF)))
        assert ev.token_refs_in(ev.dumps(event.payload)) == set(walked), event.kind
        every |= set(walked)
    assert every  # the session's log refers to tokens
    add = next(e for e in lm.events() if e.kind == ev.ADD and e.payload["parent"] == lm.root_id
               and e.payload["nodes"][0]["id"] == spelled)  # fmt: skip
    assert ev.token_refs_in(ev.dumps(add.payload)) == set()


def test_the_html_timeline_has_every_event(session: tuple[Loom, Marks]) -> None:
    lm, _ = session
    doc = lm.to_document()
    entries, note = timeline(doc)
    assert note == ""
    assert [e[0] for e in entries] == [e["seq"] for e in doc.events]
    assert {e[2] for e in entries} == set(ev.KINDS)


def test_the_commands_read_every_kind(session: tuple[Loom, Marks], tmp_path: Path) -> None:
    lm, marks = session
    path = lm.path
    assert path is not None
    lm.close()
    done = run_loom("replay", "--headless", path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    with Loom.open(path, readonly=True) as again:
        kinds = [e.kind for e in again.events()]
        group_seq = next(e.seq for e in again.events() if e.kind == ev.GROUP)
    assert [line.split()[3] for line in lines] == kinds
    html = tmp_path / "kinds.html"
    assert run_loom("export", path, "--format", "html", "-o", html).returncode == 0
    assert "cannot be replayed" not in html.read_text()
    state = dict(marks)[group_seq]
    fork = tmp_path / "fork.loom"
    done = run_loom("fork", path, "--at", str(group_seq), "-o", fork)
    assert done.returncode == 0, done.stderr
    with Loom.open(fork, readonly=True) as forked:
        got = doc_snapshot(forked.to_document(events=False))
    assert got == state
