"""A whole loom <-> `LoomDocument` (the in-memory form every import/export format converts).

Export carries the event log with token data inlined, so the document alone can rebuild the loom.
Import keeps the document's ids and its events (as history, for audit and replay) and then logs one
`import` snapshot event holding the imported tree: a replay of the log ends in exactly the imported
state, and undo starts afresh after the import.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import sqlite3
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from loom.store import codec, rows, textops
from loom.store import events as ev
from loom.store.apply import apply_event, commit_event
from loom.store.errors import LoomError
from loom.store.events import Event
from loom.store.model import LoomDocument, Node, Persona
from loom.store.rows import Record
from loom.store.views import PARTIAL_KEY, record_to_node
from loom.tokens import TokenArray

_NODE_COLUMNS = (
    "n.id, n.parent, n.position, n.author, n.text, n.created_at, n.tokens_id, n.tokens_partial, "
    "n.generation, n.persona, n.manual_persona, n.bookmarked, n.pruned, n.meta, "
    "t.n, t.k, t.ids, t.logprobs, t.top_ids, t.top_logprobs, t.entropy, t.texts, t.top_texts"
)


# --- export ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Building a whole document makes millions of small objects that all stay alive; the cyclic
    collector would rescan the growing heap again and again (measured: a fifth of the time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def export(conn: sqlite3.Connection, *, with_events: bool = True) -> LoomDocument:
    with _gc_paused():
        return _export(conn, with_events)


def _export(conn: sqlite3.Connection, with_events: bool) -> LoomDocument:
    tags: dict[int, list[str]] = {}
    for node_id, tag in conn.execute("SELECT node_id, tag FROM tags ORDER BY node_id, ord"):
        tags.setdefault(int(node_id), []).append(tag)
    nodes: list[Node] = []
    for row in conn.execute(
        f"SELECT {_NODE_COLUMNS} FROM nodes n LEFT JOIN tokens t ON t.id = n.tokens_id "
        "ORDER BY n.depth, n.parent, n.position, n.id"
    ):
        rec: Record = {
            "id": int(row[0]),
            "parent": row[1],
            "author": row[3],
            "text": rows.node_text(int(row[0]), row[4]),
            "created_at": float(row[5]),
            "generation": None if row[8] is None else json.loads(row[8]),
            "persona": None if row[9] is None else json.loads(row[9]),
            "manual_persona": row[10],
            "bookmarked": bool(row[11]),
            "pruned": bool(row[12]),
            "tags": tags.get(int(row[0]), []),
            "meta": None if row[13] is None else json.loads(row[13]),
            "tokens_partial": bool(row[7]),
        }
        tokens = codec.decode(*row[14:23]) if row[6] is not None else TokenArray.empty()
        nodes.append(record_to_node(rec, tokens))
    meta = dict(rows.get_meta(conn, "doc_meta", {}) or {})
    meta["current"] = rows.get_meta(conn, "current")
    return LoomDocument(
        title=rows.get_meta(conn, "title", ""),
        root=int(rows.get_meta(conn, "root")),
        nodes=nodes,
        personas=personas(conn),
        events=export_events(conn) if with_events else [],
        meta=meta,
    )


def personas(conn: sqlite3.Connection) -> list[Persona]:
    return [
        Persona(name=r[0], description=r[1], color=r[2], prior=float(r[3]))
        for r in conn.execute("SELECT name, description, color, prior FROM personas ORDER BY ord")
    ]


def export_events(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """The log as JSON objects, token references replaced by the token data."""
    inlined: dict[int, dict[str, Any]] = {}

    def inline(value: dict[str, Any]) -> dict[str, Any]:
        ref = int(value[ev.TOKEN_REF])
        if ref not in inlined:
            inlined[ref] = {ev.TOKEN_DATA: codec.row_to_json(rows.token_row(conn, ref))}
        return inlined[ref]

    out = []
    for seq, ts, kind, payload in conn.execute(
        "SELECT seq, ts, kind, payload FROM events ORDER BY seq"
    ):
        data = ev.parse_payload(int(seq), payload)
        if '"' + ev.TOKEN_REF + '"' in payload:
            data = ev.map_tokens(data, inline)
        out.append({"seq": int(seq), "ts": float(ts), "kind": kind, "payload": data})
    return out


# --- import ---------------------------------------------------------------------------------------


def internalize_tokens(conn: sqlite3.Connection, payload: dict[str, Any]) -> dict[str, Any]:
    """Store the token data a foreign payload carries and refer to it instead."""

    def convert(value: dict[str, Any]) -> dict[str, int] | None:
        if ev.TOKEN_DATA not in value:
            raise ValueError("refers to token data of another file")
        ref = rows.store_token_row(conn, codec.row_from_json(value[ev.TOKEN_DATA]))
        return ev.token_ref(ref)

    result: dict[str, Any] = ev.map_tokens(payload, convert)
    return result


# What an import accepts is what every later step can use: exports (strict JSON, JavaScript
# numbers in the HTML page), replay, and new nodes (SQLite's 64-bit ids). Ids stay within the
# integers JavaScript holds exactly; times within the years datetime and localtime can show
# (a day inside, so no time zone pushes them out); JSON values shallow enough that no writer of
# them recurses out of stack.
MAX_NODE_ID = 2**53 - 1
MAX_SEQ = 2**53 - 1
MIN_TIME = -62135596800.0 + 86400  # 0001-01-02 UTC
MAX_TIME = 253402300799.0 - 86400  # 9999-12-30 UTC
MAX_META_DEPTH = 64
MAX_PAYLOAD_DEPTH = MAX_META_DEPTH + 16  # a payload holds node records, which hold meta


def import_document(conn: sqlite3.Connection, doc: LoomDocument) -> None:
    """Fill an empty loom (inside the caller's transaction) from `doc`.

    `LoomError` naming the node or event for anything a later export, replay or edit could not
    use. What the import changed on the way (tokens that did not spell their text) is appended to
    `doc.meta["import_warnings"]` as one line naming the nodes.
    """
    ordered = _tree_order(doc)
    carried = _carry_events(conn, doc.events)
    respelled: list[int] = []
    records = []
    for position, node in enumerate(ordered):
        records.append(_record(conn, node, position, respelled))
    if respelled:
        shown = ", ".join(str(i) for i in respelled[:5])
        more = f" and {len(respelled) - 5} more" if len(respelled) > 5 else ""
        note = (
            f"the tokens of node {shown}{more} do not spell the node's text: kept as far as they "
            "do, the model will tokenize the rest"
        )
        old = doc.meta.get("import_warnings")
        doc.meta["import_warnings"] = [*(old if isinstance(old, list) else []), note]
    current = doc.meta.get("current")
    known = {n.id for n in doc.nodes}
    if isinstance(current, bool) or not isinstance(current, int) or current not in known:
        current = doc.root
    for persona in doc.personas:
        if not math.isfinite(float(persona.prior)):
            raise LoomError(f"persona {persona.name!r}: prior must be a finite number")
    doc_meta = {k: v for k, v in doc.meta.items() if k != "current"}
    _check_json(doc_meta, "the document's meta", MAX_META_DEPTH)
    commit_event(
        conn,
        ev.IMPORT,
        {
            "title": str(doc.title),
            "root": doc.root,
            "current": current,
            "personas": [p.to_json() for p in doc.personas],
            "meta": doc_meta,
            "nodes": records,
        },
        seq=carried + 1,
    )


def _check_json(value: Any, where: str, max_depth: int) -> str:
    """`value` as the log writes it; `LoomError` unless it is plain JSON, finite, not too deep
    (so every later writer of it, recursive or not, can write it too)."""
    if ev.nesting_depth(value, max_depth) > max_depth:
        raise LoomError(f"{where} is nested too deeply (over {max_depth} levels)")
    try:
        return ev.dumps(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise LoomError(f"{where} cannot be stored (not plain JSON data: {exc})") from None


def _carry_events(conn: sqlite3.Connection, events: list[dict[str, Any]]) -> int:
    """Copy the document's log as it was (not applied: the snapshot after it is the state), once
    it is known to replay: see `_check_log`."""
    last = 0
    for i, raw in enumerate(events):
        seq = raw.get("seq", f"#{i}") if isinstance(raw, dict) else f"#{i}"
        try:
            event = Event.from_json(raw)
            if event.seq <= last:
                raise ValueError(f"seq {event.seq} does not follow {last}")
            if event.seq > MAX_SEQ:
                raise ValueError(f"seq {event.seq} is too large (at most {MAX_SEQ})")
            if not MIN_TIME <= event.ts <= MAX_TIME:
                raise ValueError("ts is not a time between the years 1 and 9999")
            if i == 0 and event.kind not in ev.SNAPSHOTS:
                raise ValueError(f"the log starts with {event.kind!r}, not a snapshot")
            payload = internalize_tokens(conn, event.payload)
            text = _check_json(payload, "its payload", MAX_PAYLOAD_DEPTH)
        except (ValueError, LoomError) as exc:
            raise LoomError(f"the document's event {seq} is not a loom event: {exc}") from None
        conn.execute(
            "INSERT INTO events (seq, ts, kind, payload) VALUES (?, ?, ?, ?)",
            (event.seq, event.ts, event.kind, text),
        )
        last = event.seq
    _check_log(conn)
    return last


def _check_log(conn: sqlite3.Connection) -> None:
    """Apply the carried log from an empty loom, then undo all of that: a log that imports is
    one `loom replay` and `loom fork` can go through (its payloads are checked by the code that
    will read them). Any failure names the event."""
    conn.execute("SAVEPOINT check_log")
    try:
        for seq, ts, kind, payload in conn.execute(
            "SELECT seq, ts, kind, payload FROM events ORDER BY seq"
        ).fetchall():
            try:
                apply_event(conn, Event(seq=seq, ts=ts, kind=kind, payload=json.loads(payload)))
            except sqlite3.OperationalError:
                raise  # the disk, not the document
            except Exception as exc:  # whatever a foreign payload makes the appliers trip on
                raise LoomError(
                    f"the document's event {seq} ({kind}) cannot be replayed: {exc!r}"
                ) from None
    finally:
        conn.execute("ROLLBACK TO check_log")
        conn.execute("RELEASE check_log")


def _tree_order(doc: LoomDocument) -> list[Node]:
    """The nodes parents-before-children, siblings in document order; LoomError unless a tree."""
    by_id: dict[int, Node] = {}
    kids: dict[int, list[Node]] = {}
    for node in doc.nodes:
        if isinstance(node.id, bool) or not isinstance(node.id, int) or node.id < 0:
            raise LoomError(f"node id {node.id!r} is not a non-negative integer")
        if node.id > MAX_NODE_ID:
            raise LoomError(f"node id {node.id} is too large (loom ids go up to {MAX_NODE_ID})")
        if node.id in by_id:
            raise LoomError(f"the document has two nodes with id {node.id}")
        by_id[node.id] = node
    if doc.root not in by_id:
        raise LoomError(f"the document's root node {doc.root} is missing")
    for node in doc.nodes:
        if node.id == doc.root:
            if node.parent is not None:
                raise LoomError(f"the root node {doc.root} has a parent")
            continue
        if node.parent is None or node.parent not in by_id:
            raise LoomError(f"node {node.id} has no parent in the document")
        kids.setdefault(node.parent, []).append(node)
    # Breadth-first from the root: a parent always comes out before its children.
    out = [by_id[doc.root]]
    queue = deque(out)
    while queue:
        for child in kids.get(queue.popleft().id, []):
            out.append(child)
            queue.append(child)
    if len(out) != len(doc.nodes):
        raise LoomError("the document's nodes do not form one tree (a cycle or a detached part)")
    return out


def _spelled_tokens(node: Node, respelled: list[int]) -> tuple[TokenArray, bool]:
    """The node's tokens as far as they spell its text, and whether text is left without tokens.

    Tokens are what the model reads; tokens that spell something else would make it read a
    context other than the one the user sees, silently. Refusing the whole file for one such node
    would lose the rest of it, so the tokens are kept as far as they spell the start of the text
    (their ids and probabilities are right for it) and the rest of the text is left without
    tokens: the store's "partial" state, which `textops.complete` tokenizes as soon as a model is
    at hand (and `Loom.path_tokens` refuses without one).
    """
    ends = textops.covered_ends(node.tokens, node.text)
    tokens = node.tokens
    if len(ends) < len(tokens):
        respelled.append(node.id)
        tokens = tokens.slice(0, len(ends))
    return tokens, (ends[-1] if ends else 0) < len(node.text)


def _finite_tokens(tokens: TokenArray) -> bool:
    """No infinite probabilities (NaN is allowed: it marks an unknown one)."""
    columns = [tokens.logprobs, tokens.top_logprobs]
    if tokens.entropy is not None:
        columns.append(tokens.entropy)
    return not any(np.isinf(np.asarray(c, dtype=np.float64)).any() for c in columns)


def _record(conn: sqlite3.Connection, node: Node, position: int, respelled: list[int]) -> Record:
    if node.author not in ("human", "model"):
        raise LoomError(f"node {node.id}: author must be 'human' or 'model', not {node.author!r}")
    if not isinstance(node.text, str):
        raise LoomError(f"node {node.id}: text must be a string")
    check_text(node.text, f"node {node.id}")
    if not MIN_TIME <= float(node.created_at) <= MAX_TIME:  # NaN fails this too
        raise LoomError(f"node {node.id}: created_at is not a time between the years 1 and 9999")
    if not _finite_tokens(node.tokens):
        raise LoomError(f"node {node.id}: a token probability is out of range (infinite)")
    tokens, partial = _spelled_tokens(node, respelled)
    tags = list(dict.fromkeys(str(t) for t in node.tags))
    meta = dict(node.meta or {})
    meta.pop(PARTIAL_KEY, None)  # exports mark partial tokens; what they cover is what counts
    if ev.nesting_depth(meta, MAX_META_DEPTH) > MAX_META_DEPTH:
        raise LoomError(f"node {node.id}: meta is nested too deeply (over {MAX_META_DEPTH} levels)")
    record: Record = {
        "id": node.id,
        "parent": node.parent,
        "position": position,
        "author": node.author,
        "text": node.text,
        "created_at": float(node.created_at),
        "tokens": ev.token_ref(rows.store_tokens(conn, tokens)),
        "tokens_partial": partial,
        "generation": None if node.generation is None else node.generation.to_json(),
        "persona": None if node.persona is None else node.persona.to_json(),
        "manual_persona": node.manual_persona,
        "bookmarked": bool(node.bookmarked),
        "pruned": bool(node.pruned),
        "tags": tags,
        "meta": meta or None,
    }
    # The import event logs the record: anything in it that strict JSON cannot hold (an infinite
    # posterior or temperature, a foreign object in meta) is named here, by node.
    _check_json(record, f"node {node.id}", MAX_PAYLOAD_DEPTH)
    return record


def check_text(text: str, where: str) -> None:
    """Any text SQLite can hold as TEXT: everything but unpaired surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise LoomError(f"{where}: text holds an unpaired surrogate (not valid Unicode)") from None
