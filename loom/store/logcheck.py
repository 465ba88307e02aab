"""The import's check of the log a document carries: applied from an empty loom, then all of it
undone, so a log that imports is one `loom replay` and `loom fork` can go through (its payloads
are checked by the code that will read them). Any failure names the event.

A long log is checked in a process of its own (`LogCheck`) while the importer reads the rest
of the document: at 100k nodes the check took 3 s that the importer, alone on a CPU by then,
spent waiting. That process holds a loom of its own (a temporary file) with the token rows'
counts (all an applier reads of them) and is sent each event as the importer stores it. Where
it cannot start, or dies, the importer checks the log itself, as it does a short one.
"""

from __future__ import annotations

import multiprocessing
import signal
import sqlite3
from collections.abc import Iterable
from multiprocessing import connection
from multiprocessing.process import BaseProcess
from typing import Any

from loom import spawned
from loom.store import db, schema
from loom.store import events as ev
from loom.store.apply import apply_event
from loom.store.errors import LoomError
from loom.store.events import Event

PARALLEL_FROM_NODES = 20_000  # smaller imports end before a process has started
_CHUNK = 500
_BATCH = 200  # events a message

StoredEvent = tuple[int, float, str, Any]  # (seq, ts, kind, payload as the events table holds it)
TokenCounts = tuple[int, int, float | None, int]  # (id, n, sum of known logprobs, how many known)


def check_log(conn: sqlite3.Connection, upto: int | None = None) -> None:
    """Check the log in `conn`'s events table (up to seq `upto`) by applying it on `conn`, which
    must be empty but for the events and the token rows; nothing of that stays."""
    conn.execute("SAVEPOINT check_log")
    try:
        last = 0
        while True:
            batch = conn.execute(
                "SELECT seq, ts, kind, payload FROM events WHERE seq > ? AND seq <= ?"
                " ORDER BY seq LIMIT ?",
                (last, upto if upto is not None else 2**63 - 1, _CHUNK),
            ).fetchall()
            if not batch:
                break
            last = int(batch[-1][0])
            for seq, ts, kind, payload in batch:
                replay_one(conn, seq, ts, kind, payload)
    finally:
        conn.execute("ROLLBACK TO check_log")
        conn.execute("RELEASE check_log")


def replay_one(conn: sqlite3.Connection, seq: int, ts: float, kind: str, payload: Any) -> None:
    try:
        data = ev.parse_payload(int(seq), payload)
        apply_event(conn, Event(seq=seq, ts=ts, kind=kind, payload=data))
    except sqlite3.OperationalError:
        raise  # the disk, not the document
    except Exception as exc:  # whatever a foreign payload makes the appliers trip on
        raise LoomError(
            f"the document's event {seq} ({kind}) cannot be replayed: {exc!r}"
        ) from None


class LogCheck:
    """The check of a log streamed to it (`tokens` before the `events` that name them), in a
    process of its own; `result` says what it found. Falls back to `check_log` on the importer's
    own connection wherever the process fails."""

    def __init__(self) -> None:
        self._process: BaseProcess | None = None
        self._pipe: connection.Connection | None = None
        self._batch: list[StoredEvent] = []
        self.last_seq = 0

    @property
    def running(self) -> bool:
        return self._pipe is not None

    def start(self) -> None:
        try:
            spawned.start_resource_tracker()
            context = multiprocessing.get_context("spawn")  # as the node workers (prepare.py)
            ours, theirs = context.Pipe(duplex=True)
            try:
                spawned.widen(ours)
                self._process = context.Process(target=_serve, args=(theirs,), daemon=True)
                self._process.start()
            finally:
                theirs.close()
            self._pipe = ours
        except Exception:  # no processes, no pipes: the importer checks the log itself
            self._stop()

    def tokens(self, counts: list[TokenCounts]) -> None:
        if counts:
            self._flush()
            self._send(("tokens", counts))

    def event(self, stored: StoredEvent) -> None:
        self.last_seq = stored[0]
        self._batch.append(stored)
        if len(self._batch) >= _BATCH:
            self._flush()

    def result(self, conn: sqlite3.Connection) -> None:
        """`LoomError` naming the first event that cannot be replayed; None when all can."""
        self._flush()
        self._send(("end", None))
        answered, found = False, None
        if self._pipe is not None and self._process is not None:
            try:
                ready = connection.wait([self._pipe, self._process.sentinel])
                if self._pipe in ready:
                    found, answered = self._pipe.recv(), True
            except (EOFError, OSError):  # it died as it answered
                pass
        self._stop()
        if not answered:  # it died before it answered (or on the last sends): checked here
            check_log(conn, self.last_seq)
        elif found is not None:
            raise LoomError(str(found))

    def close(self) -> None:
        self._stop()

    def _flush(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            self._send(("events", batch))

    def _send(self, message: tuple[str, Any]) -> None:
        if self._pipe is None:
            return
        try:
            self._pipe.send(message)
        except (OSError, ValueError):  # it died: the importer checks the log itself instead
            self._stop()

    def _stop(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
        self._pipe = None
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(5)
            self._process = None
        self._batch = []


def _serve(pipe: connection.Connection) -> None:
    """The checking process: a loom of its own, token counts and events in from `pipe`, the
    first failure's message (or None) out at the end. It reads to the end whatever it finds, so
    the importer's sends never wait on a process that stopped reading."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ctrl+c is the importer's to handle
    # A temporary file, not memory: the replayed loom grows with the log, and memory must not
    # (32 MB of it cached: most logs are checked without a spill).
    conn = db.scratch(cache_mb=32)
    for name in schema.FTS_TRIGGERS:  # as in the importer's loom: no search index meanwhile
        conn.execute(f"DROP TRIGGER {name}")
    failure: str | None = None
    while True:
        try:
            kind, body = pipe.recv()
        except EOFError:  # the importer is gone, or gave up on the import
            return
        if kind == "end":
            break
        if failure is not None:
            continue
        try:
            if kind == "tokens":
                _add_counts(conn, body)
            else:
                _replay(conn, body)
        except LoomError as exc:
            failure = str(exc)
        except Exception as exc:  # the disk, or memory: said as the importer would say it
            failure = f"the document's log cannot be checked: {exc!r}"
    pipe.send(failure)


def _add_counts(conn: sqlite3.Connection, counts: Iterable[TokenCounts]) -> None:
    # Only the counts: no applier reads a token row's data (rows._token_stats_of).
    conn.executemany(
        "INSERT INTO tokens (id, digest, n, k, data, sum_logprob, n_logprob)"
        " VALUES (?, CAST(? AS BLOB), ?, 0, x'', ?, ?)",
        ((i, str(i), n, s, k) for i, n, s, k in counts),
    )


def _replay(conn: sqlite3.Connection, batch: list[StoredEvent]) -> None:
    conn.executemany("INSERT INTO events (seq, ts, kind, payload) VALUES (?, ?, ?, ?)", batch)
    for seq, ts, kind, payload in batch:
        replay_one(conn, seq, ts, kind, payload)
