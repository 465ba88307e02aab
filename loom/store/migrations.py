"""The work of the schema migrations that is more than DDL (schema.py lists them in order).

Each runs inside the caller's one write transaction (db._upgrade): a crash or an error anywhere
leaves the file as it was, at its old version.
"""

from __future__ import annotations

import sqlite3

from loom.store import codec, rows

_BATCH = 500


def tokens_to_vocabulary(conn: sqlite3.Connection) -> None:
    """Schema 1 -> 2: every tokens row re-stored as packed numbers plus exceptions to a new
    vocabulary table; same row ids and digests (the digest is over the full content)."""
    conn.execute("CREATE TABLE vocab (id INTEGER PRIMARY KEY, text NOT NULL)")
    conn.execute(
        "CREATE TABLE tokens_v2 (id INTEGER PRIMARY KEY, digest BLOB NOT NULL UNIQUE,"
        " n INTEGER NOT NULL, k INTEGER NOT NULL, data BLOB NOT NULL, texts TEXT,"
        " top_texts TEXT, sum_logprob REAL, n_logprob INTEGER NOT NULL)"
    )
    vocab = rows.Vocab()  # the transaction fails as a whole, so its cache cannot outlive it
    last = -1
    while True:
        batch = conn.execute(
            "SELECT id, digest, n, k, ids, logprobs, top_ids, top_logprobs, entropy, texts,"
            " top_texts, sum_logprob, n_logprob FROM tokens WHERE id > ? ORDER BY id LIMIT ?",
            (last, _BATCH),
        ).fetchall()
        if not batch:
            break
        out = []
        for row in batch:
            tokens = codec.decode(*row[2:11])
            texts, top_texts = rows.texts_row(conn, tokens, vocab)
            packed = codec.pack(tokens)
            out.append((*row[:4], packed, texts, top_texts, row[11], row[12]))
        conn.executemany(
            "INSERT INTO tokens_v2 (id, digest, n, k, data, texts, top_texts, sum_logprob,"
            " n_logprob) VALUES (?,?,?,?,?,?,?,?,?)",
            out,
        )
        last = int(batch[-1][0])
    conn.execute("DROP TABLE tokens")
    conn.execute("ALTER TABLE tokens_v2 RENAME TO tokens")
