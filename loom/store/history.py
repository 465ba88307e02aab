"""The event log as a story: one line per event, and the tree's shape after every event.

Two readers need the log without a database: the HTML export (its replay timeline shows the tree
as it was after event k, in a browser) and `loom replay --headless` (one line per event). Replaying
through SQLite (`loom.store.replay`) is exact but costs a transaction per event and a whole export
per snapshot; here the payloads are read directly and only what a tree view shows is kept
(parent, sibling order, author, text, marks, persona label, tags). Each event then yields a small
list of changed nodes, so a viewer moves between any two points by applying (or reverting) deltas.

The payload shapes are the store's (`loom/store/loom.py` writes them, `apply.py` applies them);
tests check this reading against `replay.state_at` at every event, so the two cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loom.store import events as ev
from loom.text import quoted


@dataclass
class NodeView:
    """What a tree row shows of a node at some point of the log."""

    parent: int | None
    position: int
    author: str
    text: str
    pruned: bool = False
    bookmarked: bool = False
    manual: str | None = None  # hand label (wins)
    model_label: str | None = None  # the model's persona label
    tags: list[str] = field(default_factory=list)

    @property
    def label(self) -> str | None:
        return self.manual if self.manual is not None else self.model_label


@dataclass
class Step:
    """One event's effect: the nodes it changed (None: removed) and the current node after it."""

    seq: int
    ts: float
    kind: str
    node: int | None  # the node the event is about, for a list entry
    summary: str  # one escaped line, without seq, time or kind
    changes: dict[int, NodeView | None]
    current: int | None


class HistoryError(ValueError):
    """The log cannot be read as a history (foreign or damaged events)."""


def _label_of(persona: Any) -> str | None:
    if isinstance(persona, Mapping) and isinstance(persona.get("label"), str):
        return str(persona["label"])
    return None


def _view(record: Mapping[str, Any]) -> NodeView:
    return NodeView(
        parent=record.get("parent"),
        position=int(record.get("position", 0)),
        author=str(record.get("author", "human")),
        text=str(record.get("text", "")),
        pruned=bool(record.get("pruned", False)),
        bookmarked=bool(record.get("bookmarked", False)),
        manual=record.get("manual_persona"),
        model_label=_label_of(record.get("persona")),
        tags=[str(t) for t in record.get("tags") or []],
    )


