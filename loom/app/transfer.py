"""Import and export of looms of any size, with progress: what the CLI and the app both call.

Both stream (memory bounded by a node, whatever the size of the loom) and report progress through
one callback, `progress(done, total)`, called at most ~200 times and only from the calling thread:
run them in a worker and post what the callback gets to the UI.

    export_loom(loom, "loom-json", "out.json", node=None, path=False, version=None, progress=cb)
    import_file("in.json", "new.loom", fmt=None, progress=cb) -> Imported
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from loom.formats import feed, read_document, read_stream, write_stream
from loom.formats.loomjson import NeedsWholeDocument
from loom.store.loom import Loom
from loom.store.stream import MemoryStream

Progress = Callable[[int, int], None]

# An import reads the file (most of the time), then logs the imported tree: one scale for both.
_READ_SHARE = 900
_SCALE = 1000


@dataclass
class Imported:
    path: Path
    nodes: int
    root: int
    warnings: list[str] = field(default_factory=list)


def export_loom(
    loom: Loom,
    fmt: str,
    out: str | os.PathLike[str] | IO[bytes],
    *,
    node: int | None = None,
    path: bool = False,
    version: int | None = None,
    progress: Progress | None = None,
    whole_tree: bool = True,
) -> int:
    """Write `loom` (or the subtree under `node`, or with `path` the path from the root to `node`
    or to the current node) as `fmt` to a path (replaced atomically) or a binary stream. Returns
    how many nodes were written. Safe from a worker thread: it reads on a connection of its own.
    `whole_tree=False` writes Markdown as prose (of a path) rather than as an outline."""
    with loom.exporting(node=node, path=path) as stream:
        write_stream(stream, fmt, out, version=version, progress=progress, whole_tree=whole_tree)
        return stream.n_nodes


def import_file(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    progress: Progress | None = None,
) -> Imported:
    """Import a file of any known format into a new loom at `out` (nothing left there on failure;
    `LoomError`/`FormatError` with a one-line message naming the node for bad input)."""

    def reading(done: int, total: int) -> None:
        if progress is not None:
            progress(done * _READ_SHARE // max(1, total), _SCALE)

    def logging(done: int, total: int) -> None:
        if progress is not None:
            share = _SCALE - _READ_SHARE
            progress(_READ_SHARE + done * share // max(1, total), _SCALE)

    try:
        loom, warnings = Loom.build(
            Path(out), lambda sink: read_stream(src, sink, fmt, progress=reading), progress=logging
        )
    except NeedsWholeDocument:
        # Node ids that are strings (a hand-written file): renumbering needs the whole file.
        doc = read_document(src, fmt)
        stream = MemoryStream(doc)

        loom, warnings = Loom.build(
            Path(out), lambda sink: feed(stream, sink, progress=reading), progress=logging
        )
    with loom:
        count = int(loom.stats()["nodes"])
        return Imported(Path(out), count, loom.root_id, warnings)
