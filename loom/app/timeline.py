"""The replay timeline without a screen: `loom replay PATH.loom --headless`, and forking a loom
at a past point.

`timeline_lines` turns the event log into one readable line per event (sequence number, local
time, kind, the node it is about, a short quoted preview with control characters escaped, so
model text can never drive the terminal). `fork_at` rebuilds the loom as it was right after
event `seq` through the store's own replay and writes it to a new file; the original is only
read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from loom.store.errors import LoomError
from loom.store.events import Event
from loom.store.history import HistoryError, clock, read_history
from loom.store.loom import Loom
from loom.store.replay import state_at

KIND_WIDTH = 14  # "manual_persona", the longest kind


def timeline_lines(events: Iterable[Event | Mapping[str, Any]]) -> list[str]:
    """One line per event: `seq  time  kind  #node  summary` (undone edits marked)."""
    items = list(events)
    try:
        _, steps = read_history(items)
    except HistoryError as exc:
        raise LoomError(f"cannot replay this log: {exc}") from None
    width = len(str(steps[-1].seq)) if steps else 1
    undone = {e.seq for e in items if isinstance(e, Event) and e.undone}
    lines = []
    for step in steps:
        node = f"#{step.node}" if step.node is not None else "-"
        mark = " (undone)" if step.seq in undone else ""
        lines.append(
            f"{step.seq:>{width}}  {clock(step.ts)}  {step.kind:<{KIND_WIDTH}}  "
            f"{node:>6}  {step.summary}{mark}"
        )
    return lines


def fork_at(loom: Loom, seq: int, new_path: Path | str) -> Path:
    """Write the loom as it was right after event `seq` to `new_path` (a new file)."""
    events = loom.events()
    if not events:
        raise LoomError("this loom has no event log to fork from")
    first, last = events[0].seq, events[-1].seq
    if not first <= seq <= last:
        raise LoomError(f"no event {seq}: this loom's log runs from {first} to {last}")
    doc = state_at(events, seq, tokens=loom)
    path = Path(new_path)
    Loom.from_document(path, doc).close()
    return path
