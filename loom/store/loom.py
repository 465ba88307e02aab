"""`Loom`: one open .loom file — the tree API the CLI, the TUI, personas and replay use.

Every edit reads what it needs, builds one event and commits it inside a single `BEGIN IMMEDIATE`
transaction (see db.py), so edits from several processes interleave without losing any. Adds
tokenize their text before the transaction starts; edits, splits and merges tokenize inside it,
because what to tokenize depends on the text they must first read there.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from loom import __version__
from loom.store import document, rows, textops, views
from loom.store import events as ev
from loom.store.apply import commit_event, load_event
from loom.store.db import Database, building
from loom.store.errors import (
    InvalidEditError,
    LoomError,
    TokensUnavailableError,
    UnknownNodeError,
    damaged,
)
from loom.store.events import Event, ref_of, token_ref
from loom.store.model import (
    MEMORY_KEY,
    Author,
    GenerationSettings,
    LoomDocument,
    Memory,
    Node,
    Persona,
    PersonaLabel,
)
from loom.store.rows import Record
from loom.store.search import SearchHit, search
from loom.store.stream import DocumentHead, Progress, Throttle
from loom.store.textops import Span
from loom.store.tokenizer import Tokenizer
from loom.store.views import NodeHeader
from loom.tokens import TokenArray

__all__ = [
    "Loom",
    "ModelLabelCount",
    "ModelUse",
    "NewNode",
    "NodeHeader",
    "SearchHit",
    "StoredCensus",
]

ROOT_ID = 1


@dataclass(frozen=True)
class ModelUse:
    """A model that wrote nodes of a loom, as its generation records name it."""

    name: str
    sha256: str  # "" when it was not hashed (a remote model)
    nodes: int


@dataclass(frozen=True)
class ModelLabelCount:
    """How many nodes a model wrote that carry one combination of stored labels."""

    model: str
    manual_persona: str | None
    scored: bool  # a model label is stored (None below: scored, but undecided)
    label: str | None
    nodes: int


@dataclass
class StoredCensus:
    """A census as the log keeps it: the event's seq and time, its node, its payload."""

    seq: int
    ts: float
    node_id: int
    payload: dict[str, Any]


