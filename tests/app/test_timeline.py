"""The replay timeline: the display history of the log, headless lines, and forking at a past point.

The display history (`loom.store.history`, which the HTML export's timeline is made of)
reads payloads without SQLite; it is checked against the store's own replay at every event. A loom
recorded through the real engine must rebuild from its log to exactly its final state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.engines import default_gguf, engine
from support.history import assert_history_matches_replay
from support.store import model_tokens, varied_session

from loom.app.timeline import fork_at, timeline_lines
from loom.engine.sampling import SamplerSettings
from loom.formats import render_document
from loom.store.errors import LoomError, LoomExistsError
from loom.store.history import read_history
from loom.store.loom import Loom, NewNode
from loom.store.model import LoomDocument
from loom.store.replay import rebuild, state_at

__all__ = ["default_gguf", "engine"]

BAD = "</script><script>alert(1)</script> <img src=x onerror=alert(2)> \x1b[31mred\x1b[0m \x00 \x9b"


@pytest.fixture
def loom(tmp_path: Path) -> Iterator[Loom]:
    with Loom.create(
        tmp_path / "s.loom", title="s", prompt="Bob:", prompt_tokens=model_tokens("Bob:")
    ) as lm:
        yield lm


def canonical(doc: LoomDocument) -> str:
    """Everything a document holds (nodes, tokens, events, meta), as loom-json text."""
    return render_document(doc, "loom-json")


# --- the display history --------------------------------------------------------------------------


def test_history_deltas_equal_the_store_replay_after_every_event(loom: Loom) -> None:
    varied_session(loom)  # every kind of edit, undo, redo and a discarded redo
    assert_history_matches_replay(loom.to_document().events)


def test_history_reads_store_events_and_dicts_alike(loom: Loom) -> None:
    varied_session(loom)
    _, from_events = read_history(loom.events())
    _, from_dicts = read_history(loom.to_document().events)
    assert [s.summary for s in from_events] == [s.summary for s in from_dicts]


# --- headless lines -------------------------------------------------------------------------------


def test_timeline_lines_are_one_escaped_line_per_event(loom: Loom) -> None:
    a, b = loom.add_children(
        loom.root_id, [NewNode("\x1b[31mred " + BAD), NewNode(" plain\nsecond line")]
    )
    loom.edit(b, "edited " + BAD)
    loom.prune(a)
    loom.undo()
    loom.set_manual_persona(b, BAD)
    loom.set_current(b)
    events = loom.events()
    lines = timeline_lines(events)
    assert len(lines) == len(events)
    for line, event in zip(lines, events, strict=True):
        assert line.split()[0] == str(event.seq)
        assert event.kind in line
        assert "\n" not in line and "\r" not in line
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in line), repr(line)
    text = "\n".join(lines)
    assert "\\x1b[31mred" in text  # the escape is shown, not sent to the terminal
    assert "(undone)" in lines[3] and "prune" in lines[3]
    assert "undo of event 4 (prune)" in lines[4]
    assert f"#{b}" in lines[-1] and "went to" in lines[-1]


def test_timeline_lines_refuse_a_log_without_a_snapshot(loom: Loom) -> None:
    loom.add_child(loom.root_id, " x")
    with pytest.raises(LoomError, match="snapshot"):
        timeline_lines(loom.events()[1:])


# --- forking at a past point ----------------------------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fork_at_writes_that_state_and_leaves_the_original_alone(
    loom: Loom, tmp_path: Path
) -> None:
    marks = varied_session(loom)
    loom.close()
    original = tmp_path / "s.loom"
    before = _digest(original)
    with Loom.open(original, readonly=True) as lm:
        events = lm.events()
        seq = marks[9][0]  # mid-session: after the delete, before its undo
        fork = fork_at(lm, seq, tmp_path / "fork.loom")
        expected = state_at(events, seq, tokens=lm)
    assert _digest(original) == before
    with Loom.open(fork) as forked:
        got = forked.to_document()
        assert got.events[-1]["kind"] == "import"
        got.events = got.events[:-1]  # the import of the fork itself is the only addition
        assert canonical(got) == canonical(expected)
        assert forked.stats()["nodes"] == len(expected.nodes)
        forked.add_child(forked.root_id, " a fork goes on by itself")  # and it is writable


def test_fork_at_checks_its_arguments(loom: Loom, tmp_path: Path) -> None:
    loom.add_child(loom.root_id, " one")
    with pytest.raises(LoomError, match="runs from 1 to 2"):
        fork_at(loom, 9, tmp_path / "x.loom")
    taken = tmp_path / "taken.loom"
    taken.write_bytes(b"keep")
    with pytest.raises(LoomExistsError):
        fork_at(loom, 1, taken)
    assert taken.read_bytes() == b"keep"


# --- a session recorded through the real engine ---------------------------------------------------


@pytest.mark.model
def test_a_real_session_replays_to_exactly_its_final_state(engine: Any, tmp_path: Path) -> None:
    from loom.app.session import Session
    from loom.store.tokenizer import FunctionTokenizer

    lm = Loom.create(
        tmp_path / "real.loom",
        title="croissants",
        prompt="Bob is a loyal patriot who sincerely despises croissants. Bob said:",
        tokenizer=FunctionTokenizer(engine.tokens_for),
    )
    s = Session(lm, engine)
    settings = SamplerSettings(temperature=0.9, max_tokens=6, seed=7)

    def generate(parent: int, n: int, forced: list[int] | None = None) -> list[int]:
        result = s.run_generation(s.prefix_ids(parent), n, settings, forced=forced)
        return s.save_branches(parent, result, settings, forced=forced)

    a, b, c = generate(lm.root_id, 3)
    human = s.add_human_child(a, " Then he smiled.")
    s.edit(b, lm.node(b).text + " and more")
    lm.prune(c)
    lm.set_bookmark(a, True)
    lm.undo()  # the bookmark
    lm.redo()
    lm.set_current(human)
    head = s.counterfactual_parent(a, 2)  # split, then branch with another first token
    alt = lm.node(a).tokens.top(2)[1].id if len(lm.node(a).tokens) > 2 else None
    generate(head, 2, forced=[alt] if alt is not None else None)
    lm.set_manual_persona(b, "waluigi")
    lm.delete_subtree(human)
    lm.undo()
    lm.add_tag(b, "suspicious")
    generate(human, 2)
    lm.close()

    with Loom.open(tmp_path / "real.loom", readonly=True) as lm:
        final = lm.to_document()
        events = lm.events()
        assert canonical(rebuild(events, tokens=lm)) == canonical(final)
        assert canonical(rebuild(final.events)) == canonical(final)
        exported = final.events
        assert_history_matches_replay(exported)  # and the HTML timeline agrees at every step
        seq = events[len(events) // 2].seq
        fork = fork_at(lm, seq, tmp_path / "past.loom")
        expected = state_at(events, seq, tokens=lm)
    with Loom.open(fork, readonly=True) as past:
        got = past.to_document()
        got.events = got.events[:-1]
        assert canonical(got) == canonical(expected)
