"""The SQLite schema of a .loom file, its version, and the migrations between versions.

The version lives in `PRAGMA user_version`; `PRAGMA application_id` marks the file as a loom so a
foreign SQLite database is told apart from the first 100 bytes, before any connection writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

APPLICATION_ID = 0x4C4F4F4D  # "LOOM"

# Each migration takes a connection inside a write transaction at version i+1 and leaves it at i+2.
# Append to this list (never edit an old entry) whenever the schema changes.
Migration = Callable[[sqlite3.Connection], None]


def _tokens_to_vocabulary(conn: sqlite3.Connection) -> None:
    """1 -> 2: token texts move from every tokens row into one vocabulary table, and the numeric
    columns into one packed blob (see codec.pack). Row ids and digests stay, so every reference
    in nodes and in the log still holds."""
    from loom.store import migrations  # the store's own code, imported only when a file needs it

    migrations.tokens_to_vocabulary(conn)


def _scores_table(conn: sqlite3.Connection) -> None:
    """2 -> 3: a table for the models' readings of text they did not write (`scores`)."""
    conn.execute(SCORES_DDL)


def _zstd_blobs(conn: sqlite3.Connection) -> None:
    """3 -> 4: new token blobs and large payloads are zstd frames (see compress.py). The old zlib
    ones stay as they are and still read; the version tells an older loom the file is newer than
    it reads, rather than damaged where it meets a zstd blob."""


MIGRATIONS: list[Migration] = [_tokens_to_vocabulary, _scores_table, _zstd_blobs]


# Migrations that change only what new writes produce: a file they have not run on yet reads as
# it is (so it can be opened read-only, and exported, without an upgrade).
READ_COMPATIBLE: frozenset[Migration] = frozenset({_zstd_blobs})


def readable_from() -> int:
    """The oldest version this code reads without upgrading it."""
    version = schema_version()
    while version > 1 and MIGRATIONS[version - 2] in READ_COMPATIBLE:
        version -= 1
    return version


def schema_version() -> int:
    """The version this code writes: 1 plus every migration since the first schema."""
    return 1 + len(MIGRATIONS)


# What every version has; a version-2 file also has `vocab` (checked after any migration).
REQUIRED_TABLES = frozenset({"meta", "nodes", "tokens", "tags", "personas", "events", "history"})

# How a model reads a node it did not write (human-written or imported text): its tokens as that
# model tokenizes them, with logprobs, entropy and top-k — "read by the model", never sampled. One
# row per node and model (the model's name and sha256 as generation records hold them), so a loom
# read by two models keeps both. Written by `score` events; a row whose tokens no longer spell the
# node's text (it was edited since) is ignored by the readers, not deleted.
SCORES_DDL = """CREATE TABLE scores (
    node_id INTEGER NOT NULL,
    model TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    tokens_id INTEGER NOT NULL,
    scored_at REAL NOT NULL,
    PRIMARY KEY (node_id, model, model_sha256)
) WITHOUT ROWID"""

# The newest schema, created directly (a new file does not replay the migrations).
DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;

-- The text of every token id the loom holds, once (append-only: a text is never changed). A text
-- that is not valid UTF-8 on its own (a lone surrogate: part of a split character) is a BLOB of
-- its surrogatepass bytes.
CREATE TABLE vocab (id INTEGER PRIMARY KEY, text NOT NULL);

-- Immutable, content-addressed token arrays. Nodes and events refer to them by id; a row is never
-- updated or deleted, so undo of a delete or an edit finds the old tokens intact. `data` holds the
-- numeric columns (codec.pack); the texts come from `vocab`, except where a row says otherwise:
-- `texts` {"index": text} for its own tokens, `top_texts` {"id": text or null} for alternatives
-- (JSON, NULL when there is no exception). The digest is over the full content, texts included.
CREATE TABLE tokens (
    id INTEGER PRIMARY KEY,
    digest BLOB NOT NULL UNIQUE,
    n INTEGER NOT NULL,
    k INTEGER NOT NULL,
    data BLOB NOT NULL,
    texts TEXT,
    top_texts TEXT,
    sum_logprob REAL,
    n_logprob INTEGER NOT NULL
);

