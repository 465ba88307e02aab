"""Row-level reads and writes of nodes, tags, tokens and meta, shared by `apply` and the queries.

A *record* is a node as events carry it: a JSON object with every field needed to put the node
back exactly (id, parent, position, author, text, created_at, tokens ref, tokens_partial,
generation, persona, manual_persona, bookmarked, pruned, tags, meta). Depth and token statistics
are derived on insert, never carried.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np

from loom.store import codec
from loom.store.errors import UnknownNodeError, damaged
from loom.store.events import ref_of, token_ref
from loom.tokens import TokenArray

Record = dict[str, Any]

_CHUNK = 500  # ids per IN (...) list, well under SQLite's variable limit
SQL_INT_MAX = 2**63 - 1  # SQLite's INTEGER: a Python int beyond it cannot even be looked up


def chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def marks(n: int) -> str:
    return ",".join("?" * n)


def _json_or_none(value: Any) -> str | None:
    # Only appliers store these, and every payload an applier sees went into the log as strict
    # JSON first (`apply.commit_event`) or was read back from it: it holds no NaN or infinity.
    return None if value is None else codec.json_text(value, finite=True)


def _loads_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# --- meta -----------------------------------------------------------------------------------------


def get_meta(conn: sqlite3.Connection, key: str, default: Any = None) -> Any:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return default if row is None else json.loads(row[0])


def set_meta(conn: sqlite3.Connection, key: str, value: Any) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, json.dumps(value, ensure_ascii=True)),
    )


def allocate_ids(conn: sqlite3.Connection, count: int) -> list[int]:
    """Fresh node ids. Never reused, so an undone delete can always take its ids back."""
    first = int(get_meta(conn, "next_id", 1))
    set_meta(conn, "next_id", first + count)
    return list(range(first, first + count))


def reserve_ids(conn: sqlite3.Connection, ids: Iterable[int]) -> None:
    top = max(ids, default=0)
    if top >= int(get_meta(conn, "next_id", 1)):
        set_meta(conn, "next_id", top + 1)


# --- tokens ---------------------------------------------------------------------------------------


def _store_text(text: str) -> str | bytes:
    """A vocabulary text as SQLite can hold it (see the `vocab` table)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")
    return text


def _read_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogatepass")
    if not isinstance(value, str):
        raise damaged("a vocabulary text is not text")
    return value


class Vocab:
    """The loom's vocabulary (token id -> text) as read so far, for one long piece of work.

    Live edits look texts up in SQL each time. An export or an import, which touches every row,
    keeps what it read here: the table is append-only, so what was read stays true. It must not
    outlive the transaction it was filled in when that transaction also writes (a rollback would
    take back entries it holds): imports use it only on a file that is deleted on failure.
    """

    def __init__(self) -> None:
        self.table = codec.VocabTable({})

    def add(self, entries: dict[int, str]) -> None:
        self.table.add(entries)

    def first_unknown(self, *columns: np.ndarray[Any, Any]) -> int | None:
        """The first id in `columns` the table lacks (None: it has them all)."""
        return self.table.first_unknown(*columns)

    def load_all(self, conn: sqlite3.Connection) -> None:
        """Read the whole table (bounded by the model's vocabulary, not by the tree)."""
        self.add({int(i): _read_text(t) for i, t in conn.execute("SELECT id, text FROM vocab")})

    def items(self) -> Iterator[tuple[int, str]]:
        yield from sorted(self.table.texts.items())

    def fill(self, conn: sqlite3.Connection, ids: list[int]) -> set[int]:
        """Read from SQL the texts of `ids` this cache lacks; returns the ids SQL lacks too."""
        missing = self.table.missing(ids)
        if missing:
            found = vocab_texts(conn, missing)
            self.add(found)
            missing -= set(found)
        return missing


def vocab_texts(conn: sqlite3.Connection, ids: Iterable[int]) -> dict[int, str]:
    """The vocabulary texts of `ids` (those it has), from SQL."""
    out: dict[int, str] = {}
    for part in chunks(list(ids)):
        for token_id, text in conn.execute(
            f"SELECT id, text FROM vocab WHERE id IN ({marks(len(part))})", tuple(part)
        ):
            out[int(token_id)] = _read_text(text)
    return out


def vocabulary(conn: sqlite3.Connection) -> Iterator[tuple[int, str]]:
    """Every (id, text) of the loom's vocabulary, by id."""
    for token_id, text in conn.execute("SELECT id, text FROM vocab ORDER BY id"):
        yield int(token_id), _read_text(text)