@dataclass
class NewNode:
    """One node to add; `tokens` None means tokenize with the loom's tokenizer (if it has one)."""

    text: str
    tokens: TokenArray | None = None
    author: Author = "model"
    generation: GenerationSettings | None = None
    persona: PersonaLabel | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _check_text(text: object, where: str = "text") -> str:
    if not isinstance(text, str):
        raise InvalidEditError(f"{where} must be a string, not {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEditError(f"{where} holds an unpaired surrogate (not valid Unicode)") from None
    return text


def _check_author(author: object) -> Author:
    if author == "human":
        return "human"
    if author == "model":
        return "model"
    raise InvalidEditError(f"author must be 'human' or 'model', not {author!r}")


def _nid(node_id: object) -> int:
    """Node ids are ints SQLite can hold; anything else (SQLite would match "1" or 1.0 to 1, and
    refuse 2**63 with an OverflowError) is unknown."""
    if not rows.is_node_id(node_id):
        raise UnknownNodeError(node_id)
    return node_id


def _span(conn: sqlite3.Connection, rec: Record) -> Span:
    return Span(rec["text"], rows.load_tokens(conn, ref_of(rec["tokens"])), rec["tokens_partial"])


def _new_record(
    conn: sqlite3.Connection,
    node_id: int,
    parent: int | None,
    position: int,
    author: str,
    created_at: float,
    span: Span,
    *,
    generation: dict[str, Any] | None = None,
    persona: dict[str, Any] | None = None,
    manual_persona: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Record:
    """The record of a node as an event carries it: new, unmarked, its span's tokens stored."""
    return {
        "id": node_id,
        "parent": parent,
        "position": position,
        "author": author,
        "created_at": created_at,
        "generation": generation,
        "persona": persona,
        "manual_persona": manual_persona,
        "bookmarked": False,
        "pruned": False,
        "tags": [],
        "meta": meta,
        **_span_fields(conn, span),
    }


def _span_fields(conn: sqlite3.Connection, span: Span) -> dict[str, Any]:
    return {
        "text": span.text,
        "tokens": token_ref(rows.store_tokens(conn, span.tokens)),
        "tokens_partial": span.partial,
    }


class Loom:
    """One open loom: `Loom.create`, `Loom.open` or `Loom.from_document`; close it (or `with`).

    Ids are ints (a new loom's root is 1; ids are never reused). Reads are cheap: headers
    (`header`, `children`, `ancestors`) never load token blobs; `node` and `path_nodes` do. Every
    edit is one event in the log, one SQLite transaction committed before the method returns,
    and one undo step (`batch()` makes several edits one); a no-op edit logs nothing. A loom
    opened read-only never writes its file. Errors are `loom.store.errors` classes with one-line
    messages. How tokens follow text through edits: textops.py; import and export: document.py.
    """

    def __init__(self, db: Database, *, tokenizer: Tokenizer | None = None) -> None:
        self._db = db
        self.tokenizer = tokenizer
        self._current: int | None = None  # read-only looms keep the cursor in memory
        self._view: dict[str, Any] = {}  # … and their view settings
        self._batch: list[int] | None = None  # undoable seqs of the open batch
        self._batch_thread: int | None = None
        # Threads: any thread may read (the connection is guarded by a lock, each read is one
        # consistent snapshot); only the thread that opened the loom writes, so the order of the
        # writes is the order its owner (the app's UI thread, the CLI) made them.
        self._owner = threading.get_ident()

    # --- opening and closing ------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: Path | str,
        *,
        title: str = "",
        prompt: str = "",
        prompt_tokens: TokenArray | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> Loom:
        """A new loom whose root holds `prompt`; `LoomExistsError` if `path` exists."""
        path = Path(path)
        _check_text(title, "title")
        span = textops.new_text(_check_text(prompt, "prompt"), prompt_tokens, tokenizer)
        with building(path) as conn:
            root = _new_record(conn, ROOT_ID, None, 0, "human", time.time(), span)
            payload = {"title": title, "root": ROOT_ID, "current": ROOT_ID, "nodes": [root]}
            commit_event(conn, ev.CREATE, payload)
            _stamp(conn)
        return cls.open(path, tokenizer=tokenizer)

    @classmethod
    def open(
        cls, path: Path | str, *, readonly: bool = False, tokenizer: Tokenizer | None = None
    ) -> Loom:
        """Open a loom file. `LoomFileError` (file left untouched) if it is not one we can use."""
        return cls(Database.open(Path(path), readonly=readonly), tokenizer=tokenizer)

    @classmethod
    def from_document(
        cls, path: Path | str, doc: LoomDocument, *, tokenizer: Tokenizer | None = None
    ) -> Loom:
        """Import `doc` (ids kept) into a new file; nothing is left at `path` on failure."""
        path = Path(path)
        with building(path) as conn:
            document.import_document(conn, doc)
            _stamp(conn)
        return cls.open(path, tokenizer=tokenizer)

    @classmethod
    def build(
        cls,
        path: Path | str,
        fill: Callable[[document.ImportSink], DocumentHead],
        *,
        progress: Progress | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> tuple[Loom, list[str]]:
        """A new loom at `path` from a document streamed into an `ImportSink` by `fill` (which
        returns the document's head); nothing is left at `path` on failure. Returns the loom and
        the import's warnings. `progress(done, total)` follows the logging of the nodes."""
        path = Path(path)
        with building(path) as conn:
            sink = document.ImportSink(conn)
            try:
                head = fill(sink)
                sink.progress = Throttle(progress, sink.count)
                warnings = sink.finish(head)
            finally:
                sink.close()
            sink.progress.finish()
            _stamp(conn)
        return cls.open(path, tokenizer=tokenizer), warnings

    @contextlib.contextmanager
    def exporting(
        self, *, node: int | None = None, path: bool = False
    ) -> Iterator[document.StoreExport]:
        """The loom as a `DocumentStream` for a streaming export, from one consistent snapshot:
        the whole loom, the subtree under `node`, or (`path`) the path from the root to `node`
        (default: the current node). A loom with a file is read on a connection of its own, so
        other threads keep reading this one meanwhile (an export can run in a worker)."""
        if node is not None:
            node = _nid(node)
        target = (node if node is not None else self.current) if path else None
        subtree = None if path else node
        if self.path is None:
            with self._db.read() as conn:
                yield document.StoreExport(conn, subtree=subtree, path_to=target)
            return
        db = Database.open(self.path, readonly=True)
        try:
            with db.read() as conn:
                yield document.StoreExport(conn, subtree=subtree, path_to=target)
        finally:
            db.close()

    def to_document(self, *, events: bool = True) -> LoomDocument:
        """The whole loom, nodes parents-first; `events` carries the log (token data inlined)."""
        with self._db.read() as conn:
            return document.export(conn, with_events=events)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Loom:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Loom({str(self.path) if self.path else ':memory:'!r})"

    # --- properties ---------------------------------------------------------------------------

    @property
    def path(self) -> Path | None:
        return self._db.path

    @property
    def readonly(self) -> bool:
        return self._db.readonly

    @property
    def root_id(self) -> int:
        with self._db.read() as conn:
            return _root(conn)

    @property
    def title(self) -> str:
        with self._db.read() as conn:
            return str(rows.get_meta(conn, "title", ""))

    @property
    def current(self) -> int:
        """The last visited node (the root if it was deleted meanwhile)."""
        with self._db.read() as conn:
            if self._current is not None and self._exists(conn, self._current):
                return self._current
            current = rows.get_meta(conn, "current")
            # A damaged file may hold anything there: the root is always a good place to be.
            return int(current) if self._exists(conn, current) else _root(conn)

    @property
    def personas(self) -> list[Persona]:
        with self._db.read() as conn:
            return document.personas(conn)

    def models_used(self) -> list[ModelUse]:
        """The models that wrote this loom's nodes (from their generation records), the one that
        wrote the most first; pruned nodes count too (they are still in the file)."""
        with self._db.read() as conn:
            found = conn.execute(
                "SELECT json_extract(generation, '$.model'), "
                "COALESCE(json_extract(generation, '$.model_sha256'), ''), COUNT(*) FROM nodes "
                "WHERE generation IS NOT NULL AND json_extract(generation, '$.model') IS NOT NULL "
                "GROUP BY 1, 2 ORDER BY 3 DESC, 1"
            ).fetchall()
        return [ModelUse(str(name), str(sha), int(n)) for name, sha, n in found]

    def model_label_counts(self, root: int) -> list[ModelLabelCount]:
        """Under `root` (not counting it): how many nodes each model wrote with each stored
        label, one row per (model, hand label, model label) — counted in SQL, so a subtree of
        any size costs one query."""
        root = _nid(root)
        with self._db.read() as conn:
            rows.require(conn, root)
            found = conn.execute(
                "WITH RECURSIVE sub(id) AS (SELECT id FROM nodes WHERE parent = ? UNION ALL "
                "SELECT n.id FROM nodes n JOIN sub ON n.parent = sub.id) "
                "SELECT json_extract(generation, '$.model'), manual_persona, persona IS NOT NULL, "
                "json_extract(persona, '$.label'), COUNT(*) FROM nodes "
                "WHERE id IN sub AND json_extract(generation, '$.model') IS NOT NULL "
                "GROUP BY 1, 2, 3, 4",
                (root,),
            ).fetchall()
        return [
            ModelLabelCount(str(model), manual, bool(scored), label, int(n))
            for model, manual, scored, label, n in found
        ]

    @property
    def can_undo(self) -> bool:
        with self._db.read() as conn:
            return _top(conn, ev.DONE) is not None

    @property
    def can_redo(self) -> bool:
        with self._db.read() as conn:
            return _top(conn, ev.UNDONE) is not None

    # --- reading ------------------------------------------------------------------------------

    @staticmethod
    def _exists(conn: sqlite3.Connection, node_id: object) -> bool:
        if not rows.is_node_id(node_id):
            return False
        return conn.execute("SELECT 1 FROM nodes WHERE id = ?", (node_id,)).fetchone() is not None

    def __contains__(self, node_id: object) -> bool:
        with self._db.read() as conn:
            return self._exists(conn, node_id)

    def node(self, node_id: int) -> Node:
        """The full node, tokens included; `UnknownNodeError` if there is none."""
        node_id = _nid(node_id)
        with self._db.read() as conn:
            return views.nodes(conn, [node_id])[0]

    def nodes(self, node_ids: Sequence[int]) -> list[Node]:
        """Full nodes, tokens included, in the given order."""
        ids = [_nid(i) for i in node_ids]
        with self._db.read() as conn:
            return views.nodes(conn, ids)

    def header(self, node_id: int) -> NodeHeader:
        node_id = _nid(node_id)
        with self._db.read() as conn:
            return views.header(conn, node_id)

    def headers(self, node_ids: Sequence[int]) -> list[NodeHeader]:
        ids = [_nid(i) for i in node_ids]
        with self._db.read() as conn:
            return views.headers(conn, ids)

    def children(self, node_id: int, *, include_pruned: bool = True) -> list[NodeHeader]:
        """Children in the order they were made (a moved node goes last)."""
        node_id = _nid(node_id)
        with self._db.read() as conn:
            rows.require(conn, node_id)
            return views.children(conn, node_id, include_pruned)

    def siblings(self, node_id: int, *, include_pruned: bool = True) -> list[NodeHeader]:
        """The other children of this node's parent."""
        node_id = _nid(node_id)
        with self._db.read() as conn:
            parent = rows.parent_of(conn, node_id)
            if parent is None:
                return []
            return [h for h in views.children(conn, parent, include_pruned) if h.id != node_id]

    def ancestors(self, node_id: int) -> list[NodeHeader]:
        """From the root down to the parent (the node itself excluded)."""
        node_id = _nid(node_id)
        with self._db.read() as conn:
            rows.require(conn, node_id)
            return views.headers(conn, rows.ancestor_ids(conn, node_id))

    def path_nodes(self, node_id: int) -> list[Node]:
        """Full nodes from the root down to `node_id` (included)."""
        node_id = _nid(node_id)
        with self._db.read() as conn:
            rows.require(conn, node_id)
            return views.nodes(conn, [*rows.ancestor_ids(conn, node_id), node_id])

    def path_text(self, node_id: int) -> str:
        node_id = _nid(node_id)
        with self._db.read() as conn:
            ids = rows.path_ids(conn, node_id)
            texts = rows.texts_of(conn, ids)
            return "".join(texts[i] for i in ids)

    def path_tokens(self, node_id: int) -> TokenArray:
        """The tokens the model reads for the path (after BOS).

        Nodes whose text has no tokens yet are tokenized with `tokenizer` on the fly (nothing is
        written); without one, `TokensUnavailableError` rather than a wrong context.
        """
        node_id = _nid(node_id)
        with self._db.read() as conn:
            rows.require(conn, node_id)
            ids = [*rows.ancestor_ids(conn, node_id), node_id]
            records = rows.read_records(conn, ids)
            spans = [_span(conn, rec) for rec in records]
        parts = []
        for rec, span in zip(records, spans, strict=True):
            full = textops.complete(span, self.tokenizer)
            if full.partial:
                raise TokensUnavailableError(
                    f"node {rec['id']} has text without tokens (written without a model); "
                    "open the loom with a model to tokenize it"
                )
            parts.append(full.tokens)
        return TokenArray.concat(parts)

    def search(
        self, query: str, limit: int = 100, *, include_pruned: bool = True
    ) -> list[SearchHit]:
        """Nodes whose text has every word of `query` (the last may be a prefix), best first."""
        with self._db.read() as conn:
            return search(conn, query, limit, include_pruned)

    def bookmarks(self) -> list[int]:
        with self._db.read() as conn:
            return [
                int(r[0]) for r in conn.execute("SELECT id FROM nodes WHERE bookmarked ORDER BY id")
            ]

    def tagged(self, tag: str) -> list[int]:
        with self._db.read() as conn:
            return [
                int(r[0])
                for r in conn.execute(
                    "SELECT node_id FROM tags WHERE tag = ? ORDER BY node_id", (tag,)
                )
            ]

    def leaves(self) -> list[int]:
        with self._db.read() as conn:
            return [
                int(r[0])
                for r in conn.execute(
                    "SELECT id FROM nodes n WHERE NOT EXISTS "
                    "(SELECT 1 FROM nodes c WHERE c.parent = n.id) ORDER BY id"
                )
            ]

    def stats(self) -> dict[str, int]:
        """Counts over the whole tree (this one does read every node)."""
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT COUNT(*), COALESCE(MAX(depth), 0), COALESCE(SUM(bookmarked), 0),"
                " COALESCE(SUM(pruned), 0), COALESCE(SUM(author = 'model'), 0),"
                " COALESCE(SUM(author = 'human'), 0), COALESCE(SUM(n_tokens), 0) FROM nodes"
            ).fetchone()
            leaves = conn.execute(
                "SELECT COUNT(*) FROM nodes n WHERE NOT EXISTS "
                "(SELECT 1 FROM nodes c WHERE c.parent = n.id)"
            ).fetchone()[0]
            events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        keys = (
            "nodes",
            "max_depth",
            "bookmarked",
            "pruned",
            "model_nodes",
            "human_nodes",
            "tokens",
        )
        out = {k: int(v) for k, v in zip(keys, row, strict=True)}
        out["leaves"] = int(leaves)
        out["events"] = int(events)
        return out

    def events(self, *, after: int = 0) -> list[Event]:
        """The log from `after` on (token arrays as `{"$tok": id}`, see `stored_tokens`)."""
        with self._db.read() as conn:
            out = []
            for seq, ts, kind, payload, state in conn.execute(
                "SELECT e.seq, e.ts, e.kind, e.payload, h.state FROM events e "
                "LEFT JOIN history h ON h.seq = e.seq WHERE e.seq > ? ORDER BY e.seq",
                (after,),
            ):
                out.append(_event(seq, ts, kind, payload, state))
            return out

    def stored_tokens(self, ref: int) -> TokenArray:
        """The token array an event refers to as `{"$tok": ref}`."""
        with self._db.read() as conn:
            return rows.load_tokens(conn, ref)

    # --- the cursor (not an undoable edit) ----------------------------------------------------

    def set_current(self, node_id: int) -> None:
        node_id = _nid(node_id)
        if self.readonly:
            with self._db.read() as conn:
                rows.require(conn, node_id)
            self._current = node_id
            return
        with self._write() as conn:
            rows.require(conn, node_id)
            old = rows.get_meta(conn, "current")
            if old != node_id:
                commit_event(conn, ev.VISIT, {"old": old, "new": node_id})

    # --- the reader's view (in the file, outside the log's edits and undo) -------------------

    def visited_paths(self) -> set[int]:
        """Every node on the path to a node the reader has stopped on: the root, the current
        node and every `visit` target in the log, with their ancestors (nodes since removed
        are left out). Read once and kept by the caller: it scans the log."""
        with self._db.read() as conn:
            found = {
                int(r[0])
                for r in conn.execute(
                    "WITH RECURSIVE seen(id) AS ("
                    " SELECT json_extract(payload, '$.new') FROM events WHERE kind = ?"
                    " UNION SELECT n.parent FROM nodes n JOIN seen ON n.id = seen.id"
                    " WHERE n.parent IS NOT NULL)"
                    " SELECT seen.id FROM seen JOIN nodes n ON n.id = seen.id",
                    (ev.VISIT,),
                )
            }
            found.add(_root(conn))
        here = self.current
        found.add(here)
        with self._db.read() as conn:
            found.update(rows.ancestor_ids(conn, here))
        return found

    def parent_map(self, *, include_pruned: bool = True) -> dict[int, int | None]:
        """Every node's parent (the root's is None): one query, for walks over the whole tree."""
        where = "" if include_pruned else " WHERE NOT pruned"
        with self._db.read() as conn:
            return {
                int(i): None if p is None else int(p)
                for i, p in conn.execute(f"SELECT id, parent FROM nodes{where}")
            }

    def view_state(self, key: str) -> Any:
        """A view setting kept with the loom (the hoist, say): None if never set."""
        if key in self._view:
            return self._view[key]
        with self._db.read() as conn:
            return rows.get_meta(conn, f"view.{key}")

    def set_view_state(self, key: str, value: Any) -> None:
        """Keep a view setting (plain JSON) with the loom. Not an edit: it is not logged, not
        undone and not exported; a read-only loom keeps it in memory."""
        if self.readonly:
            self._view[key] = value
            return
        with self._write() as conn:
            rows.set_meta(conn, f"view.{key}", value)

    # --- tree edits (each one event, undoable) -------------------------------------------------

    def add_child(
        self,
        parent: int,
        text: str,
        *,
        author: Author = "human",
        tokens: TokenArray | None = None,
        generation: GenerationSettings | None = None,
        persona: PersonaLabel | None = None,
        meta: dict[str, Any] | None = None,
    ) -> int:
        new = NewNode(text, tokens, author, generation, persona, dict(meta or {}))
        return self.add_children(parent, [new])[0]

    def add_children(self, parent: int, nodes: Sequence[NewNode]) -> list[int]:
        """Add several children in one transaction and one undo step (a generation batch)."""
        parent = _nid(parent)
        if not nodes:
            return []
        spans = []
        for new in nodes:
            _check_author(new.author)
            if new.tokens is not None and not isinstance(new.tokens, TokenArray):
                raise InvalidEditError("tokens must be a TokenArray")
            spans.append(textops.new_text(_check_text(new.text), new.tokens, self.tokenizer))
        now = time.time()
        with self._write() as conn:
            rows.require(conn, parent)
            ids = rows.allocate_ids(conn, len(nodes))
            first = rows.next_position(conn, parent)
            records = [
                _new_record(
                    conn,
                    node_id,
                    parent,
                    first + i,
                    new.author,
                    now,
                    span,
                    generation=None if new.generation is None else new.generation.to_json(),
                    persona=None if new.persona is None else new.persona.to_json(),
                    meta=dict(new.meta) or None,
                )
                for i, (node_id, new, span) in enumerate(zip(ids, nodes, spans, strict=True))
            ]
            self._commit(conn, ev.ADD, {"parent": parent, "nodes": records})
        return ids

    def edit(self, node_id: int, text: str, *, tokens: TokenArray | None = None) -> None:
        """Replace a node's text. Without `tokens` they follow the text (see textops)."""
        node_id = _nid(node_id)
        _check_text(text)
        if tokens is not None and not isinstance(tokens, TokenArray):
            raise InvalidEditError("tokens must be a TokenArray")
        with self._write() as conn:
            rec = rows.read_record(conn, node_id)
            old = _span(conn, rec)
            if tokens is None:
                if text == rec["text"]:
                    return
                new = textops.edit(old, text, self.tokenizer)
            else:
                new = Span(text, tokens, False)
            old_fields = {k: rec[k] for k in ("text", "tokens", "tokens_partial")}
            new_fields = _span_fields(conn, new)
            if new_fields == old_fields:
                return
            self._commit(conn, ev.EDIT, {"id": node_id, "old": old_fields, "new": new_fields})

    def split(
        self, node_id: int, *, at_char: int | None = None, at_token: int | None = None
    ) -> int:
        """Cut a node in two; the tail becomes its only child (and parent of its old children).

        The tail keeps the model's persona posterior (it was computed at the node's end); the head's
        is cleared. Returns the tail's id.
        """
        if (at_char is None) == (at_token is None):
            raise InvalidEditError("split needs exactly one of at_char and at_token")
        with self._write() as conn:
            rec = rows.read_record(conn, node_id)
            span = _span(conn, rec)
            if at_char is not None:
                head, tail = textops.split_at_char(span, int(at_char), self.tokenizer)
            else:
                head, tail = textops.split_at_token(span, int(at_token or 0), self.tokenizer)
            (tail_id,) = rows.allocate_ids(conn, 1)
            tail_rec = _new_record(
                conn,
                tail_id,
                node_id,
                0,
                rec["author"],
                rec["created_at"],
                tail,
                generation=rec["generation"],
                persona=rec["persona"],
                manual_persona=rec["manual_persona"],
            )
            payload = {
                "id": node_id,
                "old": {k: rec[k] for k in ("text", "tokens", "tokens_partial", "persona")},
                "head": {**_span_fields(conn, head), "persona": None},
                "tail": tail_rec,
                "children": rows.child_ids(conn, node_id),
            }
            self._commit(conn, ev.SPLIT, payload)
        return tail_id

    def merge_into_parent(self, node_id: int) -> None:
        """Append a node to its parent, which must have no other child (so no sibling's context
        changes). The node's children become the parent's. Tags and bookmarks are united; a
        model node merged with a human one becomes human (it was edited); the persona posterior
        is the child's (it was computed at the merged node's end).
        """
        node_id = _nid(node_id)
        with self._write() as conn:
            rec = rows.read_record(conn, node_id)
            parent_id = rec["parent"]
            if parent_id is None:
                raise InvalidEditError("the root has no parent to merge into")
            siblings = rows.child_ids(conn, parent_id)
            if len(siblings) != 1:
                raise InvalidEditError(
                    f"cannot merge node {node_id} into its parent: the parent has "
                    f"{len(siblings)} children (only an only child can be merged)"
                )
            prec = rows.read_record(conn, parent_id)
            merged = textops.merge(_span(conn, prec), _span(conn, rec), self.tokenizer)
            same_author = prec["author"] == rec["author"]
            keys = (
                "text",
                "tokens",
                "tokens_partial",
                "author",
                "generation",
                "persona",
                "manual_persona",
                "bookmarked",
                "tags",
            )
            new = {
                **_span_fields(conn, merged),
                "author": prec["author"] if same_author else "human",
                "generation": prec["generation"] if same_author else None,
                "persona": rec["persona"],
                "manual_persona": prec["manual_persona"] or rec["manual_persona"],
                "bookmarked": prec["bookmarked"] or rec["bookmarked"],
                "tags": list(dict.fromkeys([*prec["tags"], *rec["tags"]])),
            }
            old_keys: tuple[str, ...] = keys
            child_memory = (rec["meta"] or {}).get(MEMORY_KEY)
            if child_memory is not None:
                # The child's memory was what its descendants read: the merged node keeps it.
                new["meta"] = {**(prec["meta"] or {}), MEMORY_KEY: child_memory}
                old_keys = (*keys, "meta")
            payload = {
                "id": node_id,
                "parent": parent_id,
                "old": {k: prec[k] for k in old_keys},
                "new": new,
                "child": rec,
                "children": rows.child_ids(conn, node_id),
            }
            self._commit(conn, ev.MERGE, payload)

    def prune(self, node_id: int) -> None:
        """Hide a branch (soft: `children(include_pruned=True)` still lists it)."""
        node_id = _nid(node_id)
        self._set_field(node_id, ev.PRUNE, "pruned", True)

    def unprune(self, node_id: int) -> None:
        node_id = _nid(node_id)
        self._set_field(node_id, ev.UNPRUNE, "pruned", False)

    def set_bookmark(self, node_id: int, on: bool = True) -> None:
        node_id = _nid(node_id)
        self._set_field(node_id, ev.BOOKMARK, "bookmarked", bool(on))

    def set_persona(self, node_id: int, label: PersonaLabel | None) -> None:
        """The model's posterior label of a node (from persona scoring)."""
        node_id = _nid(node_id)
        self._set_field(node_id, ev.PERSONA, "persona", None if label is None else label.to_json())

    def set_manual_persona(self, node_id: int, name: str | None) -> None:
        """A label set by hand; it is kept apart from the model's and always wins."""
        node_id = _nid(node_id)
        if name is not None:
            _check_text(name, "persona name")
        self._set_field(node_id, ev.MANUAL_PERSONA, "manual_persona", name)

    def _set_field(self, node_id: int, kind: str, name: str, value: Any) -> None:
        with self._write() as conn:
            old = rows.read_record(conn, node_id)[name]
            if old != value:
                payload = {"id": node_id, "old": {name: old}, "new": {name: value}}
                self._commit(conn, kind, payload)

    def delete_subtree(self, node_id: int) -> None:
        """Remove a node and everything under it (hard; undo restores all of it, tokens too)."""
        node_id = _nid(node_id)
        with self._write() as conn:
            rows.require(conn, node_id)
            if node_id == _root(conn):
                raise InvalidEditError("the root cannot be deleted")
            records = rows.read_records(conn, rows.subtree_ids(conn, node_id))
            self._commit(conn, ev.DELETE, {"id": node_id, "nodes": records})

    def add_tag(self, node_id: int, tag: str) -> None:
        node_id = _nid(node_id)
        _check_text(tag, "tag")
        if not tag.strip():
            raise InvalidEditError("a tag cannot be empty")
        with self._write() as conn:
            rows.require(conn, node_id)
            row = conn.execute(
                "SELECT 1 FROM tags WHERE node_id = ? AND tag = ?", (node_id, tag)
            ).fetchone()
            if row is None:
                top = conn.execute("SELECT MAX(ord) FROM tags WHERE node_id = ?", (node_id,))
                last = top.fetchone()[0]
                ord_ = 0 if last is None else int(last) + 1
                self._commit(conn, ev.TAG, {"id": node_id, "tag": tag, "ord": ord_})

    def remove_tag(self, node_id: int, tag: str) -> None:
        node_id = _nid(node_id)
        with self._write() as conn:
            rows.require(conn, node_id)
            row = conn.execute(
                "SELECT ord FROM tags WHERE node_id = ? AND tag = ?", (node_id, tag)
            ).fetchone()
            if row is not None:
                self._commit(conn, ev.UNTAG, {"id": node_id, "tag": tag, "ord": int(row[0])})

    def move(self, node_id: int, new_parent: int) -> None:
        """Hang a subtree under another node (last among its children)."""
        node_id = _nid(node_id)
        new_parent = _nid(new_parent)
        with self._write() as conn:
            rec = rows.read_record(conn, node_id)
            rows.require(conn, new_parent)
            if rec["parent"] is None:
                raise InvalidEditError("the root cannot be moved")
            if new_parent == node_id or node_id in rows.ancestor_ids(conn, new_parent):
                raise InvalidEditError(
                    f"cannot move node {node_id} under {new_parent}: it is inside that subtree"
                )
            if rec["parent"] == new_parent:
                return
            payload = {
                "id": node_id,
                "old": {"parent": rec["parent"], "position": rec["position"]},
                "new": {"parent": new_parent, "position": rows.next_position(conn, new_parent)},
            }
            self._commit(conn, ev.MOVE, payload)

    def set_personas(self, personas: Sequence[Persona]) -> None:
        """The loom's persona set (undoable)."""
        new = []
        for p in personas:
            _check_text(p.name, "persona name")
            _check_text(p.description, "persona description")
            if not math.isfinite(float(p.prior)):
                raise InvalidEditError(f"persona {p.name!r}: prior must be a finite number")
            new.append(p.to_json())
        with self._write() as conn:
            old = [p.to_json() for p in document.personas(conn)]
            if old != new:
                self._commit(conn, ev.PERSONAS, {"old": old, "new": new})

    def set_title(self, title: str) -> None:
        _check_text(title, "title")
        with self._write() as conn:
            old = rows.get_meta(conn, "title", "")
            if old != title:
                self._commit(conn, ev.TITLE, {"old": old, "new": title})

    # --- hidden context ------------------------------------------------------------------------

    def memory(self, node_id: int | None = None) -> Memory | None:
        """The hidden context kept on `node_id` (None: the loom's own), if any."""
        with self._db.read() as conn:
            return _memory_of(conn, None if node_id is None else _nid(node_id))

    def memory_on_path(self, node_id: int) -> Memory | None:
        """The memory of `node_id` or of its nearest ancestor that has one (`node` says which):
        what its descendants inherit. Reads the path's meta only, never a token blob."""
        node_id = _nid(node_id)
        with self._db.read() as conn:
            rows.require(conn, node_id)
            ids = rows.path_ids(conn, node_id)
            found: dict[int, Any] = {}
            for part in rows.chunks(ids):
                for nid, meta in conn.execute(
                    f"SELECT id, meta FROM nodes WHERE id IN ({rows.marks(len(part))}) "
                    "AND meta IS NOT NULL",
                    tuple(part),
                ):
                    found[int(nid)] = meta
            for nid in reversed(ids):
                if nid in found and MEMORY_KEY in (kept := json.loads(found[nid]) or {}):
                    return replace(_parse_memory(kept[MEMORY_KEY]), node=nid)
        return None

    def memories(self) -> list[Memory]:
        """Every memory kept: the loom's first (if any), then the nodes' by id (`node` says
        which). The JSON text is filtered in SQL, so only nodes with a memory are parsed."""
        with self._db.read() as conn:
            found = [m for m in [_memory_of(conn, None)] if m is not None]
            for nid, meta in conn.execute(
                "SELECT id, meta FROM nodes WHERE meta LIKE ? ORDER BY id", (f'%"{MEMORY_KEY}"%',)
            ):
                kept = json.loads(meta) or {}
                if isinstance(kept, dict) and kept.get(MEMORY_KEY) is not None:
                    found.append(replace(_parse_memory(kept[MEMORY_KEY]), node=int(nid)))
        return found

    def set_memory(self, node_id: int | None, memory: Memory | None) -> None:
        """Keep `memory` on `node_id` (None: the loom), or clear it (`memory` None); one undoable
        event, nothing logged when it does not change."""
        target = None if node_id is None else _nid(node_id)
        new = None
        if memory is not None:
            _check_text(memory.text, "memory")
            try:
                new = Memory.from_json(memory.kept()).kept()  # the same checks an import makes
            except ValueError as exc:
                raise InvalidEditError(str(exc)) from None
        with self._write() as conn:
            if target is not None:
                rows.require(conn, target)
            old = _memory_of(conn, target)
            old_kept = None if old is None else old.kept()
            if old_kept != new:
                self._commit(conn, ev.MEMORY, {"node": target, "old": old_kept, "new": new})

    # --- census records -----------------------------------------------------------------------

    def add_census(self, payload: dict[str, Any]) -> int:
        """Log a census of a node (undoable; its rollouts stay out of the tree). `payload` as in
        `events.CENSUS`, each rollout's "tokens" a TokenArray. Returns the event's seq."""
        node_id = _nid(payload.get("node"))
        with self._write() as conn:
            rows.require(conn, node_id)
            stored = {
                **payload,
                "outcomes": [
                    {
                        **outcome,
                        "rollouts": [
                            {**r, "tokens": token_ref(rows.store_tokens(conn, r["tokens"]))}
                            for r in outcome["rollouts"]
                        ],
                    }
                    for outcome in payload["outcomes"]
                ],
            }
            event = self._commit(conn, ev.CENSUS, stored)
        return event.seq

    def censuses(self, node_id: int | None = None) -> list[StoredCensus]:
        """The censuses in effect (not undone), of one node or of all, oldest first; their
        rollouts' tokens as TokenArrays. Read from the log itself (undo and redo events), so a
        census carried in by an import counts as it did where it was made."""
        with self._db.read() as conn:
            query = "SELECT seq, ts, payload FROM events WHERE kind = ?"
            args: list[Any] = [ev.CENSUS]
            if node_id is not None:
                query += " AND json_extract(payload, '$.node') = ?"
                args.append(_nid(node_id))
            found = conn.execute(query + " ORDER BY seq", args).fetchall()
            in_effect = ev.still_done(
                (int(seq) for seq, _ts, _text in found),
                conn.execute(
                    "SELECT kind, json_extract(payload, '$.target') FROM events "
                    "WHERE kind IN (?, ?) ORDER BY seq",
                    (ev.UNDO, ev.REDO),
                ),
            )
            out = []
            for seq, ts, text in found:
                if int(seq) not in in_effect:
                    continue
                payload = ev.parse_payload(int(seq), text)
                for outcome in payload["outcomes"]:
                    for rollout in outcome["rollouts"]:
                        ref = ref_of(rollout["tokens"])
                        rollout["tokens"] = (
                            TokenArray.empty() if ref is None else rows.load_tokens(conn, ref)
                        )
                out.append(StoredCensus(int(seq), float(ts), int(payload["node"]), payload))
            return out

    # --- the models' readings of nodes --------------------------------------------------------

    def add_scores(
        self, model: str, model_sha256: str, readings: Sequence[tuple[int, TokenArray]]
    ) -> int | None:
        """Keep a model's readings of nodes it did not write (one `score` event; not an undo
        step: it is derived data, and undo of an edit leaves a reading that no longer spells the
        text unshown). Each reading must spell its node's text. Returns the event's seq (None
        when there is nothing to keep)."""
        if not readings:
            return None
        with self._write() as conn:
            entries = []
            for node_id, tokens in readings:
                node_id = _nid(node_id)
                rows.require(conn, node_id)
                text = rows.texts_of(conn, [node_id])[node_id]
                if tokens.text != text:
                    raise InvalidEditError(f"the reading of node {node_id} does not spell its text")
                entries.append(
                    {"node": node_id, "tokens": token_ref(rows.store_tokens(conn, tokens))}
                )
            payload = {
                "model": model,
                "model_sha256": model_sha256,
                "scored_at": time.time(),
                "nodes": entries,
            }
            event = commit_event(conn, ev.SCORE, payload)
        return event.seq

    # --- batches, undo and redo -----------------------------------------------------------------

    @contextlib.contextmanager
    def batch(self, *, auto: str | None = None) -> Iterator[None]:
        """Make the edits inside one transaction and one undo step (all or nothing on error).

        The write lock is held throughout, so keep slow work (model calls) outside. Nested
        batches join the outer one. `auto` marks the step as made automatically (by a policy of
        guided growth, named so): the log says so even for a step of one edit.
        """
        if self._batch_thread == threading.get_ident():
            yield
            return
        self._check_writer()
        with self._db.write() as conn:
            self._batch, self._batch_thread = [], threading.get_ident()
            try:
                yield
                if len(self._batch) > 1 or (auto and self._batch):
                    mark = {"auto": auto} if auto else {}
                    commit_event(conn, ev.GROUP, {"seqs": self._batch, **mark})
            finally:
                self._batch, self._batch_thread = None, None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self._batch_thread == threading.get_ident():
            yield self._db.conn  # inside this thread's batch: its transaction is open
            return
        self._check_writer()
        with self._db.write() as conn:
            yield conn

    def _check_writer(self) -> None:
        if threading.get_ident() != self._owner:
            raise LoomError(
                "internal error: a loom is written only from the thread that opened it "
                "(workers hand their results to that thread)"
            )

    def undo(self) -> Event | None:
        """Undo the latest step still done (by any process on this file): one edit, or every edit
        of a batch. Returns the step's first event, None if there is nothing to undo."""
        with self._write() as conn:
            steps = _step(conn, ev.DONE)
            for seq in reversed(steps):
                commit_event(conn, ev.UNDO, {"target": seq})
            if not steps:
                return None
            first = load_event(conn, steps[0])
        first.undone = True
        return first

    def redo(self) -> Event | None:
        """Redo the most recently undone step; None if there is none (or a new edit came since)."""
        with self._write() as conn:
            steps = _step(conn, ev.UNDONE)
            for seq in steps:
                commit_event(conn, ev.REDO, {"target": seq})
            return load_event(conn, steps[0]) if steps else None

    def _commit(self, conn: sqlite3.Connection, kind: str, payload: dict[str, Any]) -> Event:
        try:
            ev.dumps(payload)
        except (TypeError, ValueError) as exc:
            # Caller data (meta, posteriors) must be plain JSON without NaN to be logged.
            raise InvalidEditError(f"cannot store this {kind}: {exc}") from None
        # A new edit after undo forks history: the undone edits can no longer be redone. The log
        # records that as its own event rather than forgetting them.
        redoable = [
            int(r[0]) for r in conn.execute("SELECT seq FROM history WHERE state = ?", (ev.UNDONE,))
        ]
        if redoable:
            commit_event(conn, ev.DISCARD_REDO, {"targets": sorted(redoable)})
        event = commit_event(conn, kind, payload)
        if self._batch is not None and kind in ev.UNDOABLE:
            self._batch.append(event.seq)
        return event


def _parse_memory(value: Any) -> Memory:
    try:
        return Memory.from_json(value)
    except ValueError as exc:
        raise damaged(f"a memory is malformed: {exc}") from None


def _memory_of(conn: sqlite3.Connection, node_id: int | None) -> Memory | None:
    if node_id is None:
        meta = rows.get_meta(conn, "doc_meta", {}) or {}
    else:
        rows.require(conn, node_id)
        meta = rows.read_records(conn, [node_id])[0]["meta"] or {}
    value = meta.get(MEMORY_KEY) if isinstance(meta, dict) else None
    if value is None:
        return None
    memory = _parse_memory(value)
    return memory if node_id is None else replace(memory, node=node_id)


def _root(conn: sqlite3.Connection) -> int:
    return int(rows.get_meta(conn, "root"))


def _top(conn: sqlite3.Connection, state: int) -> int | None:
    """The next event to undo (latest done) or to redo (earliest undone)."""
    order = "DESC" if state == ev.DONE else "ASC"
    row = conn.execute(
        f"SELECT seq FROM history WHERE state = ? ORDER BY seq {order} LIMIT 1", (state,)
    ).fetchone()
    return None if row is None else int(row[0])


def _step(conn: sqlite3.Connection, state: int) -> list[int]:
    """The events (ascending) of the next step to undo (state DONE) or redo (state UNDONE)."""
    seq = _top(conn, state)
    if seq is None:
        return []
    rows_ = conn.execute(
        "SELECT seq FROM history WHERE grp = (SELECT grp FROM history WHERE seq = ?) "
        "AND state = ? ORDER BY seq",
        (seq, state),
    )
    return [int(r[0]) for r in rows_]


def _event(seq: int, ts: float, kind: str, payload: str, state: int | None) -> Event:
    return Event(
        seq=int(seq),
        ts=float(ts),
        kind=kind,
        payload=ev.parse_payload(int(seq), payload),
        undone=state in (ev.UNDONE, ev.DISCARDED),
        discarded=state == ev.DISCARDED,
    )


def _stamp(conn: sqlite3.Connection) -> None:
    rows.set_meta(conn, "created_with", __version__)
    rows.set_meta(conn, "created_at", time.time())
