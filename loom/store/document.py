"""A whole loom <-> a document: `StoreExport` reads one a node at a time, `ImportSink` builds one.

Export carries the event log with its token arrays, so the document alone can rebuild the loom.
Import keeps the document's ids and its events (as history, for audit and replay) and then logs
the imported tree as a snapshot: one `import` event and `import_nodes` events of a bounded batch
of nodes each, so a replay of the log ends in exactly the imported state, undo starts afresh after
the import, and no single payload (nor the memory of the import) grows with the tree.

`export` and `import_document` are the same for a whole `LoomDocument` in memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loom.store import codec, logcheck, rows, schema, textops
from loom.store import events as ev
from loom.store.apply import commit_event
from loom.store.errors import LoomError, UnknownNodeError
from loom.store.events import Event
from loom.store.model import MEMORY_KEY, LoomDocument, Memory, Node, Persona
from loom.store.rows import Record
from loom.store.stream import (
    DocumentHead,
    MemorySink,
    MemoryStream,
    StreamNode,
    Throttle,
)
from loom.store.views import PARTIAL_KEY, node_scores, record_to_node
from loom.tokens import TokenArray

_NODE_COLUMNS = (
    "n.id, n.parent, n.position, n.author, n.text, n.created_at, n.tokens_id, n.tokens_partial, "
    "n.generation, n.persona, n.manual_persona, n.bookmarked, n.pruned, n.meta, "
    "t.n, t.k, t.data, t.texts, t.top_texts"
)
_CHUNK = 500


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


class StoreExport:
    """A loom read as a `DocumentStream`, a chunk of nodes at a time (inside the caller's read
    transaction, so every part comes from one snapshot).

    `subtree` exports the nodes under a node (it becomes the root); `path_to` only the path from
    the root to a node. Both leave the event log out: it describes the whole tree.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        subtree: int | None = None,
        path_to: int | None = None,
        with_events: bool = True,
    ) -> None:
        self.conn = conn
        self._vocab = rows.Vocab()
        self._vocab.load_all(conn)
        root = int(rows.get_meta(conn, "root"))
        current = rows.get_meta(conn, "current")
        if not rows.is_node_id(current) or not _exists(conn, current):
            current = root
        if subtree is not None and path_to is not None:
            raise LoomError("export a subtree or a path, not both")
        if subtree is not None:
            rows.require(conn, subtree)
            self._ids = _ordered(conn, rows.subtree_ids(conn, subtree))
            root = subtree
            if current not in set(self._ids):
                current = subtree
        elif path_to is not None:
            rows.require(conn, path_to)
            self._ids = rows.path_ids(conn, path_to)
            current = path_to
        else:
            self._ids = [
                int(r[0])
                for r in conn.execute("SELECT id FROM nodes ORDER BY depth, parent, position, id")
            ]
        self._root = root
        self._keep = None if subtree is None and path_to is None else set(self._ids)
        self._with_events = with_events and self._keep is None
        self.head = DocumentHead(
            title=str(rows.get_meta(conn, "title", "")),
            root=root,
            current=int(current),
            personas=personas(conn),
            meta=dict(rows.get_meta(conn, "doc_meta", {}) or {}),
        )
        self.n_nodes = len(self._ids)
        self.n_events = (
            int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
            if self._with_events
            else 0
        )
        self._event_keys: list[int] | None = None

    def vocabulary(self) -> Iterator[tuple[int, str]]:
        """The loom's vocabulary (for a part of the loom, only the ids its nodes use)."""
        if self._keep is None and not self._with_events:
            yield from self._vocab.items()
            return
        if self._keep is None:
            yield from self._vocab.items()
            return
        used: set[int] = set()
        for item in self.nodes():
            used.update(item.node.tokens.ids.tolist())
            used.update(int(i) for i in item.node.tokens.top_texts)
            for score in item.node.scores:
                used.update(score.tokens.ids.tolist())
                used.update(int(i) for i in score.tokens.top_texts)
        yield from ((i, t) for i, t in self._vocab.items() if i in used)

    def current_path(self) -> list[int]:
        path = rows.path_ids(self.conn, int(self.head.current or self._root))
        return path[path.index(self._root) :] if self._root in path else [self._root]

    def nodes(self, *, columns: bool = False) -> Iterator[StreamNode]:
        """The nodes, parents first; with `columns`, their tokens as the store keeps them
        (`StreamNode.columns`), never built back into texts."""
        conn = self.conn
        for start in range(0, len(self._ids), _CHUNK):
            part = self._ids[start : start + _CHUNK]
            marks = rows.marks(len(part))
            found = {
                int(r[0]): r
                for r in conn.execute(
                    f"SELECT {_NODE_COLUMNS} FROM nodes n LEFT JOIN tokens t ON t.id = n.tokens_id"
                    f" WHERE n.id IN ({marks})",
                    tuple(part),
                )
            }
            tags = rows.tags_of(conn, part)
            scores = rows.scores_of(conn, part)
            children: dict[int, list[int]] = {i: [] for i in part}
            for parent, child in conn.execute(
                f"SELECT parent, id FROM nodes WHERE parent IN ({marks}) ORDER BY position, id",
                tuple(part),
            ):
                if self._keep is None or int(child) in self._keep:
                    children[int(parent)].append(int(child))
            for node_id in part:
                row = found.get(node_id)
                if row is None:
                    raise UnknownNodeError(node_id)
                if columns and row[6] is not None and row[14] is not None:
                    stored = rows.checked_columns(int(row[6]), row[14:19], self._vocab)
                    node = self._node(row, tags.get(node_id, []), scores.get(node_id, []), False)
                    yield StreamNode(node, row[6], children[node_id], stored)
                else:
                    node = self._node(row, tags.get(node_id, []), scores.get(node_id, []))
                    yield StreamNode(node, row[6], children[node_id])

    def _node(
        self,
        row: Sequence[Any],
        tags: list[str],
        scores: list[dict[str, Any]] | None = None,
        with_tokens: bool = True,
    ) -> Node:
        """The node of a row (`_NODE_COLUMNS`); without its tokens unless `with_tokens`."""
        node_id = int(row[0])
        rec: Record = {
            "id": node_id,
            "parent": None if node_id == self._root else row[1],
            "author": row[3],
            "text": rows.node_text(node_id, row[4]),
            "created_at": float(row[5]),
            "generation": None if row[8] is None else codec.read_json(row[8]),
            "persona": None if row[9] is None else codec.read_json(row[9]),
            "manual_persona": row[10],
            "bookmarked": bool(row[11]),
            "pruned": bool(row[12]),
            "tags": tags,
            "meta": None if row[13] is None else codec.read_json(row[13]),
            "tokens_partial": bool(row[7]),
        }
        if row[6] is None or not with_tokens:
            tokens = TokenArray.empty()
        elif row[14] is None:
            raise LookupError(f"token data {row[6]} is missing")
        else:
            tokens = rows.decode_stored(self.conn, int(row[6]), row[14:19], self._vocab)
        rec["scores"] = scores or []
        return record_to_node(rec, tokens, node_scores(self.conn, rec))

    def _stored_events(self) -> Iterator[tuple[int, float, str, Any]]:
        """The log as stored, a chunk of rows at a time (payloads as the table keeps them)."""
        last = 0
        while True:
            batch = self.conn.execute(
                "SELECT seq, ts, kind, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (last, _CHUNK),
            ).fetchall()
            if not batch:
                return
            for seq, ts, kind, payload in batch:
                yield int(seq), float(ts), str(kind), payload
            last = int(batch[-1][0])

    def _payloads(self) -> Iterator[tuple[int, float, str, dict[str, Any]]]:
        for seq, ts, kind, payload in self._stored_events():
            yield seq, ts, kind, ev.parse_payload(seq, payload)

    def event_token_keys(self) -> list[int]:
        """The token rows the log uses that no exported node holds (one pass over the log)."""
        if self._event_keys is None:
            found: set[int] = set()
            if self._with_events:
                for _seq, _ts, _kind, payload in self._stored_events():
                    text = ev.payload_text(payload)
                    if isinstance(text, str):  # else damaged: `events` will say so
                        found |= ev.token_refs_in(text)
            held = {
                int(r[0])
                for r in self.conn.execute(
                    "SELECT DISTINCT tokens_id FROM nodes WHERE tokens_id IS NOT NULL"
                )
            }
            self._event_keys = sorted(found - held)
        return list(self._event_keys)

    def tokens(self, key: int) -> TokenArray:
        return rows.load_tokens(self.conn, key, self._vocab)

    def events(self) -> Iterator[dict[str, Any]]:
        """The log, token arrays as `{"$tok": row id}` (`tokens` reads them)."""
        if not self._with_events:
            return
        for seq, ts, kind, payload in self._payloads():
            yield {"seq": seq, "ts": ts, "kind": kind, "payload": payload}


