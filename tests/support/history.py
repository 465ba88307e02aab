"""Checking the display history (loom.store.history) against the store's own replay."""

from __future__ import annotations

from typing import Any

from loom.formats.tree import children_of
from loom.store.history import History, NodeView
from loom.store.model import LoomDocument
from loom.store.replay import state_at

Shape = tuple[dict[int, tuple[Any, ...]], Any]


def doc_shape(doc: LoomDocument) -> Shape:
    """What a tree view shows of a document: per node its row, children in order; the cursor."""
    kids = children_of(doc.nodes)
    rows = {
        n.id: (
            n.parent,
            n.author,
            n.text,
            n.pruned,
            n.bookmarked,
            n.manual_persona or (n.persona.label if n.persona else None),
            tuple(n.tags),
            tuple(kids[n.id]),
        )
        for n in doc.nodes
    }
    return rows, doc.meta.get("current")


def history_shape(nodes: dict[int, NodeView], current: int | None) -> Shape:
    kids: dict[int | None, list[int]] = {}
    for node_id, view in sorted(nodes.items(), key=lambda kv: (kv[1].position, kv[0])):
        kids.setdefault(view.parent, []).append(node_id)
    rows = {
        i: (v.parent, v.author, v.text, v.pruned, v.bookmarked, v.label, tuple(v.tags),
            tuple(kids.get(i, [])))
        for i, v in nodes.items()
    }  # fmt: skip
    return rows, current


def assert_history_matches_replay(events: list[dict[str, Any]]) -> None:
    history = History()
    state: dict[int, NodeView] = {}
    for event in events:
        step = history.step(event)
        for node_id, view in step.changes.items():  # the deltas alone must rebuild the state
            if view is None:
                state.pop(node_id, None)
            else:
                state[node_id] = view
        expected = doc_shape(state_at(events, event["seq"]))
        assert history_shape(state, step.current) == expected, f"event {event['seq']}"