def add_vocabulary(conn: sqlite3.Connection, entries: dict[int, str], vocab: Vocab) -> None:
    """Put `entries` the vocabulary lacks into it (a text already there is never changed)."""
    missing = vocab.fill(conn, list(entries))
    new = {i: entries[i] for i in missing}
    if new:
        conn.executemany(
            "INSERT INTO vocab (id, text) VALUES (?, ?)",
            [(i, _store_text(t)) for i, t in new.items()],
        )
        vocab.add(new)


def texts_row(
    conn: sqlite3.Connection, tokens: TokenArray, vocab: Vocab | None = None
) -> tuple[str | None, str | None]:
    """The exceptions of `tokens` to the vocabulary (the `texts` and `top_texts` columns), adding
    to the vocabulary every id it lacks (its first text here becomes the vocabulary's)."""
    return exceptions_json(columns_in_vocabulary(conn, tokens, vocab))


def columns_in_vocabulary(
    conn: sqlite3.Connection, tokens: TokenArray, vocab: Vocab | None
) -> codec.TokenColumns:
    """`tokens` as columns and exceptions to the loom's vocabulary, after adding to it every id
    it lacks (its first text here becomes the vocabulary's)."""
    vocab = vocab if vocab is not None else Vocab()
    missing = vocab.fill(conn, [*tokens.ids.tolist(), *map(int, tokens.top_texts)])
    if missing:
        proposed: dict[int, str] = {}
        for token_id, text in zip(tokens.ids.tolist(), tokens.texts, strict=True):
            if token_id in missing:
                proposed.setdefault(token_id, text)
        for token_id, text in tokens.top_texts.items():
            if int(token_id) in missing:
                proposed.setdefault(int(token_id), text)
        add_vocabulary(conn, proposed, vocab)
    return codec.TokenColumns.of(tokens, vocab.table)


def exceptions_json(columns: codec.TokenColumns) -> tuple[str | None, str | None]:
    """The `texts` and `top_texts` columns of a token row: its texts' exceptions, as JSON."""
    own, top = columns.own, columns.top
    return (
        codec.json_text({str(i): t for i, t in own.items()}) if own else None,
        codec.json_text({str(i): t for i, t in top.items()}) if top else None,
    )


@dataclass(frozen=True)
class TokenRowData:
    """A row of the `tokens` table, ready to insert (computed without the database)."""

    digest: bytes
    n: int
    k: int
    data: bytes
    texts: str | None
    top_texts: str | None
    sum_logprob: float | None
    n_logprob: int


def token_row_data(columns: codec.TokenColumns) -> TokenRowData:
    """The row that keeps `columns` (exceptions to the loom's vocabulary, as they are).

    Its digest, which deduplicates rows, is of exactly what the row keeps before compression: the
    numbers, then the exceptions (within one loom the vocabulary never changes a text, so equal
    tokens have equal exceptions). Rows of older files hold other digests: a row stored again
    beside one of them is a second copy, nothing worse.
    """
    body = codec.packed_body(
        columns.ids, columns.logprobs, columns.top_ids, columns.top_logprobs, columns.entropy
    )
    texts, top_texts = exceptions_json(columns)
    h = hashlib.blake2b(
        f"{len(columns)},{columns.k},".encode(), digest_size=16, person=b"loom-tokens-4"
    )
    h.update(body)
    for part in (texts, top_texts):
        h.update(b"\x00" if part is None else b"\x01" + len(part).to_bytes(8, "little"))
        h.update(b"" if part is None else part.encode("ascii"))
    sum_logprob, n_logprob = codec.summary(columns.logprobs)
    return TokenRowData(
        h.digest(), len(columns), columns.k, codec.compressed(body), texts, top_texts, sum_logprob,
        n_logprob,
    )  # fmt: skip


def insert_token_row(conn: sqlite3.Connection, row: TokenRowData) -> int:
    """The id of the row equal to `row`, inserting it if there is none."""
    inserted = conn.execute(
        "INSERT INTO tokens (digest, n, k, data, texts, top_texts, sum_logprob, n_logprob)"
        " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (digest) DO NOTHING RETURNING id",
        (row.digest, row.n, row.k, row.data, row.texts, row.top_texts, row.sum_logprob,
         row.n_logprob),
    ).fetchone()  # fmt: skip
    if inserted is not None:
        return int(inserted[0])
    found = conn.execute("SELECT id FROM tokens WHERE digest = ?", (row.digest,)).fetchone()
    return int(found[0])