def _exists(conn: sqlite3.Connection, node_id: int) -> bool:
    return conn.execute("SELECT 1 FROM nodes WHERE id = ?", (node_id,)).fetchone() is not None


def _ordered(conn: sqlite3.Connection, ids: list[int]) -> list[int]:
    """`ids` in export order: by depth, then parent, then sibling order."""
    keyed = []
    for part in rows.chunks(ids):
        keyed += conn.execute(
            f"SELECT depth, parent, position, id FROM nodes WHERE id IN ({rows.marks(len(part))})",
            tuple(part),
        ).fetchall()
    keyed.sort(key=lambda r: (r[0], -1 if r[1] is None else r[1], r[2], r[3]))
    return [int(r[3]) for r in keyed]


def export(conn: sqlite3.Connection, *, with_events: bool = True) -> LoomDocument:
    """The whole loom in memory (events with their token data inlined as `$tokdata`)."""
    with _gc_paused():
        stream = StoreExport(conn, with_events=with_events)
        sink = MemorySink()
        for item in stream.nodes():
            sink.nodes.append(item.node)
        inlined: dict[int, dict[str, Any]] = {}

        def inline(value: dict[str, Any]) -> dict[str, Any]:
            ref = int(value[ev.TOKEN_REF])
            if ref not in inlined:
                row = codec.encode(stream.tokens(ref))
                inlined[ref] = {ev.TOKEN_DATA: codec.row_to_json(row)}
            return inlined[ref]

        for event in stream.events():
            sink.events.append(ev.map_tokens(event, inline))
        return sink.document(stream.head)


