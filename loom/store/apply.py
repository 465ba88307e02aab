"""The one place an event changes the tables: `apply_event` (and `commit_event`: log, then apply).

Each undoable kind has a forward and a backward handler over the same payload: undo runs the
backward handler of the target event, redo its forward one. Payloads are written once, with the
state both ways (old and new), so neither direction has to look anything up that may have changed.
The live loom, a replay and an import all go through here, so they cannot disagree.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from loom.store import events as ev
from loom.store import rows
from loom.store.errors import LoomError
from loom.store.events import Event
from loom.store.model import MEMORY_KEY

Handler = Callable[[sqlite3.Connection, dict[str, Any]], None]


def commit_event(
    conn: sqlite3.Connection,
    kind: str,
    payload: dict[str, Any],
    *,
    ts: float | None = None,
    seq: int | None = None,
    text: str | None = None,
) -> Event:
    """Append an event to the log and apply it (inside the caller's write transaction). `text`:
    the payload as `events.dumps` writes it, when the caller has it already."""
    stamp = time.time() if ts is None else ts
    stored = ev.stored_payload(kind, ev.dumps(payload) if text is None else text)
    cur = conn.execute(
        "INSERT INTO events (seq, ts, kind, payload) VALUES (?, ?, ?, ?)",
        (seq, stamp, kind, stored),
    )
    event = Event(seq=int(cur.lastrowid or 0), ts=stamp, kind=kind, payload=payload)
    apply_event(conn, event)
    return event


def apply_event(conn: sqlite3.Connection, event: Event) -> None:
    kind, payload = event.kind, event.payload
    if kind == ev.UNDO:
        target = _target(conn, payload["target"], ev.DONE)
        _BACKWARD[target.kind](conn, target.payload)
        _set_state(conn, target.seq, ev.UNDONE)
    elif kind == ev.REDO:
        target = _target(conn, payload["target"], ev.UNDONE)
        _FORWARD[target.kind](conn, target.payload)
        _set_state(conn, target.seq, ev.DONE)
    elif kind == ev.DISCARD_REDO:
        for seq in payload["targets"]:
            _target(conn, seq, ev.UNDONE)
            _set_state(conn, seq, ev.DISCARDED)
    elif kind == ev.GROUP:
        seqs = [int(s) for s in payload["seqs"]]
        for seq in seqs:
            _target(conn, seq, ev.DONE)
            conn.execute("UPDATE history SET grp = ? WHERE seq = ?", (min(seqs), seq))
    elif kind in _FORWARD:
        _FORWARD[kind](conn, payload)
        if kind in ev.UNDOABLE:
            conn.execute(
                "INSERT INTO history (seq, state, grp) VALUES (?, ?, ?)",
                (event.seq, ev.DONE, event.seq),
            )
    else:
        raise LoomError(f"unknown event kind {kind!r} (written by a newer loom?)")


def load_event(conn: sqlite3.Connection, seq: int) -> Event:
    row = conn.execute("SELECT seq, ts, kind, payload FROM events WHERE seq = ?", (seq,)).fetchone()
    if row is None:
        raise LoomError(f"the event log has no event {seq}")
    payload = ev.parse_payload(int(row[0]), row[3])
    return Event(seq=int(row[0]), ts=float(row[1]), kind=row[2], payload=payload)


def _target(conn: sqlite3.Connection, seq: int, expected: int) -> Event:
    row = conn.execute("SELECT state FROM history WHERE seq = ?", (seq,)).fetchone()
    if row is None or int(row[0]) != expected:
        raise LoomError(f"the event log is inconsistent: event {seq} cannot be undone or redone")
    return load_event(conn, seq)


def _set_state(conn: sqlite3.Connection, seq: int, state: int) -> None:
    conn.execute("UPDATE history SET state = ? WHERE seq = ?", (state, seq))


def _fix_current(conn: sqlite3.Connection, fallback: int | None) -> None:
    """The current node must exist: after nodes vanish, move it to where they hung."""
    current = rows.get_meta(conn, "current")
    if (
        isinstance(current, int)
        and not isinstance(current, bool)
        and conn.execute("SELECT 1 FROM nodes WHERE id = ?", (current,)).fetchone()
    ):
        return
    rows.set_meta(
        conn, "current", fallback if fallback is not None else rows.get_meta(conn, "root")
    )


# --- snapshots ------------------------------------------------------------------------------------


def _snapshot(conn: sqlite3.Connection, p: dict[str, Any]) -> None:
    """Reset the whole state to the one in the payload (a new loom, or an imported document)."""
    conn.execute("DELETE FROM tags")
    conn.execute("DELETE FROM nodes")
    conn.execute("DELETE FROM personas")
    conn.execute("DELETE FROM scores")
    # Nothing before a snapshot can be undone: it described a tree that is gone.
    conn.execute("UPDATE history SET state = ?", (ev.DISCARDED,))
    records = p["nodes"]
    rows.insert_records(conn, records)
    _set_personas(conn, p.get("personas") or [])
    rows.set_meta(conn, "title", p.get("title", ""))
    rows.set_meta(conn, "root", p["root"])
    rows.set_meta(conn, "current", p.get("current", p["root"]))
    rows.set_meta(conn, "doc_meta", p.get("meta") or {})
    rows.set_meta(conn, "next_id", max([int(p.get("next_id", 1))] + [r["id"] + 1 for r in records]))


def _more_nodes(conn: sqlite3.Connection, p: dict[str, Any]) -> None:
    """More nodes of the snapshot just before (`events.IMPORT_NODES`)."""
    records = p["nodes"]
    rows.insert_records(conn, records)
    rows.reserve_ids(conn, (r["id"] for r in records))


# --- node edits -----------------------------------------------------------------------------------


def _add(conn: sqlite3.Connection, p: dict[str, Any]) -> None:
    rows.insert_records(conn, p["nodes"])
    rows.reserve_ids(conn, (r["id"] for r in p["nodes"]))


def _unadd(conn: sqlite3.Connection, p: dict[str, Any]) -> None:
    rows.delete_nodes(conn, [r["id"] for r in reversed(p["nodes"])])
    _fix_current(conn, p["parent"])


def _delete(conn: sqlite3.Connection, p: dict[str, Any]) -> None:
    records = p["nodes"]
    rows.delete_nodes(conn, [r["id"] for r in reversed(records)])
    _fix_current(conn, records[0]["parent"])


def _undelete(conn: sqlite3.Connection, p: dict[str, Any]) -> None:
    rows.insert_records(conn, p["nodes"])


def _update_new(conn: sqlite3.Connection, p: dict[str, Any]) -> None:
    rows.update_fields(conn, p["id"], p["new"])


def _update_old(conn: sqlite3.Connection, p: dict[str, Any]) -> None:
    rows.update_fields(conn, p["id"], p["old"])


def _insert_tag(conn: sqlite3.Connection, p: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO tags (node_id, tag, ord) VALUES (?, ?, ?)", (p["id"], p["tag"], p["ord"])
    )


def _remove_tag(conn: sqlite3.Connection, p: dict[str, Any]) -> None:
    conn.execute("DELETE FROM tags WHERE node_id = ? AND tag = ?", (p["id"], p["tag"]))


def _reparent(conn: sqlite3.Connection, ids: list[int], parent: int, delta: int) -> None:
    for node_id in ids:
        rows.update_fields(conn, node_id, {"parent": parent})
        rows.shift_depth(conn, node_id, delta)


def _split(conn: sqlite3.Connection, p: dict[str, Any]) -> None:
    rows.update_fields(conn, p["id"], p["head"])
    rows.insert_records(conn, [p["tail"]])
    rows.reserve_ids(conn, [p["tail"]["id"]])
    _reparent(conn, p["children"], p["tail"]["id"], +1)


def _unsplit(conn: sqlite3.Connection, p: dict[str, Any]) -> None:
    _reparent(conn, p["children"], p["id"], -1)
    rows.delete_nodes(conn, [p["tail"]["id"]])
    rows.update_fields(conn, p["id"], p["old"])
    _fix_current(conn, p["id"])


def _merge(conn: sqlite3.Connection, p: dict[str, Any]) -> None:
    rows.update_fields(conn, p["parent"], p["new"])
    _reparent(conn, p["children"], p["parent"], -1)
    rows.delete_nodes(conn, [p["child"]["id"]])
    _fix_current(conn, p["parent"])


def _unmerge(conn: sqlite3.Connection, p: dict[str, Any]) -> None:
    rows.insert_records(conn, [p["child"]])
    _reparent(conn, p["children"], p["child"]["id"], +1)
    rows.update_fields(conn, p["parent"], p["old"])


def _move_to(conn: sqlite3.Connection, node_id: int, place: dict[str, Any]) -> None:
    delta = rows.depth_of(conn, place["parent"]) + 1 - rows.depth_of(conn, node_id)
    rows.update_fields(conn, node_id, {"parent": place["parent"], "position": place["position"]})
    rows.shift_depth(conn, node_id, delta)


def _move(conn: sqlite3.Connection, p: dict[str, Any]) -> None:
    _move_to(conn, p["id"], p["new"])


def _unmove(conn: sqlite3.Connection, p: dict[str, Any]) -> None:
    _move_to(conn, p["id"], p["old"])


# --- loom-wide ------------------------------------------------------------------------------------


def _set_personas(conn: sqlite3.Connection, personas: list[dict[str, Any]]) -> None:
    conn.execute("DELETE FROM personas")
    conn.executemany(
        "INSERT INTO personas (ord, name, description, color, prior) VALUES (?, ?, ?, ?, ?)",
        [
            (i, p["name"], p.get("description", ""), p.get("color", "white"), p.get("prior", 1.0))
            for i, p in enumerate(personas)
        ],
    )


def _title(conn: sqlite3.Connection, value: str) -> None:
    rows.set_meta(conn, "title", value)


def _memory(conn: sqlite3.Connection, p: dict[str, Any], value: dict[str, Any] | None) -> None:
    """Keep (or drop) hidden context in a node's meta, or the loom's (`events.MEMORY`)."""
    node = p["node"]
    if node is None:
        meta = dict(rows.get_meta(conn, "doc_meta", {}) or {})
    else:
        rows.require(conn, int(node))
        meta = dict(rows.read_records(conn, [int(node)])[0]["meta"] or {})
    if value is None:
        meta.pop(MEMORY_KEY, None)
    else:
        meta[MEMORY_KEY] = value
    if node is None:
        rows.set_meta(conn, "doc_meta", meta)
    else:
        rows.update_fields(conn, int(node), {"meta": meta or None})


def _visit(conn: sqlite3.Connection, p: dict[str, Any]) -> None:
    rows.set_meta(conn, "current", p["new"])


def _check_census(conn: sqlite3.Connection, p: dict[str, Any]) -> None:
    """A census changes nothing in the tree; what its readers rely on is checked here (so an
    imported log cannot hold one they would choke on)."""
    rows.require(conn, int(p["node"]))
    outcomes = p["outcomes"]
    if not isinstance(outcomes, list) or not outcomes:
        raise LoomError("a census without outcomes")
    for outcome in outcomes:
        if not all(isinstance(t, int) for t in outcome["forced"]):
            raise LoomError("a census outcome's forced tokens are not token ids")
        for rollout in outcome["rollouts"]:
            if not isinstance(rollout["label"], str) or not isinstance(rollout["posterior"], dict):
                raise LoomError("a census rollout without its label")
            if ev.ref_of(rollout["tokens"]) is None and ev.TOKEN_DATA not in rollout["tokens"]:
                raise LoomError("a census rollout without its tokens")


def _score(conn: sqlite3.Connection, p: dict[str, Any]) -> None:
    """Keep a model's readings of nodes; a node deleted since is skipped (its reading would
    describe nothing), so a log replays whatever happened after it was scored."""
    model, sha, stamp = str(p["model"]), str(p.get("model_sha256") or ""), float(p["scored_at"])
    for entry in p["nodes"]:
        node_id = int(entry["node"])
        if ev.ref_of(entry["tokens"]) is None:
            raise LoomError(f"a reading of node {node_id} without its tokens")
        if conn.execute("SELECT 1 FROM nodes WHERE id = ?", (node_id,)).fetchone():
            reading = {"model": model, "model_sha256": sha, "tokens": entry["tokens"]}
            rows.put_scores(conn, node_id, [{**reading, "scored_at": stamp}])


_FORWARD: dict[str, Handler] = {
    ev.CREATE: _snapshot,
    ev.IMPORT: _snapshot,
    ev.IMPORT_NODES: _more_nodes,
    ev.ADD: _add,
    ev.DELETE: _delete,
    ev.EDIT: _update_new,
    ev.PRUNE: _update_new,
    ev.UNPRUNE: _update_new,
    ev.BOOKMARK: _update_new,
    ev.PERSONA: _update_new,
    ev.MANUAL_PERSONA: _update_new,
    ev.TAG: _insert_tag,
    ev.UNTAG: _remove_tag,
    ev.SPLIT: _split,
    ev.MERGE: _merge,
    ev.MOVE: _move,
    ev.PERSONAS: lambda conn, p: _set_personas(conn, p["new"]),
    ev.TITLE: lambda conn, p: _title(conn, p["new"]),
    ev.VISIT: _visit,
    ev.CENSUS: lambda conn, p: _check_census(conn, p),
    ev.MEMORY: lambda conn, p: _memory(conn, p, p["new"]),
    ev.SCORE: _score,
}

_BACKWARD: dict[str, Handler] = {
    ev.ADD: _unadd,
    ev.DELETE: _undelete,
    ev.EDIT: _update_old,
    ev.PRUNE: _update_old,
    ev.UNPRUNE: _update_old,
    ev.BOOKMARK: _update_old,
    ev.PERSONA: _update_old,
    ev.MANUAL_PERSONA: _update_old,
    ev.TAG: _remove_tag,
    ev.UNTAG: _insert_tag,
    ev.SPLIT: _unsplit,
    ev.MERGE: _unmerge,
    ev.MOVE: _unmove,
    ev.PERSONAS: lambda conn, p: _set_personas(conn, p["old"]),
    ev.TITLE: lambda conn, p: _title(conn, p["old"]),
    ev.CENSUS: lambda conn, p: None,  # a census changes no node: undone, it is simply not listed
    ev.MEMORY: lambda conn, p: _memory(conn, p, p["old"]),
}

assert set(_BACKWARD) == set(ev.UNDOABLE), "every undoable kind needs a backward handler"
