"""Reading nodes: cheap headers for tree display (no token blobs) and full nodes with tokens."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loom.store import codec, rows
from loom.store.errors import UnknownNodeError
from loom.store.events import ref_of
from loom.store.model import Author, GenerationSettings, Node, NodeScore, PersonaLabel
from loom.store.rows import Record
from loom.tokens import TokenArray


@dataclass
class NodeHeader:
    """What a tree row needs. Reading one never loads token arrays."""

    id: int
    parent: int | None
    author: Author
    text: str
    created_at: float
    depth: int
    position: int
    n_children: int
    bookmarked: bool
    pruned: bool
    tags: list[str] = field(default_factory=list)
    n_tokens: int = 0
    sum_logprob: float | None = None  # over the tokens whose logprob is known
    n_logprob: int = 0  # how many tokens have a known logprob
    persona: PersonaLabel | None = None
    manual_persona: str | None = None
    tokens_partial: bool = False  # the tokens read only a prefix of the text (edited, no tokenizer)
    model: str | None = None  # the model that wrote the node (its generation record's), if any

    @property
    def mean_logprob(self) -> float | None:
        return codec.mean_logprob(self.sum_logprob, self.n_logprob)

    @property
    def label(self) -> str | None:
        """The persona to show: the hand label wins over the model's."""
        if self.manual_persona is not None:
            return self.manual_persona
        return None if self.persona is None else self.persona.label


_HEADER_SELECT = (
    "SELECT n.id, n.parent, n.author, n.text, n.created_at, n.depth, n.position, "
    "(SELECT COUNT(*) FROM nodes c WHERE c.parent = n.id), n.bookmarked, n.pruned, "
    "(SELECT json_group_array(tag) FROM (SELECT tag FROM tags t WHERE t.node_id = n.id "
    "ORDER BY ord)), n.n_tokens, n.sum_logprob, n.n_logprob, n.persona, n.manual_persona, "
    "n.tokens_partial, json_extract(n.generation, '$.model') FROM nodes n"
)


def _header(row: Sequence[Any]) -> NodeHeader:
    return NodeHeader(
        id=int(row[0]),
        parent=None if row[1] is None else int(row[1]),
        author=row[2],
        text=rows.node_text(int(row[0]), row[3]),
        created_at=float(row[4]),
        depth=int(row[5]),
        position=int(row[6]),
        n_children=int(row[7]),
        bookmarked=bool(row[8]),
        pruned=bool(row[9]),
        tags=list(json.loads(row[10])),
        n_tokens=int(row[11]),
        sum_logprob=row[12],
        n_logprob=int(row[13]),
        persona=None if row[14] is None else PersonaLabel.from_json(json.loads(row[14])),
        manual_persona=row[15],
        tokens_partial=bool(row[16]),
        model=None if row[17] is None else str(row[17]),
    )


def header(conn: sqlite3.Connection, node_id: int) -> NodeHeader:
    row = conn.execute(f"{_HEADER_SELECT} WHERE n.id = ?", (node_id,)).fetchone()
    if row is None:
        raise UnknownNodeError(node_id)
    return _header(row)


def headers(conn: sqlite3.Connection, ids: Sequence[int]) -> list[NodeHeader]:
    """Headers of `ids` in the given order."""
    found: dict[int, NodeHeader] = {}
    for part in rows.chunks(ids):
        for row in conn.execute(
            f"{_HEADER_SELECT} WHERE n.id IN ({rows.marks(len(part))})", tuple(part)
        ):
            found[int(row[0])] = _header(row)
    missing = [i for i in ids if i not in found]
    if missing:
        raise UnknownNodeError(missing[0])
    return [found[i] for i in ids]


def children(conn: sqlite3.Connection, node_id: int, include_pruned: bool) -> list[NodeHeader]:
    where = "WHERE n.parent = ?" + ("" if include_pruned else " AND NOT n.pruned")
    return [
        _header(r)
        for r in conn.execute(f"{_HEADER_SELECT} {where} ORDER BY n.position, n.id", (node_id,))
    ]


# Set in `Node.meta` when the tokens read only a prefix of the text (see textops); import reads it.
PARTIAL_KEY = "tokens_partial"


def record_to_node(rec: Record, tokens: TokenArray, scores: list[NodeScore] | None = None) -> Node:
    meta = dict(rec["meta"] or {})
    if rec["tokens_partial"]:
        meta[PARTIAL_KEY] = True
    return Node(
        id=rec["id"],
        parent=rec["parent"],
        author=rec["author"],
        text=rec["text"],
        created_at=rec["created_at"],
        tokens=tokens,
        generation=(
            None if rec["generation"] is None else GenerationSettings.from_json(rec["generation"])
        ),
        persona=None if rec["persona"] is None else PersonaLabel.from_json(rec["persona"]),
        manual_persona=rec["manual_persona"],
        bookmarked=rec["bookmarked"],
        pruned=rec["pruned"],
        tags=list(rec["tags"]),
        meta=meta,
        scores=list(scores or []),
    )


def node_scores(conn: sqlite3.Connection, rec: Record) -> list[NodeScore]:
    """The readings a record carries that still spell the node's text (an edit since makes a
    reading stale: it is kept in the file, as the log is, but no longer shown)."""
    out = []
    for s in rec.get("scores") or []:
        tokens = rows.load_tokens(conn, ref_of(s["tokens"]))
        if tokens.text == rec["text"]:
            out.append(NodeScore(s["model"], s["model_sha256"], tokens, s["scored_at"]))
    return out


def nodes(conn: sqlite3.Connection, ids: Sequence[int]) -> list[Node]:
    """Full nodes (with tokens) in the given order."""
    return [
        record_to_node(rec, rows.load_tokens(conn, ref_of(rec["tokens"])), node_scores(conn, rec))
        for rec in rows.read_records(conn, ids)
    ]