def personas(conn: sqlite3.Connection) -> list[Persona]:
    return [
        Persona(name=r[0], description=r[1], color=r[2], prior=float(r[3]))
        for r in conn.execute("SELECT name, description, color, prior FROM personas ORDER BY ord")
    ]


# --- import ---------------------------------------------------------------------------------------


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
SNAPSHOT_BATCH = 1000  # nodes per snapshot event


def import_document(conn: sqlite3.Connection, doc: LoomDocument) -> None:
    """Fill an empty loom (inside the caller's transaction) from `doc`.

    `LoomError` naming the node or event for anything a later export, replay or edit could not
    use. What the import changed on the way (tokens that did not spell their text) is appended to
    `doc.meta["import_warnings"]` as one line naming the nodes.
    """
    stream = MemoryStream(doc)
    sink = ImportSink(conn)
    try:
        sink.vocabulary(dict(stream.vocabulary()))
        for item in stream.nodes():
            sink.node(item.node, item.key)
        for key in stream.event_token_keys():
            sink.token_array(key, stream.tokens(key))
        for event in stream.events():
            sink.event(event)
        head = stream.head
        if head.current is None or head.current not in {n.id for n in doc.nodes}:
            head.current = None
        warnings = sink.finish(head)
    finally:
        sink.close()
    if warnings:
        old = doc.meta.get("import_warnings")
        doc.meta["import_warnings"] = [*(old if isinstance(old, list) else []), *warnings]