class History:
    """Reads events in order, keeping the display state of every node."""

    def __init__(self) -> None:
        self.nodes: dict[int, NodeView] = {}
        self.root: int | None = None
        self.current: int | None = None
        self.title = ""
        self._events: dict[int, tuple[str, dict[str, Any]]] = {}
        self._touched: set[int] = set()

    # --- reading the log --------------------------------------------------------------------

    def read(self, events: Iterable[Mapping[str, Any] | ev.Event]) -> list[Step]:
        steps = []
        for item in events:
            event = item.to_json() if isinstance(item, ev.Event) else item
            try:
                steps.append(self.step(event))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                seq = event.get("seq", "?") if isinstance(event, Mapping) else "?"
                raise HistoryError(f"event {seq} cannot be read: {exc!r}") from None
        return steps

    def step(self, event: Mapping[str, Any]) -> Step:
        seq, kind, payload = int(event["seq"]), str(event["kind"]), dict(event["payload"])
        if not self._events and kind not in ev.SNAPSHOTS:
            raise HistoryError(f"the log starts with {kind!r}, not a snapshot")
        self._events[seq] = (kind, payload)
        self._touched = set()
        node, summary = self._describe(kind, payload)
        if kind == ev.UNDO:
            target_kind, target = self._events[int(payload["target"])]
            self._apply(target_kind, target, forward=False)
        elif kind == ev.REDO:
            target_kind, target = self._events[int(payload["target"])]
            self._apply(target_kind, target, forward=True)
        else:
            self._apply(kind, payload, forward=True)
        changes = {i: self._copy(i) for i in sorted(self._touched)}
        return Step(seq, float(event["ts"]), kind, node, summary, changes, self.current)

    def _copy(self, node_id: int) -> NodeView | None:
        view = self.nodes.get(node_id)
        if view is None:
            return None
        return NodeView(**{**view.__dict__, "tags": list(view.tags)})

    # --- changing the state -----------------------------------------------------------------

    def _put(self, record: Mapping[str, Any]) -> None:
        node_id = int(record["id"])
        self.nodes[node_id] = _view(record)
        self._touched.add(node_id)

    def _drop(self, node_id: int) -> None:
        self.nodes.pop(node_id, None)
        self._touched.add(node_id)

    def _update(self, node_id: int, values: Mapping[str, Any]) -> None:
        view = self.nodes[node_id]
        for key, value in values.items():
            if key == "persona":
                view.model_label = _label_of(value)
            elif key == "manual_persona":
                view.manual = value
            elif key in ("text", "author"):
                setattr(view, key, str(value))
            elif key in ("pruned", "bookmarked"):
                setattr(view, key, bool(value))
            elif key == "tags":
                view.tags = [str(t) for t in value or []]
            elif key == "parent":
                view.parent = value
            elif key == "position":
                view.position = int(value)
            # token columns and generation settings are not shown in a tree row
        self._touched.add(node_id)

    def _reparent(self, ids: Iterable[int], parent: int) -> None:
        for node_id in ids:
            self._update(int(node_id), {"parent": parent})

    def _keep_current(self, fallback: int | None) -> None:
        # The store moves the cursor to where removed nodes hung (apply._fix_current).
        if self.current not in self.nodes:
            self.current = fallback if fallback is not None else self.root

    def _apply(self, kind: str, p: dict[str, Any], *, forward: bool) -> None:
        if kind in ev.SNAPSHOTS:
            for node_id in list(self.nodes):
                self._drop(node_id)
            for record in p["nodes"]:
                self._put(record)
            self.root = int(p["root"])
            self.current = p.get("current", self.root)
            self.title = str(p.get("title", ""))
        elif kind == ev.IMPORT_NODES:
            for record in p["nodes"]:
                self._put(record)
        elif kind == ev.ADD:
            if forward:
                for record in p["nodes"]:
                    self._put(record)
            else:
                for record in reversed(p["nodes"]):
                    self._drop(int(record["id"]))
                self._keep_current(p["parent"])
        elif kind == ev.DELETE:
            if forward:
                for record in reversed(p["nodes"]):
                    self._drop(int(record["id"]))
                self._keep_current(p["nodes"][0]["parent"])
            else:
                for record in p["nodes"]:
                    self._put(record)
        elif kind in (ev.EDIT, ev.PRUNE, ev.UNPRUNE, ev.BOOKMARK, ev.PERSONA, ev.MANUAL_PERSONA):
            self._update(int(p["id"]), p["new" if forward else "old"])
        elif kind in (ev.TAG, ev.UNTAG):
            node = self.nodes[int(p["id"])]
            if (kind == ev.TAG) == forward:
                node.tags.insert(min(int(p["ord"]), len(node.tags)), str(p["tag"]))
            else:
                node.tags = [t for t in node.tags if t != p["tag"]]
            self._touched.add(int(p["id"]))
        elif kind == ev.SPLIT:
            node_id, tail = int(p["id"]), int(p["tail"]["id"])
            if forward:
                self._update(node_id, p["head"])
                self._put(p["tail"])
                self._reparent(p["children"], tail)
            else:
                self._reparent(p["children"], node_id)
                self._drop(tail)
                self._update(node_id, p["old"])
                self._keep_current(node_id)
        elif kind == ev.MERGE:
            parent, child = int(p["parent"]), int(p["child"]["id"])
            if forward:
                self._update(parent, p["new"])
                self._reparent(p["children"], parent)
                self._drop(child)
                self._keep_current(parent)
            else:
                self._put(p["child"])
                self._reparent(p["children"], child)
                self._update(parent, p["old"])
        elif kind == ev.MOVE:
            self._update(int(p["id"]), p["new" if forward else "old"])
        elif kind == ev.TITLE:
            self.title = str(p["new" if forward else "old"])
        elif kind == ev.VISIT:
            self.current = p["new"]
        elif kind in (ev.PERSONAS, ev.DISCARD_REDO, ev.GROUP, ev.CENSUS, ev.MEMORY, ev.SCORE):
            # Nothing a tree row shows. A group only joins done edits into one undo step; its
            # undo is logged as one undo event per edit, which this reader applies one by one.
            pass
        else:
            raise HistoryError(f"unknown event kind {kind!r}")

    # --- describing -------------------------------------------------------------------------

    def _text(self, node_id: Any) -> str:
        view = self.nodes.get(node_id) if isinstance(node_id, int) else None
        return quoted(view.text) if view is not None else ""

    def _describe(self, kind: str, p: dict[str, Any]) -> tuple[int | None, str]:
        """(node, summary) of an event, read before it is applied."""
        if kind in ev.SNAPSHOTS:
            nodes = p.get("nodes") or []
            root = next((r for r in nodes if r.get("id") == p.get("root")), None)
            what = "new loom" if kind == ev.CREATE else f"imported {len(nodes)} nodes"
            prompt = f": {quoted(str(root.get('text', '')))}" if root is not None else ""
            return p.get("root"), what + prompt
        if kind == ev.IMPORT_NODES:
            return None, f"imported {len(p['nodes'])} more nodes"
        if kind == ev.ADD:
            nodes = p["nodes"]
            texts = ", ".join(quoted(str(r.get("text", "")), 24) for r in nodes[:3])
            more = f" (+{len(nodes) - 3} more)" if len(nodes) > 3 else ""
            first = int(nodes[0]["id"]) if nodes else None
            authors = {r.get("author") for r in nodes}
            who = "model" if authors == {"model"} else "human" if authors == {"human"} else "mixed"
            return first, f"{len(nodes)} {who} node(s) under #{p['parent']}: {texts}{more}"
        if kind == ev.DELETE:
            return p.get("id"), f"deleted {len(p['nodes'])} node(s) {self._text(p.get('id'))}"
        if kind == ev.EDIT:
            return p["id"], f"now {quoted(str(p['new'].get('text', '')))}"
        if kind in (ev.PRUNE, ev.UNPRUNE, ev.BOOKMARK):
            flag = "on" if p["new"].get("bookmarked") else "off"
            extra = f"bookmark {flag} " if kind == ev.BOOKMARK else ""
            return p["id"], extra + self._text(p["id"])
        if kind in (ev.TAG, ev.UNTAG):
            return p["id"], f"tag {quoted(str(p['tag']), 24)}"
        if kind == ev.SPLIT:
            return p["id"], f"split; the tail is #{p['tail']['id']}"
        if kind == ev.MERGE:
            return p["parent"], f"#{p['child']['id']} merged into #{p['parent']}"
        if kind == ev.MOVE:
            return p["id"], f"moved under #{p['new']['parent']}"
        if kind == ev.PERSONA:
            label = _label_of(p["new"].get("persona"))
            return p["id"], f"model label {quoted(label, 24) if label else 'cleared'}"
        if kind == ev.MANUAL_PERSONA:
            name = p["new"].get("manual_persona")
            return p["id"], f"hand label {quoted(str(name), 24) if name else 'cleared'}"
        if kind == ev.PERSONAS:
            names = ", ".join(quoted(str(x.get("name", "")), 16) for x in p["new"][:6])
            return None, f"persona set: {names or 'none'}"
        if kind == ev.TITLE:
            return None, f"title {quoted(str(p['new']))}"
        if kind == ev.MEMORY:
            where = "loom memory" if p["node"] is None else "memory"
            new = p["new"]
            what = f"{quoted(str(new.get('text', '')), 24)}" if isinstance(new, dict) else "cleared"
            return p["node"], f"{where} {what}"
        if kind == ev.VISIT:
            return p["new"], f"went to {self._text(p['new'])}"
        if kind in (ev.UNDO, ev.REDO):
            target = int(p["target"])
            target_kind = self._events.get(target, ("?", {}))[0]
            node, _ = self._describe_target(target)
            return node, f"{kind} of event {target} ({target_kind})"
        if kind == ev.DISCARD_REDO:
            return None, f"{len(p['targets'])} undone edit(s) can no longer be redone"
        if kind == ev.GROUP:
            seqs = [int(s) for s in p["seqs"]]
            auto = f"automatic step ({p['auto']}): " if p.get("auto") else ""
            edits = f"{len(seqs)} edit{'s' if len(seqs) > 1 else ''}"
            span = f"events {min(seqs)}-{max(seqs)}" if len(seqs) > 1 else f"event {seqs[0]}"
            return None, f"{auto}{edits} ({span}) undo as one step"
        if kind == ev.CENSUS:
            return int(p["node"]), census_summary(p)
        if kind == ev.SCORE:
            n = len(p["nodes"])
            first = int(p["nodes"][0]["node"]) if n else None
            return first, f"{n} node{'s' if n != 1 else ''} read by {quoted(str(p['model']), 32)}"
        raise HistoryError(f"unknown event kind {kind!r}")

    def _describe_target(self, seq: int) -> tuple[int | None, str]:
        kind, payload = self._events.get(seq, ("", {}))
        if kind in (ev.UNDO, ev.REDO, "") or kind in ev.SNAPSHOTS:
            return None, ""
        return self._describe(kind, payload)


def read_history(events: Iterable[Mapping[str, Any] | ev.Event]) -> tuple[History, list[Step]]:
    """The history of a log (HistoryError if it cannot be read)."""
    history = History()
    return history, history.read(events)


def clock(ts: float) -> str:
    """A local date and time for an event stamp."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def census_summary(payload: Mapping[str, Any]) -> str:
    """One line for a census event: its size and each outcome's label counts."""
    outcomes = payload.get("outcomes") or []
    parts = []
    for outcome in outcomes:
        counts: dict[str, int] = {}
        for rollout in outcome.get("rollouts") or []:
            counts[str(rollout.get("label"))] = counts.get(str(rollout.get("label")), 0) + 1
        n = sum(counts.values())
        shares = ", ".join(f"{quoted(k, 16)} {v * 100 // max(n, 1)}%" for k, v in
                           sorted(counts.items(), key=lambda kv: -kv[1]))  # fmt: skip
        after = (
            f"after {quoted(str(outcome.get('text', '')), 12)}: " if outcome.get("forced") else ""
        )
        parts.append(f"{after}{shares}")
    n = sum(len(o.get("rollouts") or []) for o in outcomes)
    return f"census of {n} rollouts: " + "; ".join(parts)