CREATE TABLE nodes (
    id INTEGER PRIMARY KEY,
    parent INTEGER,
    position INTEGER NOT NULL,
    depth INTEGER NOT NULL,
    author TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at REAL NOT NULL,
    tokens_id INTEGER,
    tokens_partial INTEGER NOT NULL DEFAULT 0,
    n_tokens INTEGER NOT NULL DEFAULT 0,
    sum_logprob REAL,
    n_logprob INTEGER NOT NULL DEFAULT 0,
    generation TEXT,
    persona TEXT,
    manual_persona TEXT,
    bookmarked INTEGER NOT NULL DEFAULT 0,
    pruned INTEGER NOT NULL DEFAULT 0,
    meta TEXT
);
CREATE INDEX nodes_by_parent ON nodes (parent, position);
CREATE INDEX nodes_bookmarked ON nodes (id) WHERE bookmarked;

CREATE TABLE tags (
    node_id INTEGER NOT NULL,
    tag TEXT NOT NULL,
    ord INTEGER NOT NULL,
    PRIMARY KEY (node_id, tag)
) WITHOUT ROWID;
CREATE INDEX tags_by_tag ON tags (tag);

CREATE TABLE personas (
    ord INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    color TEXT NOT NULL,
    prior REAL NOT NULL
);

-- The append-only log: rows are only ever inserted.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL
);

-- Undo bookkeeping derived from the log (state 0 done, 1 undone, 2 discarded by a later edit);
-- grp is the seq of the first event of the undo step (a `Loom.batch()` makes steps of several).
CREATE TABLE history (seq INTEGER PRIMARY KEY, state INTEGER NOT NULL, grp INTEGER NOT NULL);
CREATE INDEX history_by_state ON history (state, seq);

CREATE VIRTUAL TABLE nodes_fts USING fts5 (text, content='nodes', content_rowid='id');
"""

# The triggers that keep `nodes_fts` in step with `nodes`. An import, which fills an empty loom,
# goes without them and rebuilds the index once at the end: a third of its time went to them.
FTS_TRIGGERS = {
    "nodes_fts_insert": """CREATE TRIGGER nodes_fts_insert AFTER INSERT ON nodes BEGIN
    INSERT INTO nodes_fts (rowid, text) VALUES (new.id, new.text);
END""",
    "nodes_fts_delete": """CREATE TRIGGER nodes_fts_delete AFTER DELETE ON nodes BEGIN
    INSERT INTO nodes_fts (nodes_fts, rowid, text) VALUES ('delete', old.id, old.text);
END""",
    "nodes_fts_update": """CREATE TRIGGER nodes_fts_update AFTER UPDATE OF text ON nodes BEGIN
    INSERT INTO nodes_fts (nodes_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO nodes_fts (rowid, text) VALUES (new.id, new.text);
END""",
}
DDL += "".join(trigger + ";\n" for trigger in FTS_TRIGGERS.values())
DDL += SCORES_DDL + ";\n"


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the newest schema in an empty database (inside the caller's transaction)."""
    for statement in _statements(DDL):
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {schema_version()}")


def migrate(conn: sqlite3.Connection, from_version: int) -> None:
    """Run every migration from `from_version` to the newest (inside the caller's transaction)."""
    for version in range(from_version, schema_version()):
        MIGRATIONS[version - 1](conn)
        conn.execute(f"PRAGMA user_version = {version + 1}")


def _statements(ddl: str) -> list[str]:
    """Split DDL into statements (trigger bodies hold semicolons: split on complete ones)."""
    out: list[str] = []
    current: list[str] = []
    for line in ddl.splitlines():
        if line.strip().startswith("--") or not line.strip():
            continue
        current.append(line)
        text = "\n".join(current)
        if sqlite3.complete_statement(text):
            out.append(text)
            current = []
    return out