def store_token_row(
    conn: sqlite3.Connection, tokens: TokenArray, vocab: Vocab | None = None
) -> int | None:
    """The id of `tokens` in the tokens table, inserting it if new (None for no tokens)."""
    if len(tokens) == 0:
        return None
    return insert_token_row(conn, token_row_data(columns_in_vocabulary(conn, tokens, vocab)))


def store_tokens(
    conn: sqlite3.Connection, tokens: TokenArray | None, vocab: Vocab | None = None
) -> int | None:
    return None if tokens is None or len(tokens) == 0 else store_token_row(conn, tokens, vocab)


TOKEN_ROW_INSERT = (
    "INSERT INTO tokens (id, digest, n, k, data, texts, top_texts, sum_logprob, n_logprob)"
    " VALUES (?,?,?,?,?,?,?,?,?)"
)
_TOKEN_COLUMNS = "n, k, data, texts, top_texts"


def stored_columns(ref: int, row: Sequence[Any]) -> codec.TokenColumns:
    """Stored tokens (`_TOKEN_COLUMNS`) as columns and their texts' exceptions to the loom's
    vocabulary, as the row keeps them; `damaged` if they do not hold."""
    n, k, data, texts_json, top_json = row
    try:
        ids, logprobs, top_ids, top_lps, entropy = codec.unpack(int(n), int(k), bytes(data))
        own = {} if texts_json is None else codec.read_json(texts_json)
        top_extra = {} if top_json is None else codec.read_json(top_json)
        own = {int(i): str(t) for i, t in own.items()}
        top = {int(i): (None if t is None else str(t)) for i, t in top_extra.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise damaged(f"token data {ref} is damaged ({exc})") from None
    return codec.TokenColumns(ids, logprobs, top_ids, top_lps, entropy, own, top)


def checked_columns(ref: int, row: Sequence[Any], vocab: Vocab) -> codec.TokenColumns:
    """`stored_columns`, every id checked against `vocab` (the whole vocabulary, loaded)."""
    columns = stored_columns(ref, row)
    unknown = vocab.first_unknown(columns.ids, columns.top_ids)
    if unknown is not None:
        raise damaged(f"token data {ref}: token id {unknown} is not in the vocabulary")
    return columns


def decode_stored(
    conn: sqlite3.Connection,
    ref: int,
    row: Sequence[Any],
    vocab: Vocab | None = None,
) -> TokenArray:
    """A TokenArray from its stored columns (`_TOKEN_COLUMNS`); `damaged` if they do not hold."""
    c = stored_columns(ref, row)
    vocab = vocab if vocab is not None else Vocab()
    vocab.fill(conn, [*c.ids.tolist(), *c.top_ids.ravel().tolist()])
    try:
        texts, top_texts = codec.apply_texts(c.ids, c.top_ids, vocab.table, c.own, c.top)
    except KeyError as exc:
        raise damaged(
            f"token data {ref}: token id {exc.args[0]} is not in the vocabulary"
        ) from None
    return codec.assemble(
        (c.ids, c.logprobs, c.top_ids, c.top_logprobs, c.entropy), texts, top_texts
    )


def token_row(conn: sqlite3.Connection, ref: int) -> codec.TokenRow:
    """The canonical row (old column form) of stored tokens: what loom-json 1 events carry."""
    return codec.encode(load_tokens(conn, ref))


def load_tokens(
    conn: sqlite3.Connection, ref: int | None, vocab: Vocab | None = None
) -> TokenArray:
    if ref is None:
        return TokenArray.empty()
    row = conn.execute(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE id = ?", (ref,)).fetchone()
    if row is None:
        raise LookupError(f"token data {ref} is missing")
    return decode_stored(conn, ref, row, vocab)


def _token_stats(conn: sqlite3.Connection, ref: int | None) -> tuple[int, float | None, int]:
    return _token_stats_of(conn, [ref])[ref]


def _token_stats_of(
    conn: sqlite3.Connection, refs: Iterable[int | None]
) -> dict[int | None, tuple[int, float | None, int]]:
    """(n tokens, sum of known logprobs, how many known) of each token row in `refs`."""
    stats: dict[int | None, tuple[int, float | None, int]] = {None: (0, None, 0)}
    wanted = sorted({r for r in refs if r is not None})
    for part in chunks(wanted):
        for ref, n, sum_lp, n_lp in conn.execute(
            f"SELECT id, n, sum_logprob, n_logprob FROM tokens WHERE id IN ({marks(len(part))})",
            tuple(part),
        ):
            stats[int(ref)] = (int(n), sum_lp, int(n_lp))
    missing = next((r for r in wanted if r not in stats), None)
    if missing is not None:
        raise LookupError(f"token data {missing} is missing")
    return stats


# --- nodes ----------------------------------------------------------------------------------------


def is_node_id(value: object) -> TypeGuard[int]:
    """Whether `value` could name a node: an int SQLite can hold (never a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= SQL_INT_MAX


def require(conn: sqlite3.Connection, node_id: int) -> None:
    if not is_node_id(node_id):
        raise UnknownNodeError(node_id)
    if conn.execute("SELECT 1 FROM nodes WHERE id = ?", (node_id,)).fetchone() is None:
        raise UnknownNodeError(node_id)


def parent_of(conn: sqlite3.Connection, node_id: int) -> int | None:
    row = conn.execute("SELECT parent FROM nodes WHERE id = ?", (node_id,)).fetchone()
    if row is None:
        raise UnknownNodeError(node_id)
    return None if row[0] is None else int(row[0])


def child_ids(conn: sqlite3.Connection, node_id: int) -> list[int]:
    return [
        int(r[0])
        for r in conn.execute(
            "SELECT id FROM nodes WHERE parent = ? ORDER BY position, id", (node_id,)
        )
    ]


def next_position(conn: sqlite3.Connection, parent: int) -> int:
    row = conn.execute("SELECT MAX(position) FROM nodes WHERE parent = ?", (parent,)).fetchone()
    return 0 if row[0] is None else int(row[0]) + 1


# The recursive walks below use UNION, not UNION ALL: it never queues a row twice, so a parent
# cycle in a damaged file ends the walk instead of running (and filling the disk) forever.


def subtree_ids(conn: sqlite3.Connection, node_id: int) -> list[int]:
    """`node_id` and all its descendants, parents before children."""
    ids = [
        int(r[0])
        for r in conn.execute(
            "WITH RECURSIVE sub(id) AS (SELECT ? UNION "
            "SELECT n.id FROM nodes n JOIN sub ON n.parent = sub.id) SELECT id FROM sub",
            (node_id,),
        )
    ]
    # A cycle below a node must pass through it: then its own parent is among its descendants.
    if len(ids) > 1 and parent_of(conn, node_id) in set(ids):
        raise damaged(f"the parents of node {node_id} form a cycle through it")
    return ids


def path_ids(conn: sqlite3.Connection, node_id: int) -> list[int]:
    """From the root down to `node_id` (included); `damaged` if its parents never reach a root."""
    parents: dict[int, int | None] = {
        int(r[0]): None if r[1] is None else int(r[1])
        for r in conn.execute(
            "WITH RECURSIVE up(id, parent) AS (SELECT id, parent FROM nodes WHERE id = ? "
            "UNION SELECT n.id, n.parent FROM nodes n JOIN up ON n.id = up.parent) "
            "SELECT id, parent FROM up",
            (node_id,),
        )
    }
    if node_id not in parents:
        raise UnknownNodeError(node_id)
    path: list[int] = []
    seen: set[int] = set()
    step: int | None = node_id
    while step is not None:
        if step in seen:
            raise damaged(f"the parents of node {node_id} form a cycle through node {step}")
        if step not in parents:
            raise damaged(f"node {path[-1]} has a parent {step} that does not exist")
        seen.add(step)
        path.append(step)
        step = parents[step]
    path.reverse()
    return path


def ancestor_ids(conn: sqlite3.Connection, node_id: int) -> list[int]:
    """From the root down to `node_id`'s parent."""
    return path_ids(conn, node_id)[:-1]


def shift_depth(conn: sqlite3.Connection, node_id: int, delta: int) -> None:
    """Add `delta` to the cached depth of `node_id` and every descendant."""
    if delta:
        conn.execute(
            "WITH RECURSIVE sub(id) AS (SELECT ? UNION "
            "SELECT n.id FROM nodes n JOIN sub ON n.parent = sub.id) "
            "UPDATE nodes SET depth = depth + ? WHERE id IN sub",
            (node_id, delta),
        )


def node_text(node_id: int, value: Any) -> str:
    """A node's stored text; a damaged file may hold a BLOB there (SQLite's TEXT is a hint)."""
    if not isinstance(value, str):
        stored = "a BLOB" if isinstance(value, bytes) else type(value).__name__
        raise damaged(f"the text of node {node_id} is stored as {stored}, not text")
    return value


def texts_of(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for part in chunks(ids):
        for node_id, text in conn.execute(
            f"SELECT id, text FROM nodes WHERE id IN ({marks(len(part))})", tuple(part)
        ):
            out[int(node_id)] = node_text(int(node_id), text)
    return out


def depth_of(conn: sqlite3.Connection, node_id: int) -> int:
    row = conn.execute("SELECT depth FROM nodes WHERE id = ?", (node_id,)).fetchone()
    if row is None:
        raise UnknownNodeError(node_id)
    return int(row[0])


_RECORD_COLUMNS = (
    "id, parent, position, author, text, created_at, tokens_id, tokens_partial, generation, "
    "persona, manual_persona, bookmarked, pruned, meta"
)


def _record(row: Sequence[Any], tags: list[str]) -> Record:
    return {
        "id": int(row[0]),
        "parent": None if row[1] is None else int(row[1]),
        "position": int(row[2]),
        "author": row[3],
        "text": node_text(int(row[0]), row[4]),
        "created_at": float(row[5]),
        "tokens": token_ref(row[6]),
        "tokens_partial": bool(row[7]),
        "generation": _loads_or_none(row[8]),
        "persona": _loads_or_none(row[9]),
        "manual_persona": row[10],
        "bookmarked": bool(row[11]),
        "pruned": bool(row[12]),
        "tags": tags,
        "meta": _loads_or_none(row[13]),
    }


def tags_of(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for part in chunks(ids):
        for node_id, tag in conn.execute(
            f"SELECT node_id, tag FROM tags WHERE node_id IN ({marks(len(part))}) "
            "ORDER BY node_id, ord",
            tuple(part),
        ):
            out.setdefault(int(node_id), []).append(tag)
    return out


def read_records(conn: sqlite3.Connection, ids: Sequence[int]) -> list[Record]:
    """Full records of `ids`, in the given order; UnknownNodeError if one is missing."""
    found: dict[int, Sequence[Any]] = {}
    for part in chunks(ids):
        for row in conn.execute(
            f"SELECT {_RECORD_COLUMNS} FROM nodes WHERE id IN ({marks(len(part))})", tuple(part)
        ):
            found[int(row[0])] = row
    tags = tags_of(conn, ids)
    scores = scores_of(conn, ids)
    out = []
    for node_id in ids:
        if node_id not in found:
            raise UnknownNodeError(node_id)
        rec = _record(found[node_id], tags.get(node_id, []))
        if node_id in scores:
            rec["scores"] = scores[node_id]
        out.append(rec)
    return out


# --- the models' readings of nodes (the `scores` table) ------------------------------------------


def has_scores_table(conn: sqlite3.Connection) -> bool:
    """False for a file of an older schema read without migrating it (read-only)."""
    return (
        conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'scores'"
        ).fetchone()
        is not None
    )


def scores_of(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """The readings of `ids` as records carry them: {"model", "model_sha256", "tokens": ref,
    "scored_at"}, oldest first (whether they still spell the node's text is the reader's check)."""
    out: dict[int, list[dict[str, Any]]] = {}
    if not ids or not has_scores_table(conn):
        return out
    for part in chunks(ids):
        for node_id, model, sha, ref, scored_at in conn.execute(
            "SELECT node_id, model, model_sha256, tokens_id, scored_at FROM scores"
            f" WHERE node_id IN ({marks(len(part))}) ORDER BY node_id, scored_at",
            tuple(part),
        ):
            out.setdefault(int(node_id), []).append(
                {
                    "model": model,
                    "model_sha256": sha,
                    "tokens": token_ref(int(ref)),
                    "scored_at": float(scored_at),
                }
            )
    return out


def put_scores(conn: sqlite3.Connection, node_id: int, scores: Sequence[dict[str, Any]]) -> None:
    """Keep readings of a node (a newer reading by the same model replaces the older)."""
    conn.executemany(
        "INSERT OR REPLACE INTO scores (node_id, model, model_sha256, tokens_id, scored_at)"
        " VALUES (?, ?, ?, ?, ?)",
        [
            (
                node_id,
                str(s["model"]),
                str(s.get("model_sha256") or ""),
                ref_of(s["tokens"]),
                float(s["scored_at"]),
            )
            for s in scores
        ],
    )


def read_record(conn: sqlite3.Connection, node_id: int) -> Record:
    return read_records(conn, [node_id])[0]


def insert_records(conn: sqlite3.Connection, records: Sequence[Record]) -> None:
    """Insert nodes given parents-before-children; a parent is either earlier here or present."""
    depths: dict[int, int] = {}
    stats = _token_stats_of(conn, (ref_of(rec.get("tokens")) for rec in records))
    rows = []
    tag_rows: list[tuple[int, str, int]] = []
    for rec in records:
        node_id, parent = int(rec["id"]), rec["parent"]
        if parent is None:
            depth = 0
        elif parent in depths:
            depth = depths[parent] + 1
        else:
            depth = depth_of(conn, int(parent)) + 1
        depths[node_id] = depth
        ref = ref_of(rec.get("tokens"))
        n_tokens, sum_lp, n_lp = stats[ref]
        rows.append(
            (
                node_id,
                parent,
                int(rec["position"]),
                depth,
                rec["author"],
                rec["text"],
                float(rec["created_at"]),
                ref,
                int(bool(rec.get("tokens_partial"))),
                n_tokens,
                sum_lp,
                n_lp,
                _json_or_none(rec.get("generation")),
                _json_or_none(rec.get("persona")),
                rec.get("manual_persona"),
                int(bool(rec.get("bookmarked"))),
                int(bool(rec.get("pruned"))),
                _json_or_none(rec.get("meta") or None),
            )
        )
        tag_rows.extend((node_id, tag, i) for i, tag in enumerate(rec.get("tags") or []))
        if rec.get("scores"):
            put_scores(conn, node_id, rec["scores"])
    conn.executemany(
        "INSERT INTO nodes (id, parent, position, depth, author, text, created_at, tokens_id,"
        " tokens_partial, n_tokens, sum_logprob, n_logprob, generation, persona, manual_persona,"
        " bookmarked, pruned, meta) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    conn.executemany("INSERT INTO tags (node_id, tag, ord) VALUES (?, ?, ?)", tag_rows)


def delete_nodes(conn: sqlite3.Connection, ids: Sequence[int]) -> None:
    for part in chunks(ids):
        params = tuple(part)
        conn.execute(f"DELETE FROM tags WHERE node_id IN ({marks(len(part))})", params)
        conn.execute(f"DELETE FROM scores WHERE node_id IN ({marks(len(part))})", params)
        conn.execute(f"DELETE FROM nodes WHERE id IN ({marks(len(part))})", params)


# Fields an event may set on an existing node, and how each is stored.
_JSON_FIELDS = {"generation", "persona", "meta"}
_BOOL_FIELDS = {"tokens_partial", "bookmarked", "pruned"}
_PLAIN_FIELDS = {"text", "author", "manual_persona", "parent", "position"}


def update_fields(conn: sqlite3.Connection, node_id: int, fields: dict[str, Any]) -> None:
    """Set fields of a node (see `_*_FIELDS`, plus "tokens" and "tags")."""
    sets: list[str] = []
    params: list[Any] = []
    for name, value in fields.items():
        if name == "tokens":
            ref = ref_of(value)
            n_tokens, sum_lp, n_lp = _token_stats(conn, ref)
            sets += ["tokens_id = ?", "n_tokens = ?", "sum_logprob = ?", "n_logprob = ?"]
            params += [ref, n_tokens, sum_lp, n_lp]
        elif name == "tags":
            conn.execute("DELETE FROM tags WHERE node_id = ?", (node_id,))
            conn.executemany(
                "INSERT INTO tags (node_id, tag, ord) VALUES (?, ?, ?)",
                [(node_id, tag, i) for i, tag in enumerate(value)],
            )
        elif name in _JSON_FIELDS:
            sets.append(f"{name} = ?")
            params.append(_json_or_none(value))
        elif name in _BOOL_FIELDS:
            sets.append(f"{name} = ?")
            params.append(int(bool(value)))
        elif name in _PLAIN_FIELDS:
            sets.append(f"{name} = ?")
            params.append(value)
        else:
            raise ValueError(f"unknown node field {name!r}")
    if sets:
        cur = conn.execute(f"UPDATE nodes SET {', '.join(sets)} WHERE id = ?", (*params, node_id))
        if cur.rowcount != 1:
            raise UnknownNodeError(node_id)
