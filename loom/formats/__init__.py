"""Import and export of whole looms: files <-> `LoomDocument`. Never touches SQLite.

    detect_format(path_or_bytes) -> str          # by content, never by file name
    read_document(path_or_bytes, fmt=None, *, note=None) -> LoomDocument
    write_document(doc, fmt, out, *, current=None, whole_tree=True, version=None)
    write_stream(stream, fmt, out, *, version=None, progress=None)   # any size, a node at a time
    read_stream(path, sink, fmt=None, *, progress=None) -> DocumentHead
    FORMATS: dict[str, Format]                   # name -> description, readable, writable

loom-json (both ways) and Open Loom (writing) stream: memory stays bounded by a node whatever the
size of the loom. The other formats are for smaller trees and go through a whole `LoomDocument`.

Formats: "loom-json" (full fidelity), "socketteer" (socketteer/loom save files), "loomsidian"
(import), "openloom" (Open Loom), "markdown", "dot", "html" and "svg" (export), and "loom" (a
.loom SQLite file: detected so callers can open it, never read here).

What importers leave in `doc.meta` for the caller: `"current"` (int id of the node the file was
on, when it says), `"import_warnings"` (list of one-line notes worth showing the user), and the
foreign fields of the source format under its own key.
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from loom.formats import (
    jsonio,
    jsonstream,
    loomjson,
    loomsidian,
    openloom,
    prepare,
    socketteer,
    writebehind,
)
from loom.formats.errors import FormatError
from loom.formats.export import dot, html, markdown, svg
from loom.formats.fields import brief, listing
from loom.formats.tree import path_document, resolve_current
from loom.store.document import ImportSink
from loom.store.model import LoomDocument
from loom.store.stream import (
    DocumentHead,
    DocumentSink,
    DocumentStream,
    MemorySink,
    MemoryStream,
    Progress,
    Throttle,
)

__all__ = [
    "FORMATS",
    "Format",
    "FormatError",
    "detect_format",
    "list_notes",
    "read_document",
    "read_stream",
    "render_document",
    "write_document",
    "write_stream",
]

SQLITE_MAGIC = b"SQLite format 3\x00"

Reader = Callable[[Any, str, "str | None"], LoomDocument]  # (parsed JSON, name, note)
Writer = Callable[[LoomDocument, "int | None", bool], str]  # (document, current, whole tree)


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    suffixes: tuple[str, ...]  # usual file suffixes: suggestions for output names only
    reader: Reader | None = None
    writer: Writer | None = None

    @property
    def can_read(self) -> bool:
        return self.reader is not None

    @property
    def can_write(self) -> bool:
        return self.writer is not None


def _write_markdown(doc: LoomDocument, current: int | None, whole_tree: bool) -> str:
    if whole_tree or current is None:
        return markdown.write_outline(doc, current)
    return markdown.write_path(doc, current)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "loom-json",
            "loom's own JSON: every node, token, probability, persona and event",
            (".loom.json", ".json"),
            reader=lambda data, name, note: loomjson.read(data),
            writer=lambda doc, current, whole: loomjson.write(doc, current),
        ),
        Format(
            "socketteer",
            "socketteer/loom save file (nested root.children)",
            (".json",),
            reader=lambda data, name, note: socketteer.read(data, name),
            writer=lambda doc, current, whole: socketteer.write(doc, current),
        ),
        Format(
            "loomsidian",
            "loomsidian (Obsidian plugin) data.json, import only",
            (".json",),
            reader=lambda data, name, note: loomsidian.read(data, name, note),
        ),
        Format(
            "openloom",
            "Open Loom tree (reads 1.0, writes loom's version 2 with an extensions block)",
            (".openloom.json", ".json"),
            reader=lambda data, name, note: openloom.read(data, name),
            writer=lambda doc, current, whole: openloom.write(doc, current),
        ),
        Format(
            "markdown",
            "Markdown: the tree as an outline, or a path as prose",
            (".md",),
            writer=_write_markdown,
        ),
        Format(
            "dot",
            "Graphviz DOT graph of the tree",
            (".dot", ".gv"),
            writer=lambda doc, current, whole: dot.write(doc, current),
        ),
        Format(
            "html",
            "a self-contained web page: tree, token probabilities, personas, replay timeline",
            (".html",),
            writer=lambda doc, current, whole: html.write(doc, current),
        ),
        Format(
            "svg",
            "an SVG picture of the tree (persona colours, edges weighted by probability)",
            (".svg",),
            writer=lambda doc, current, whole: svg.write(doc, current),
        ),
        Format("loom", "a loom file (SQLite): open it, do not import it", (".loom",)),
    )
}


# --- detection -------------------------------------------------------------------------------


def _read_source(source: str | os.PathLike[str] | bytes) -> tuple[bytes, str]:
    """The bytes of `source` and a name for the document (the file's stem)."""
    if isinstance(source, bytes):
        return source, ""
    path = Path(source)
    name = path.name.split(".")[0] if path.name else ""
    try:
        return path.read_bytes(), name
    except IsADirectoryError:
        raise FormatError(f"cannot read {path}: it is a directory") from None
    except OSError as exc:
        raise FormatError(f"cannot read {path}: {exc.strerror or exc}") from None


def _parse(data: bytes) -> Any:
    if data.startswith(SQLITE_MAGIC):
        raise FormatError("this is a loom (SQLite) file: open it instead of importing it")
    text = jsonio.decode_text(data)
    stripped = text.lstrip()
    if not stripped:
        raise FormatError("not a recognised loom format: the file is empty")
    if stripped[0] not in "{[":
        raise FormatError("not a recognised loom format: neither JSON nor a loom (SQLite) file")
    return jsonio.loads(text)


def _detect_parsed(data: Any) -> str:
    if not isinstance(data, dict):
        raise FormatError("not a recognised loom format: the JSON is not an object")
    fmt = data.get("format")
    if fmt == loomjson.FORMAT:
        return "loom-json"
    if fmt == openloom.FORMAT:
        return "openloom"
    if fmt is not None:
        raise FormatError(f"not a recognised loom format: its format is {brief(fmt)}")
    if isinstance(data.get("rootNodeId"), str) and isinstance(data.get("nodes"), dict):
        return "openloom"
    state = data.get("state")
    if isinstance(state, dict) and all(
        isinstance(v, dict) and "nodes" in v for v in state.values()
    ):
        return "loomsidian"
    if "current" in data and isinstance(data.get("nodes"), (dict, list)):
        return "loomsidian"
    root = data.get("root")
    if isinstance(root, dict) and isinstance(root.get("children", []), list):
        return "socketteer"
    if isinstance(data.get("children"), list) and isinstance(data.get("text"), str):
        return "socketteer"
    keys = listing(list(data), 6)
    raise FormatError(f"not a recognised loom format: a JSON object with keys {keys or 'none'}")


def detect_format(source: str | os.PathLike[str] | bytes) -> str:
    """The format name of a file (or its bytes), judged by its content alone."""
    data, _ = _read_source(source)
    if data.startswith(SQLITE_MAGIC):
        return "loom"
    return _detect_parsed(_parse(data))


def list_notes(source: str | os.PathLike[str] | bytes) -> list[str]:
    """The notes of a loomsidian data.json, in file order (for choosing `note=`)."""
    data, _ = _read_source(source)
    return loomsidian.notes(_parse(data))


# --- reading and writing ---------------------------------------------------------------------


def read_document(
    source: str | os.PathLike[str] | bytes, fmt: str | None = None, *, note: str | None = None
) -> LoomDocument:
    """Import a file (or its bytes). `note` picks the note of a loomsidian data.json."""
    data, name = _read_source(source)
    if fmt is not None and fmt not in FORMATS:
        raise FormatError(f"unknown format {brief(fmt)} (known: {', '.join(FORMATS)})")
    parsed = _parse(data)
    fmt = fmt or _detect_parsed(parsed)
    reader = FORMATS[fmt].reader
    if reader is None:
        raise FormatError(f"loom cannot import {fmt} files")
    return reader(parsed, name, note)


def render_document(
    doc: LoomDocument,
    fmt: str,
    *,
    current: int | None = None,
    whole_tree: bool = True,
    version: int | None = None,
) -> str:
    """The text `write_document` would write (`version`: of loom-json, default the newest)."""
    spec = FORMATS.get(fmt)
    if spec is None:
        raise FormatError(f"unknown format {brief(fmt)} (known: {', '.join(FORMATS)})")
    if spec.writer is None:
        raise FormatError(f"loom cannot export {fmt} files")
    current = resolve_current(doc, current)
    if not whole_tree:
        target = doc.root if current is None else current
        doc = path_document(doc, target)
        current = target
    if version is not None:
        if fmt != "loom-json":
            raise FormatError(f"only loom-json has versions to choose from, not {fmt}")
        return loomjson.write(doc, current, version=version)
    return spec.writer(doc, current, whole_tree)


def write_document(
    doc: LoomDocument,
    fmt: str,
    out: str | os.PathLike[str] | IO[str] | IO[bytes],
    *,
    current: int | None = None,
    whole_tree: bool = True,
    version: int | None = None,
) -> None:
    """Export `doc` as `fmt` to a path or an open text/binary stream.

    A path that is (or will be) a regular file is replaced atomically, keeping the mode of the
    file it replaces; anything else there (a device, a FIFO, /dev/stdout) is written in place.
    An SQLite database (a loom, most likely) is never overwritten. Problems with the output are
    `FormatError`s.

    `current` is the node the user is on (default: the one the document was read with).
    `whole_tree=False` exports only the path from the root to it: for Markdown, as prose.
    """
    text = render_document(doc, fmt, current=current, whole_tree=whole_tree, version=version)
    if isinstance(out, (str, os.PathLike)):
        write_text_file(Path(out), text)
    elif isinstance(out, io.TextIOBase) or getattr(out, "encoding", None):
        cast("IO[str]", out).write(text)
    else:
        cast("IO[bytes]", out).write(text.encode("utf-8"))


# --- streaming ----------------------------------------------------------------------------------

STREAMING_WRITERS = ("loom-json", "openloom")
STREAMING_READERS = ("loom-json",)


def write_stream(
    stream: DocumentStream,
    fmt: str,
    out: str | os.PathLike[str] | IO[bytes],
    *,
    version: int | None = None,
    progress: Progress | None = None,
    whole_tree: bool = True,
) -> None:
    """Export a loom read a node at a time. loom-json and Open Loom are written as they are read
    (memory bounded by a node); other formats are assembled whole first. A path is replaced
    atomically, as by `write_document`. `progress(done, total)` is called at most ~100 times."""
    spec = FORMATS.get(fmt)
    if spec is None:
        raise FormatError(f"unknown format {brief(fmt)} (known: {', '.join(FORMATS)})")
    if spec.writer is None:
        raise FormatError(f"loom cannot export {fmt} files")
    if version is not None and fmt != "loom-json":
        raise FormatError(f"only loom-json has versions to choose from, not {fmt}")
    throttle = Throttle(progress, stream.n_nodes + stream.n_events)
    chunks: Iterator[bytes]
    if fmt == "loom-json":
        chunks = loomjson.write_stream(
            stream, version=loomjson.VERSION if version is None else version, tick=throttle.advance
        )
    elif fmt == "openloom":
        chunks = openloom.write_stream(stream, tick=throttle.advance)
    else:
        sink = MemorySink()
        for item in stream.nodes():
            sink.node(item.node, item.key)
            throttle.advance()
        for key in stream.event_token_keys():
            sink.token_array(key, stream.tokens(key))
        for event in stream.events():
            sink.event(event)
            throttle.advance()
        doc = sink.document(stream.head)
        text = render_document(doc, fmt, current=stream.head.current, whole_tree=whole_tree)
        chunks = iter([text.encode("utf-8")])
    if isinstance(out, (str, os.PathLike)):
        write_chunks_file(Path(out), chunks)
    else:
        for chunk in chunks:
            out.write(chunk)
    throttle.finish()


def sniff_format(path: Path) -> str | None:
    """The format of a file judged from its first line (loom's own layouts), None if unsure."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
            if head.startswith(SQLITE_MAGIC):
                return "loom"
            handle.seek(0)
            first = handle.readline(1 << 24).strip().removeprefix(b"\xef\xbb\xbf")
    except OSError:
        return None
    fmt: Any = None
    if first.startswith(b"{") and first.endswith(b","):
        try:
            data = jsonio.loads(first[:-1].decode("utf-8", "replace") + "}")
        except FormatError:
            data = None
        fmt = data.get("format") if isinstance(data, dict) else None
    if fmt is None:
        fmt = _peek_format(path)
    if not isinstance(fmt, str):
        return None
    return {loomjson.FORMAT: "loom-json", openloom.FORMAT: "openloom"}.get(fmt)


def _peek_format(path: Path) -> Any:
    """The top-level "format" of a JSON file of any layout, read only as far as needed."""
    import ijson

    try:
        with open(path, "rb") as handle:
            for prefix, event, value in ijson.parse(handle):
                if prefix == "format" and event == "string":
                    return value
                if prefix == "" and event == "map_key" and value != "format":
                    # skip to the next top-level key without building anything
                    continue
                if prefix in ("nodes", "vocab") or prefix.startswith(("nodes.", "vocab.")):
                    return None  # past the head: no format where loom looks for it
    except (ijson.JSONError, OSError, UnicodeDecodeError):
        return None
    return None


# A large read buffer: every refill is a system call, and a moment the importing thread lets the
# threads that talk to the worker processes take the interpreter from it.
_READ_BUFFER = 1 << 20


def read_stream(
    source: str | os.PathLike[str],
    sink: DocumentSink,
    fmt: str | None = None,
    *,
    progress: Progress | None = None,
) -> DocumentHead:
    """Import a file into `sink` a node at a time (loom-json; other formats are read whole, then
    fed to it). `loomjson.NeedsWholeDocument` for a loom-json file whose ids are strings (read it
    whole: `read_document`). `progress(done, total)`: bytes read, at most ~100 calls."""
    path = Path(source)
    if fmt is not None and fmt not in FORMATS:
        raise FormatError(f"unknown format {brief(fmt)} (known: {', '.join(FORMATS)})")
    if path.is_dir():
        raise FormatError(f"cannot read {path}: it is a directory")
    detected = sniff_format(path)
    if detected == "loom":
        raise FormatError("this is a loom (SQLite) file: open it instead of importing it")
    if (fmt or detected) == "loom-json" and detected == "loom-json":
        try:
            size = os.path.getsize(path)
            handle = open(path, "rb", buffering=_READ_BUFFER)  # noqa: SIM115 - closed below
        except OSError as exc:
            raise FormatError(f"cannot read {path}: {exc.strerror or exc}") from None
        with handle:
            throttle = Throttle(progress, size)
            count = 0

            def tick() -> None:
                nonlocal count
                count += 1
                if count % 16 == 0:  # tell() is a system call: not at every item
                    throttle.set(handle.tell())

            workers = prepare.worker_count() if isinstance(sink, ImportSink) else 0
            if workers and size >= prepare.PARALLEL_FROM_BYTES:
                preparer = prepare.Preparer(workers)
                try:
                    pieces = jsonstream.pieces(handle, loomjson.STREAMED, frozenset({"nodes"}))
                    head = loomjson.read_into(pieces, sink, tick=tick, workers=preparer)
                finally:
                    preparer.close()
            else:
                pieces = jsonstream.pieces(handle, loomjson.STREAMED)
                head = loomjson.read_into(pieces, sink, tick=tick)
            throttle.finish()
            return head
    doc = read_document(path, fmt)
    return feed(MemoryStream(doc), sink, progress=progress)


def feed(
    stream: DocumentStream, sink: DocumentSink, *, progress: Progress | None = None
) -> DocumentHead:
    """Everything `stream` holds, into `sink`; returns the head."""
    throttle = Throttle(progress, stream.n_nodes + stream.n_events)
    sink.vocabulary(dict(stream.vocabulary()))
    for item in stream.nodes():
        sink.node(item.node, item.key)
        throttle.advance()
    for key in stream.event_token_keys():
        sink.token_array(key, stream.tokens(key))
    for event in stream.events():
        sink.event(event)
        throttle.advance()
    throttle.finish()
    return stream.head


def write_chunks_file(path: Path, chunks: Iterable[bytes]) -> None:
    """Write an export made a piece at a time (never held whole) to `path`: a regular file is
    replaced by a rename (a crash mid-export never leaves a half-written file where a good one
    was) and keeps its mode; a device, FIFO or /dev/stdout is written in place; a database or a
    file SQLite keeps beside one is refused. `FormatError` if it cannot be written."""
    try:
        try:
            existing = os.stat(path)  # follows symlinks: what would be overwritten
        except FileNotFoundError:
            existing = None
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            raise FormatError(f"cannot write {path}: it is a directory")
        if existing is not None and (
            not stat.S_ISREG(existing.st_mode) or str(path.absolute()).startswith(_IN_PLACE_ROOTS)
        ):
            with open(path, "wb") as handle:
                writebehind.write_all(handle, chunks)
            return
        target = Path(os.path.realpath(path))  # through a symlink: replace its file, keep it
        if existing is not None:
            _refuse_database(path, target)
        mode = None if existing is None else stat.S_IMODE(existing.st_mode)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or "."
        )
        try:
            with os.fdopen(fd, "wb") as handle:
                writebehind.write_all(handle, chunks)
                handle.flush()
                os.fsync(handle.fileno())  # on disk before it replaces anything: a crash
                # after the rename must not leave an empty file where a good one was
            if mode is None:  # mkstemp makes the file private; an export is an ordinary file
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise FormatError(f"cannot write {path}: {exc.strerror or exc}") from None


# The first bytes of a write-ahead log (either byte order of its checksums).
_WAL_MAGICS = (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")
_SIDECARS = ("-wal", "-shm", "-journal")
# Pseudo files whose identity is their name: a rename over one would replace the device node.
_IN_PLACE_ROOTS = ("/dev/", "/proc/")


def write_text_file(path: Path, text: str) -> None:
    """Write an export to `path` (see `write_document`); `FormatError` if it cannot be."""
    write_chunks_file(path, [text.encode("utf-8")])


def _refuse_database(path: Path, target: Path) -> None:
    """An export never replaces a database or a file SQLite keeps beside one."""
    with open(target, "rb") as handle:
        head = handle.read(len(SQLITE_MAGIC))
    if head.startswith(SQLITE_MAGIC):
        raise FormatError(
            f"will not overwrite {path}: it is an SQLite database (a loom file?); "
            "choose another output file"
        )
    owner = next((target.name[: -len(s)] for s in _SIDECARS if target.name.endswith(s)), None)
    if head[:4] in _WAL_MAGICS or (owner and _is_database(target.with_name(owner))):
        raise FormatError(
            f"will not overwrite {path}: it belongs to an SQLite database (a loom file?); "
            "choose another output file"
        )


def _is_database(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False
