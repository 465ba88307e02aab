"""Full-text search over node text (FTS5), with snippets cut in Python.

The FTS5 index finds and ranks; the snippet is made here from the stored text, because FTS5's own
snippet() mangles text holding NUL characters and its markers could collide with the text.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field

from loom.store.errors import SearchQueryError
from loom.store.rows import SQL_INT_MAX, node_text

_WORD = re.compile(r"\w+")
_RADIUS = 40


@dataclass(frozen=True)
class SearchHit:
    node_id: int
    snippet: str  # one line, control characters replaced by spaces, "…" where cut
    highlights: list[tuple[int, int]] = field(default_factory=list)  # [start, end) in snippet


def fts_query(query: str) -> tuple[str, list[str]] | None:
    """The FTS5 expression for a user's words (all must occur; the last may be a prefix)."""
    terms = _WORD.findall(query)
    if not terms:
        return None
    quoted = ['"' + t.replace('"', '""') + '"' for t in terms]
    if not query[-1:].isspace():
        quoted[-1] += "*"  # search as you type
    return " ".join(quoted), terms


def search(
    conn: sqlite3.Connection, query: str, limit: int, include_pruned: bool
) -> list[SearchHit]:
    built = fts_query(query)
    if built is None or limit <= 0:
        return []
    limit = min(limit, SQL_INT_MAX)  # any larger limit means "all of them" too
    expression, terms = built
    pruned = "" if include_pruned else " AND NOT n.pruned"
    try:
        found = conn.execute(
            "SELECT n.id, n.text FROM nodes_fts JOIN nodes n ON n.id = nodes_fts.rowid "
            f"WHERE nodes_fts MATCH ?{pruned} ORDER BY nodes_fts.rank, n.id LIMIT ?",
            (expression, limit),
        ).fetchall()
    except sqlite3.OperationalError as exc:
        raise SearchQueryError(f"cannot search for {query!r} ({exc})") from None
    return [_hit(int(i), node_text(int(i), text), terms) for i, text in found]


def _hit(node_id: int, text: str, terms: list[str]) -> SearchHit:
    pattern = re.compile("|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True)), re.I)
    first = pattern.search(text)
    centre = first.start() if first else 0
    start = max(0, centre - _RADIUS)
    end = min(len(text), centre + _RADIUS * 2)
    prefix = "…" if start > 0 else ""
    suffix = "…" if end < len(text) else ""
    # One character out for one in, so match offsets stay valid in the snippet.
    body = "".join(" " if (ord(c) < 32 or 0x7F <= ord(c) < 0xA0) else c for c in text[start:end])
    spans = [(m.start() + len(prefix), m.end() + len(prefix)) for m in pattern.finditer(body)]
    return SearchHit(node_id, prefix + body + suffix, [s for s in spans if s[0] < s[1]])