class ImportSink:
    """Builds an empty loom (inside the caller's transaction, in a file nobody else sees: see
    `db.building`) from a document streamed to it: `vocabulary`, then `node` for every node,
    `token_array` for the arrays only events use, `event` for the document's own log, and
    `finish` with the head. Nodes wait in a temporary table until the log is checked; memory holds
    only the map from the document's token keys to stored rows (a few bytes a node).

    Every problem is a `LoomError` naming the node or the event.
    """

    def __init__(self, conn: sqlite3.Connection, progress: Throttle | None = None) -> None:
        self.conn = conn
        self.progress = progress
        self.vocab = rows.Vocab()
        self.keys: dict[int, int | None] = {}
        self.count = 0
        self.respelled: list[int] = []
        self._pending: list[tuple[int, int | None, int, str]] = []
        # Token rows go in by the batch, under ids given here: the loom is new and this sink its
        # only writer, so a digest seen before is the only way to find a row already stored.
        self._token_ids: dict[bytes, int] = {}
        self._next_token = 1 + int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM tokens")
                                   .fetchone()[0])  # fmt: skip
        self._token_rows: list[tuple[Any, ...]] = []
        self._events: list[tuple[int, float, str, str | bytes]] = []
        self._last_seq = 0
        self._n_events = 0
        self._log_check = logcheck.LogCheck()  # started for a long log, at its first event
        self._counted = self._next_token  # token rows below this id: their counts sent to it
        conn.execute("PRAGMA temp_store = FILE")
        conn.execute(
            "CREATE TEMP TABLE import_nodes (id INTEGER PRIMARY KEY, parent INTEGER,"
            " ord INTEGER NOT NULL, record TEXT NOT NULL)"
        )
        for name in schema.FTS_TRIGGERS:  # the search index is built once, in `finish`
            conn.execute(f"DROP TRIGGER {name}")

    def vocabulary(self, entries: dict[int, str]) -> None:
        """The document's vocabulary becomes the loom's (before any token is stored)."""
        if entries:
            rows.add_vocabulary(self.conn, entries, self.vocab)

    def node(self, node: Node, key: int | None, columns: codec.TokenColumns | None = None) -> None:
        """One node; `columns` are its tokens as a loom-json 2 file holds them (exceptions to the
        vocabulary given first, every id in it), kept as they are where they spell its text."""
        prepared = prepare_node(node, key, columns, self.vocab.table)
        if prepared is not None:
            self.prepared(prepared)
            return
        if columns is not None:  # the rare node whose tokens must be cut: as a token array
            try:
                tokens = codec.tokens_of(columns, self.vocab.table)
            except KeyError as exc:
                raise LoomError(
                    f"node {node.id}: token id {exc.args[0]} is not in the vocabulary"
                ) from None
            node = dataclasses.replace(node, tokens=tokens)
        fields = _checked_fields(node)
        tokens, partial = _spelled_tokens(node, self.respelled)
        fields["tokens_partial"] = partial
        ref = self._store(tokens)
        scores = []
        for score in node.scores:
            # A reading is of the node's text; one that spells something else would shade other
            # text.
            if score.tokens.text != node.text:
                continue
            if not _finite_tokens(score.tokens):
                raise LoomError(f"node {node.id}: a token probability of its reading is infinite")
            scores.append(
                {
                    "model": str(score.model),
                    "model_sha256": str(score.model_sha256),
                    "tokens": ev.token_ref(self._store(score.tokens)),
                    "scored_at": float(score.scored_at),
                }
            )
        if scores:
            fields["scores"] = scores
        text = _check_json(fields, f"node {node.id}", MAX_PAYLOAD_DEPTH)
        self._add(node.id, node.parent, text, ref, key)

    def prepared(self, node: PreparedNode) -> None:
        """A node `prepare_node` made ready (in this process or another)."""
        ref = None if node.tokens is None else self._store_row(node.tokens)
        self._add(node.id, node.parent, node.fields, ref, node.key)

    def _store(self, tokens: TokenArray) -> int | None:
        if len(tokens) == 0:
            return None
        columns = rows.columns_in_vocabulary(self.conn, tokens, self.vocab)
        return self._store_row(rows.token_row_data(columns))

    def _store_row(self, row: rows.TokenRowData) -> int:
        found = self._token_ids.get(row.digest)
        if found is None:
            found = self._token_ids[row.digest] = self._next_token
            self._next_token += 1
            self._token_rows.append(
                (found, row.digest, row.n, row.k, row.data, row.texts, row.top_texts,
                 row.sum_logprob, row.n_logprob)
            )  # fmt: skip
            if len(self._token_rows) >= _CHUNK:
                self._flush_tokens()
        return found

    def _flush_tokens(self) -> None:
        if self._token_rows:
            self.conn.executemany(rows.TOKEN_ROW_INSERT, self._token_rows)
            self._token_rows = []

    def _add(self, node_id: int, parent: int | None, fields: str, ref: int | None,
             key: int | None) -> None:  # fmt: skip
        if key is not None:
            self.keys[key] = ref
        tokens = "null" if ref is None else f'{{"{ev.TOKEN_REF}":{ref}}}'
        text = f'{fields[:-1]},"position":{self.count},"tokens":{tokens}}}'
        self._pending.append((node_id, parent, self.count, text))
        self.count += 1
        if len(self._pending) >= _CHUNK:
            self._flush()

    def _flush(self) -> None:
        self._flush_tokens()
        if self._events:
            self.conn.executemany(
                "INSERT INTO events (seq, ts, kind, payload) VALUES (?, ?, ?, ?)", self._events
            )
            self._events = []
        if not self._pending:
            return
        try:
            self.conn.executemany(
                "INSERT INTO import_nodes (id, parent, ord, record) VALUES (?, ?, ?, ?)",
                self._pending,
            )
        except sqlite3.IntegrityError:
            ids = [p[0] for p in self._pending]
            seen = set()
            for node_id in ids:
                exists = self.conn.execute(
                    "SELECT 1 FROM import_nodes WHERE id = ?", (node_id,)
                ).fetchone()
                if node_id in seen or exists:
                    raise LoomError(f"the document has two nodes with id {node_id}") from None
                seen.add(node_id)
            raise
        self._pending = []

    def token_array(self, key: int, tokens: TokenArray) -> None:
        if not _finite_tokens(tokens):
            raise LoomError(f"token array {key}: a token probability is out of range (infinite)")
        self.keys[key] = self._store(tokens)

    def event(self, raw: dict[str, Any]) -> None:
        """One event of the document's log, as it was (checked in `finish`, then kept)."""
        i = self._n_events
        seq = raw.get("seq", f"#{i}") if isinstance(raw, dict) else f"#{i}"
        try:
            event = Event.from_json(raw)
            if event.seq <= self._last_seq:
                raise ValueError(f"seq {event.seq} does not follow {self._last_seq}")
            if event.seq > MAX_SEQ:
                raise ValueError(f"seq {event.seq} is too large (at most {MAX_SEQ})")
            if not MIN_TIME <= event.ts <= MAX_TIME:
                raise ValueError("ts is not a time between the years 1 and 9999")
            if i == 0 and event.kind not in ev.SNAPSHOTS:
                raise ValueError(f"the log starts with {event.kind!r}, not a snapshot")
            payload = self._internalize(event.payload)
            text = ev.dumps(payload, finite=True)
        except (TypeError, ValueError, LoomError) as exc:  # TypeError: what JSON cannot write
            raise LoomError(f"the document's event {seq} is not a loom event: {exc}") from None
        stored = (event.seq, event.ts, event.kind, ev.stored_payload(event.kind, text))
        self._events.append(stored)
        if i == 0 and self.count >= logcheck.PARALLEL_FROM_NODES:
            self._log_check.start()
        if self._log_check.running:
            if self._next_token > self._counted:  # rows it has not heard of yet
                self._flush_tokens()
                found = self.conn.execute(
                    "SELECT id, n, sum_logprob, n_logprob FROM tokens WHERE id >= ?",
                    (self._counted,),
                )
                while counts := found.fetchmany(5000):
                    self._log_check.tokens(counts)
                self._counted = self._next_token
            self._log_check.event(stored)
        if len(self._events) >= _CHUNK:
            self._flush()
        self._last_seq = event.seq
        self._n_events += 1

    def close(self) -> None:
        """End what the sink runs beside the import (once it is finished, or has failed)."""
        self._log_check.close()

    def _internalize(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Store the token data a foreign payload carries (or names by key) and refer to it."""

        def convert(value: dict[str, Any]) -> dict[str, int] | None:
            if ev.TOKEN_DATA in value:
                tokens = codec.tokens_from_json(value[ev.TOKEN_DATA])
                return ev.token_ref(self._store(tokens))
            key = value.get(ev.TOKEN_REF)
            if isinstance(key, int) and not isinstance(key, bool) and key in self.keys:
                return ev.token_ref(self.keys[key])
            raise ValueError(f"refers to token array {key!r}, which the document does not hold")

        try:  # checked on the way as `_check_json` checks: for the log and every later reader
            result: dict[str, Any] = ev.map_tokens(
                payload, convert, max_depth=MAX_PAYLOAD_DEPTH, finite=True
            )
        except ValueError as exc:
            raise ValueError(f"its payload {exc}") from None
        return result

    def finish(self, head: DocumentHead) -> list[str]:
        """Check the tree and the log, then log the snapshot; returns the import's warnings."""
        self._flush()
        conn = self.conn
        root = head.root
        if root is None:
            raise LoomError("the document has no root")
        if isinstance(root, bool) or not isinstance(root, int):
            raise LoomError(f"the document's root {root!r} is not a node id")
        found = conn.execute("SELECT parent FROM import_nodes WHERE id = ?", (root,)).fetchone()
        if found is None:
            raise LoomError(f"the document's root node {root} is missing")
        if found[0] is not None:
            raise LoomError(f"the root node {root} has a parent")
        # built once, now: kept up to date on every insert, it cost a fifth of the inserts' time
        conn.execute("CREATE INDEX temp.import_nodes_parent ON import_nodes (parent)")
        orphan = conn.execute(
            "SELECT id FROM import_nodes s WHERE id != ? AND (parent IS NULL OR NOT EXISTS"
            " (SELECT 1 FROM import_nodes p WHERE p.id = s.parent)) ORDER BY ord LIMIT 1",
            (root,),
        ).fetchone()
        if orphan is not None:
            raise LoomError(f"node {orphan[0]} has no parent in the document")
        conn.execute(
            "CREATE TEMP TABLE import_order AS WITH RECURSIVE t(id, depth) AS"
            " (SELECT ?, 0 UNION ALL SELECT s.id, t.depth + 1 FROM import_nodes s"
            " JOIN t ON s.parent = t.id) SELECT id, depth FROM t",
            (root,),
        )
        reached = conn.execute("SELECT COUNT(*) FROM import_order").fetchone()[0]
        if reached != self.count:
            raise LoomError(
                "the document's nodes do not form one tree (a cycle or a detached part)"
            )
        if self._log_check.running:
            self._log_check.result(conn)
        elif self._n_events:
            logcheck.check_log(conn)
        for persona in head.personas:
            if not math.isfinite(float(persona.prior)):
                raise LoomError(f"persona {persona.name!r}: prior must be a finite number")
        current = head.current
        if (
            current is None
            or not conn.execute("SELECT 1 FROM import_nodes WHERE id = ?", (current,)).fetchone()
        ):
            current = root
        doc_meta = dict(head.meta)
        doc_meta.pop("current", None)
        warnings = [str(w) for w in doc_meta.pop("import_warnings", None) or []]
        if self.respelled:
            warnings.append(_respelled_note(self.respelled))
        _check_json(doc_meta, "the document's meta", MAX_META_DEPTH)
        _check_memory(doc_meta, "the loom")
        first = True
        last = -1
        while True:
            batch = conn.execute(
                "SELECT o.rowid, s.record FROM import_order o JOIN import_nodes s ON s.id = o.id"
                " WHERE o.rowid > ? ORDER BY o.rowid LIMIT ?",
                (last, SNAPSHOT_BATCH),
            ).fetchall()
            if not batch and not first:
                break
            records = [codec.read_json(r[1]) for r in batch]
            # The records were checked and written as the log writes them: join those texts.
            nodes_text = '"nodes":[' + ",".join(r[1] for r in batch) + "]}"
            if first:
                payload: dict[str, Any] = {
                    "title": str(head.title),
                    "root": root,
                    "current": current,
                    "personas": [p.to_json() for p in head.personas],
                    "meta": doc_meta,
                }
                text = ev.dumps(payload)[:-1] + "," + nodes_text
                commit_event(conn, ev.IMPORT, {**payload, "nodes": records}, text=text)
                first = False
            else:
                commit_event(conn, ev.IMPORT_NODES, {"nodes": records}, text="{" + nodes_text)
            if self.progress is not None:
                self.progress.advance(len(records))
            if not batch:
                break
            last = int(batch[-1][0])
        conn.execute("DROP TABLE temp.import_order")
        conn.execute("DROP TABLE temp.import_nodes")
        conn.execute("INSERT INTO nodes_fts (nodes_fts) VALUES ('rebuild')")
        for trigger in schema.FTS_TRIGGERS.values():
            conn.execute(trigger)
        return warnings


def _respelled_note(respelled: list[int]) -> str:
    shown = ", ".join(str(i) for i in respelled[:5])
    more = f" and {len(respelled) - 5} more" if len(respelled) > 5 else ""
    return (
        f"the tokens of node {shown}{more} do not spell the node's text: kept as far as they "
        "do, the model will tokenize the rest"
    )


def _check_id(node: Node) -> None:
    if isinstance(node.id, bool) or not isinstance(node.id, int) or node.id < 0:
        raise LoomError(f"node id {node.id!r} is not a non-negative integer")
    if node.id > MAX_NODE_ID:
        raise LoomError(f"node id {node.id} is too large (loom ids go up to {MAX_NODE_ID})")


def _check_json(value: Any, where: str, max_depth: int) -> str:
    """`value` as the log writes it; `LoomError` unless it is plain JSON, finite, not too deep
    (so every later writer of it, recursive or not, can write it too)."""
    try:
        ev.check_plain(value, max_depth)
    except ValueError as exc:
        raise LoomError(f"{where} {exc}") from None
    try:
        return ev.dumps(value, finite=True)
    except (TypeError, ValueError, RecursionError) as exc:
        raise LoomError(f"{where} cannot be stored (not plain JSON data: {exc})") from None


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
    return _no_infinity(tokens.logprobs, tokens.top_logprobs, tokens.entropy)


def _finite_columns(columns: codec.TokenColumns) -> bool:
    return _no_infinity(columns.logprobs, columns.top_logprobs, columns.entropy)


def _no_infinity(*columns: np.ndarray[Any, Any] | None) -> bool:
    # (every numpy call counts here: an import makes these checks for every node)
    arrays = [np.asarray(c) for c in columns if c is not None]
    return not any(np.isinf(a).any() for a in arrays if a.size)


@dataclass(frozen=True)
class PreparedNode:
    """A node checked and encoded without the database (`prepare_node`), so in any process:
    what `ImportSink.prepared` stores."""

    id: int
    parent: int | None
    fields: str  # its record as the log keeps it, but for its position and tokens (JSON)
    tokens: rows.TokenRowData | None
    key: int | None


def prepare_node(
    node: Node, key: int | None, columns: codec.TokenColumns | None, vocab: codec.VocabTable
) -> PreparedNode | None:
    """`node` ready to store, its tokens being `columns` (every id in `vocab`, the loom's); None
    where it needs the database on the way (tokens to cut or to spell, readings to store)."""
    if columns is None or node.scores or node.tokens:
        return None
    try:
        spelled = "".join(codec.own_texts(columns, vocab))
    except KeyError:  # an id the vocabulary lacks: the sink's own path says which
        return None
    if spelled != node.text:
        return None
    fields = _checked_fields(node)
    if not _finite_columns(columns):
        raise LoomError(f"node {node.id}: a token probability is out of range (infinite)")
    fields["tokens_partial"] = False
    text = _check_json(fields, f"node {node.id}", MAX_PAYLOAD_DEPTH)
    return PreparedNode(node.id, node.parent, text, rows.token_row_data(columns), key)


def _checked_fields(node: Node) -> Record:
    """The node's record but for its tokens, position and readings; `LoomError` naming the node
    for anything the store cannot keep."""
    _check_id(node)
    parent = node.parent
    if parent is not None and (isinstance(parent, bool) or not isinstance(parent, int)):
        raise LoomError(f"node {node.id}: parent {parent!r} is not a node id")
    if node.author not in ("human", "model"):
        raise LoomError(f"node {node.id}: author must be 'human' or 'model', not {node.author!r}")
    if not isinstance(node.text, str):
        raise LoomError(f"node {node.id}: text must be a string")
    check_text(node.text, f"node {node.id}")
    if not MIN_TIME <= float(node.created_at) <= MAX_TIME:  # NaN fails this too
        raise LoomError(f"node {node.id}: created_at is not a time between the years 1 and 9999")
    if not _finite_tokens(node.tokens):
        raise LoomError(f"node {node.id}: a token probability is out of range (infinite)")
    tags = list(dict.fromkeys(str(t) for t in node.tags))
    meta = dict(node.meta or {})
    meta.pop(PARTIAL_KEY, None)  # exports mark partial tokens; what they cover is what counts
    if ev.nesting_depth(meta, MAX_META_DEPTH) > MAX_META_DEPTH:
        raise LoomError(f"node {node.id}: meta is nested too deeply (over {MAX_META_DEPTH} levels)")
    _check_memory(meta, f"node {node.id}")
    # The import event logs the record: anything in it that strict JSON cannot hold (an infinite
    # posterior or temperature, a foreign object in meta) is named by node (by `_check_json`).
    return {
        "id": node.id,
        "parent": node.parent,
        "author": node.author,
        "text": node.text,
        "created_at": float(node.created_at),
        "generation": None if node.generation is None else node.generation.to_json(),
        "persona": None if node.persona is None else node.persona.to_json(),
        "manual_persona": node.manual_persona,
        "bookmarked": bool(node.bookmarked),
        "pruned": bool(node.pruned),
        "tags": tags,
        "meta": meta or None,
    }


def _check_memory(meta: dict[str, Any], where: str) -> None:
    """A memory an import carries must be one the prompts can read (the text and placement)."""
    if MEMORY_KEY in meta:
        try:
            meta[MEMORY_KEY] = Memory.from_json(meta[MEMORY_KEY]).kept()
        except ValueError as exc:
            raise LoomError(f"{where}: {exc}") from None


def check_text(text: str, where: str) -> None:
    """Any text SQLite can hold as TEXT: everything but unpaired surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise LoomError(f"{where}: text holds an unpaired surrogate (not valid Unicode)") from None
