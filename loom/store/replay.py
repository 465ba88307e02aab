"""Rebuild a loom from its event log, at once or step by step (the replay feature animates this).

Events are applied to an in-memory loom by the same `apply_event` the live loom uses, so a replay
cannot drift from what really happened. Token arrays in the events are either data
(`{"$tokdata": ...}`, as in an exported document) or references (`{"$tok": id}`, as `Loom.events()`
returns them), which need the loom they came from: pass it as `tokens`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from loom.store import codec, rows
from loom.store import events as ev
from loom.store.apply import commit_event
from loom.store.db import Database
from loom.store.errors import LoomError
from loom.store.events import Event
from loom.store.loom import Loom
from loom.store.model import LoomDocument
from loom.tokens import TokenArray


class TokenSource(Protocol):
    """Where `{"$tok": id}` references resolve: a `Loom` is one."""

    def stored_tokens(self, ref: int) -> TokenArray: ...


def _as_event(item: Event | Mapping[str, Any]) -> Event:
    if isinstance(item, Event):
        return item
    try:
        return Event.from_json(dict(item))
    except ValueError as exc:
        raise LoomError(f"cannot replay: {exc}") from None


class Replay:
    """A loom in memory, advanced one event at a time through a log."""

    def __init__(
        self, events: Iterable[Event | Mapping[str, Any]], *, tokens: TokenSource | None = None
    ) -> None:
        self._events = [_as_event(e) for e in events]
        self._source = tokens
        self._db = Database.memory(readonly=True)
        self._view = Loom(self._db)
        self._next = 0  # index of the next event to apply
        self._refs: dict[int, int | None] = {}  # source token id -> id in the memory loom

    @property
    def events(self) -> list[Event]:
        return list(self._events)

    @property
    def seq(self) -> int:
        """The seq of the last applied event (0 before the first)."""
        return self._events[self._next - 1].seq if self._next else 0

    @property
    def done(self) -> bool:
        return self._next >= len(self._events)

    @property
    def loom(self) -> Loom | None:
        """A read-only view of the state so far (None before the first snapshot event)."""
        with self._db.read() as conn:
            started = rows.get_meta(conn, "root") is not None
        return self._view if started else None

    def step(self) -> Event | None:
        """Apply the next event and return it (None at the end)."""
        if self.done:
            return None
        event = self._events[self._next]
        if self._next == 0 and event.kind not in ev.SNAPSHOTS:
            raise LoomError(f"cannot replay: the log starts with {event.kind!r}, not a snapshot")
        try:
            payload = ev.map_tokens(event.payload, self._tokens)
            with self._db.write(force=True) as conn:
                commit_event(conn, event.kind, payload, ts=event.ts, seq=event.seq)
        except LoomError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, sqlite3.Error) as exc:
            # A log from a damaged or foreign file: payloads are only checked by applying them.
            raise LoomError(
                f"cannot replay: event {event.seq} ({event.kind}) cannot be applied: {exc!r}"
            ) from None
        self._next += 1
        return event

    def advance_to(self, seq: int | None = None) -> None:
        """Apply every event up to and including `seq` (all of them for None)."""
        while not self.done and (seq is None or self._events[self._next].seq <= seq):
            self.step()

    def document(self, *, events: bool = True) -> LoomDocument:
        view = self.loom
        if view is None:
            raise LoomError("cannot replay: no event has made a loom yet")
        return view.to_document(events=events)

    def _tokens(self, value: dict[str, Any]) -> dict[str, int] | None:
        if ev.TOKEN_DATA in value:
            tokens = codec.tokens_from_json(value[ev.TOKEN_DATA])
        else:
            ref = int(value[ev.TOKEN_REF])
            if ref in self._refs:
                return ev.token_ref(self._refs[ref])
            if self._source is None:
                raise LoomError(
                    "cannot replay: the events refer to stored tokens; pass tokens=loom"
                )
            tokens = self._source.stored_tokens(ref)
        with self._db.write(force=True) as conn:
            local = rows.store_token_row(conn, tokens)
        if ev.TOKEN_REF in value:
            self._refs[int(value[ev.TOKEN_REF])] = local
        return ev.token_ref(local)


def rebuild(
    events: Iterable[Event | Mapping[str, Any]], *, tokens: TokenSource | None = None
) -> LoomDocument:
    """The loom the log describes, from an empty start."""
    replay = Replay(events, tokens=tokens)
    replay.advance_to(None)
    return replay.document()


def state_at(
    events: Iterable[Event | Mapping[str, Any]], seq: int, *, tokens: TokenSource | None = None
) -> LoomDocument:
    """The loom as it was right after event `seq`."""
    replay = Replay(events, tokens=tokens)
    replay.advance_to(seq)
    return replay.document()
