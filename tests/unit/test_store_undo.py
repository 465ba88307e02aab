"""Undo and redo of every tree edit, in sequences, interleaved, and across reopen."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.store import WordTokenizer, digest, doc_snapshot, model_tokens, snapshot

from loom.store.loom import Loom, NewNode
from loom.store.model import Persona, PersonaLabel
from loom.store.replay import rebuild


@pytest.fixture
def loom(tmp_path: Path) -> Iterator[Loom]:
    with Loom.create(tmp_path / "u.loom", title="u", prompt="Root.") as lm:
        yield lm


def build(lm: Loom) -> dict[str, int]:
    """root ─ a ─ b ─ c, root ─ d (model nodes with tokens, tags, labels)."""
    r = lm.root_id
    a = lm.add_child(r, " Alpha one", author="model", tokens=model_tokens(" Alpha one", seed=1))
    b = lm.add_child(a, " Beta two", author="model", tokens=model_tokens(" Beta two", seed=2))
    c = lm.add_child(b, " Gamma", author="model", tokens=model_tokens(" Gamma", seed=3))
    d = lm.add_child(r, " Delta", author="model", tokens=model_tokens(" Delta", seed=4))
    lm.add_tag(b, "keep")
    lm.set_bookmark(c, True)
    lm.set_persona(b, PersonaLabel("luigi", "model", {"luigi": 0.7, "waluigi": 0.3}))
    lm.prune(d)
    return {"r": r, "a": a, "b": b, "c": c, "d": d}


def fts_ok(lm: Loom) -> None:
    assert lm.path is not None
    conn = sqlite3.connect(lm.path)
    try:
        conn.execute("INSERT INTO nodes_fts (nodes_fts) VALUES ('integrity-check')")
    finally:
        conn.close()


OPS: dict[str, Callable[[Loom, dict[str, int]], object]] = {
    "add": lambda lm, n: lm.add_child(n["c"], " Epsilon"),
    "add_batch": lambda lm, n: lm.add_children(n["d"], [NewNode(f" k{i}") for i in range(8)]),
    "edit": lambda lm, n: lm.edit(n["b"], " Beta changed"),
    "edit_tokens": lambda lm, n: lm.edit(n["b"], " Beta", tokens=model_tokens(" Beta", seed=9)),
    "split": lambda lm, n: lm.split(n["b"], at_char=5),
    "split_token": lambda lm, n: lm.split(n["a"], at_token=1),
    "merge": lambda lm, n: lm.merge_into_parent(n["c"]),
    "prune": lambda lm, n: lm.prune(n["a"]),
    "unprune": lambda lm, n: lm.unprune(n["d"]),
    "delete": lambda lm, n: lm.delete_subtree(n["a"]),
    "bookmark": lambda lm, n: lm.set_bookmark(n["a"], True),
    "unbookmark": lambda lm, n: lm.set_bookmark(n["c"], False),
    "tag": lambda lm, n: lm.add_tag(n["a"], "new"),
    "untag": lambda lm, n: lm.remove_tag(n["b"], "keep"),
    "move": lambda lm, n: lm.move(n["b"], n["d"]),
    "persona": lambda lm, n: lm.set_persona(n["a"], PersonaLabel(None, "model", {"x": 0.5})),
    "manual_persona": lambda lm, n: lm.set_manual_persona(n["b"], "waluigi"),
    "personas": lambda lm, n: lm.set_personas([Persona("luigi", "good", "green", 0.5)]),
    "title": lambda lm, n: lm.set_title("renamed"),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_edit_undoes_and_redoes_exactly(loom: Loom, name: str) -> None:
    nodes = build(loom)
    before = snapshot(loom)
    OPS[name](loom, nodes)
    after = snapshot(loom)
    assert after != before
    assert loom.undo() is not None
    assert snapshot(loom) == before
    fts_ok(loom)
    assert loom.redo() is not None
    assert snapshot(loom) == after
    fts_ok(loom)
    loom.undo()
    assert snapshot(loom) == before


def test_undo_of_delete_restores_tokens_tags_labels_and_order(loom: Loom) -> None:
    n = build(loom)
    tokens_b = digest(loom.node(n["b"]).tokens)
    loom.delete_subtree(n["a"])
    assert loom.search("Gamma") == []
    event = loom.undo()
    assert event is not None and event.kind == "delete" and event.undone
    b = loom.node(n["b"])
    assert digest(b.tokens) == tokens_b and b.tags == ["keep"]
    assert b.persona is not None and b.persona.label == "luigi"
    assert loom.node(n["c"]).bookmarked and loom.header(n["c"]).depth == 3
    assert [h.id for h in loom.children(loom.root_id)] == [n["a"], n["d"]]
    assert [h.node_id for h in loom.search("Gamma")] == [n["c"]]


def test_nothing_to_undo_or_redo(loom: Loom) -> None:
    assert loom.undo() is None and loom.redo() is None
    assert not loom.can_undo and not loom.can_redo
    loom.add_child(loom.root_id, " x")
    assert loom.can_undo and not loom.can_redo
    loom.undo()
    assert not loom.can_undo and loom.can_redo
    assert loom.undo() is None


def test_a_new_edit_after_undo_discards_the_redo_stack_and_logs_it(loom: Loom) -> None:
    a = loom.add_child(loom.root_id, " a")
    loom.add_child(a, " b")
    loom.undo()
    assert loom.can_redo
    loom.edit(a, " A")
    assert not loom.can_redo and loom.redo() is None
    kinds = [e.kind for e in loom.events()]
    assert kinds[-2:] == ["discard_redo", "edit"]
    discarded = [e for e in loom.events() if e.discarded]
    assert len(discarded) == 1 and discarded[0].kind == "add"
    assert loom.undo() is not None and loom.node(a).text == " a"
    assert loom.undo() is not None and a not in loom


def test_undo_redo_interleaved(loom: Loom) -> None:
    a = loom.add_child(loom.root_id, " a")
    s1 = snapshot(loom)
    loom.edit(a, " a1")
    s2 = snapshot(loom)
    loom.edit(a, " a2")
    s3 = snapshot(loom)
    loom.undo()
    assert snapshot(loom) == s2
    loom.undo()
    assert snapshot(loom) == s1
    loom.redo()
    assert snapshot(loom) == s2
    loom.undo()
    assert snapshot(loom) == s1
    loom.redo()
    loom.redo()
    assert snapshot(loom) == s3
    assert loom.redo() is None


def test_undo_history_survives_reopen_and_is_shared_by_handles(tmp_path: Path) -> None:
    path = tmp_path / "h.loom"
    with Loom.create(path, prompt="p") as lm:
        a = lm.add_child(lm.root_id, " a")
        lm.edit(a, " b")
    with Loom.open(path) as one, Loom.open(path) as two:
        one.undo()
        assert two.node(a).text == " a"
        two.redo()
        assert one.node(a).text == " b"


def test_visits_are_not_undone(loom: Loom) -> None:
    a = loom.add_child(loom.root_id, " a")
    b = loom.add_child(loom.root_id, " b")
    loom.set_current(a)
    loom.edit(b, " bb")
    loom.undo()
    assert loom.current == a and loom.node(b).text == " b"


def _random_op(lm: Loom, rng: random.Random) -> None:
    ids = _all_ids(lm)
    non_root = [i for i in ids if i != lm.root_id]
    choice = rng.choice(
        ["add", "add", "batch", "edit", "split", "merge", "prune", "delete", "tag", "move", "label"]
    )
    if choice == "add" or not non_root:
        word = rng.choice([" cat", " dog", " emu", " fox"]) * rng.randint(1, 3)
        lm.add_child(
            rng.choice(ids),
            word,
            author="model",
            tokens=model_tokens(word, seed=rng.randint(0, 99)),
        )
    elif choice == "batch":
        lm.add_children(rng.choice(ids), [NewNode(f" w{rng.randint(0, 9)} z") for _ in range(3)])
    elif choice == "edit":
        node = rng.choice(non_root)
        lm.edit(node, lm.node(node).text + rng.choice([" more", "!", " yes"]))
    elif choice == "split":
        node = rng.choice(non_root)
        text = lm.node(node).text
        if len(text) > 1:
            lm.split(node, at_char=rng.randint(1, len(text) - 1))
    elif choice == "merge":
        only = [
            i for i in non_root if len(lm.siblings(i)) == 0 and lm.header(i).parent != lm.root_id
        ]
        if only:
            lm.merge_into_parent(rng.choice(only))
    elif choice == "prune":
        node = rng.choice(non_root)
        (lm.unprune if lm.header(node).pruned else lm.prune)(node)
    elif choice == "delete":
        lm.delete_subtree(rng.choice(non_root))
    elif choice == "tag":
        lm.add_tag(rng.choice(ids), rng.choice(["x", "y", "z"]))
    elif choice == "move":
        node = rng.choice(non_root)
        below = {node, *[h for h in _subtree(lm, node)]}
        targets = [i for i in ids if i not in below]
        if targets:
            lm.move(node, rng.choice(targets))
    else:
        node = rng.choice(ids)
        lm.set_manual_persona(node, rng.choice(["luigi", "waluigi", None]))


def _all_ids(lm: Loom) -> list[int]:
    return [n.id for n in lm.to_document(events=False).nodes]


def _subtree(lm: Loom, node: int) -> list[int]:
    out, stack = [], [node]
    while stack:
        for h in lm.children(stack.pop()):
            out.append(h.id)
            stack.append(h.id)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_edit_sequences_undo_and_redo_through_every_state(loom: Loom, seed: int) -> None:
    rng = random.Random(seed)
    if seed == 3:
        loom.tokenizer = WordTokenizer()
    states = [snapshot(loom)]
    while len(states) < 30:
        n_events = len(loom.events())
        _random_op(loom, rng)
        if len(loom.events()) > n_events:
            states.append(snapshot(loom))
    for state in reversed(states[:-1]):
        assert loom.undo() is not None
        assert snapshot(loom) == state
    assert loom.undo() is None
    fts_ok(loom)
    for state in states[1:]:
        assert loom.redo() is not None
        assert snapshot(loom) == state
    fts_ok(loom)


def test_a_batch_is_one_transaction_and_one_undo_step(loom: Loom) -> None:
    n = build(loom)
    before = snapshot(loom)
    with loom.batch():
        loom.prune(n["b"])
        loom.add_tag(n["c"], "batch")
        with loom.batch():  # nested: joins the outer batch
            loom.set_manual_persona(n["a"], "waluigi")
        new = loom.add_child(n["d"], " inside")
        loom.set_current(new)  # visits are not undone, but are kept in the batch's transaction
    after = snapshot(loom)
    assert [e.kind for e in loom.events()][-2:] == ["visit", "group"]
    first = loom.undo()
    assert first is not None and first.kind == "prune"
    assert without_current(snapshot(loom)) == without_current(before)
    assert loom.current == n["d"]  # the visited node was removed with the add
    assert loom.redo() is not None
    assert without_current(snapshot(loom)) == without_current(after)
    loom.undo()
    assert loom.undo() is not None  # the step before the batch: build()'s prune of d
    assert not loom.header(n["d"]).pruned


def without_current(snap: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in snap.items() if k != "current"}


def test_a_failing_batch_changes_nothing(loom: Loom) -> None:
    n = build(loom)
    before, n_events = snapshot(loom), len(loom.events())
    with pytest.raises(RuntimeError), loom.batch():
        loom.prune(n["a"])
        loom.delete_subtree(n["d"])
        raise RuntimeError("scoring failed")
    assert snapshot(loom) == before and len(loom.events()) == n_events
    loom.edit(n["a"], " after")  # the loom is usable afterwards
    assert loom.node(n["a"]).text == " after"


def test_a_batch_survives_replay_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "b.loom"
    with Loom.create(path, prompt="p") as lm:
        a = lm.add_child(lm.root_id, " a")
        with lm.batch():
            lm.edit(a, " b")
            lm.add_tag(a, "t")
    with Loom.open(path) as lm:
        lm.undo()
        assert lm.node(a).text == " a" and lm.node(a).tags == []
        doc = lm.to_document()
        assert snapshot(lm)["nodes"] == doc_snapshot(rebuild(doc.events))["nodes"]
        lm.redo()
        assert lm.node(a).text == " b" and lm.node(a).tags == ["t"]
