"""A large JSON document read a piece at a time: its top-level fields, and the items of the
arrays that grow with the loom (nodes, token arrays, events) one by one.

Two readers give the same pieces. loom writes its JSON one item a line (the head on the first
line, each node, token array and event on its own): `_lines` reads that layout with orjson, a line
at a time, at full speed. Any other layout of valid JSON (pretty-printed, reformatted by a tool)
goes through `_events`, ijson's incremental parser (the yajl2 C backend): slower, just as bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import ijson
import orjson

from loom.formats import jsonio
from loom.formats.errors import FormatError

# Numbers orjson would not keep exactly (an integer past 64 bits becomes a float) or refuses
# (an exponent past a double's): a line with a run of 19 digits or a 3-digit exponent is read by
# the standard library, exactly. Found with `in` on the line with every digit made a 9, E made e
# and signs dropped (C speed: a regular expression took 40 times longer than orjson's parse of
# the line). Dropping signs can join digits only where a sign stood between them, inside a
# string: such a line merely takes the exact reader too.
_AS_NINES = bytes.maketrans(b"0123456789E", b"9" * 10 + b"e")
_HUGE_MARKS = (b"9" * 19, b"e999")


def _huge_number(data: bytes) -> bool:
    nines = data.translate(_AS_NINES, b"+-")
    return _HUGE_MARKS[0] in nines or _HUGE_MARKS[1] in nines


class NeedsWholeDocument(Exception):
    """A file one pass cannot import (node ids that are strings, an integer ijson cannot hold):
    read it whole instead."""


# ("field", name, value), ("item", array name, value), or ("raw", array name, RawItem)
Piece = tuple[str, str, Any]


@dataclass(frozen=True)
class RawItem:
    """An item of a streamed array as the file's line holds it, not parsed yet (so another
    process can parse it)."""

    data: bytes
    line: int

    def value(self) -> Any:
        return _loads(self.data, self.line)


def pieces(
    handle: IO[bytes], streamed: frozenset[str], raw: frozenset[str] = frozenset()
) -> Iterator[Piece]:
    """The pieces of the JSON object in `handle` (a binary file at its start). Items of the
    arrays named in `raw` come as `RawItem`s where the file has one a line (loom's own layout),
    but for a last line that is cut short (parsed here, to say the file is truncated)."""
    first = handle.readline()
    handle.seek(0)
    head = first.strip()
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    if head.startswith(b"{") and head.endswith(b",") and _parses(head[:-1] + b"}"):
        return _lines(handle, streamed, raw)
    return _events(handle, streamed)


def _parses(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def _loads(data: bytes, line: int) -> Any:
    if _huge_number(data):
        try:
            return jsonio.loads(data.decode("utf-8"))
        except (FormatError, UnicodeDecodeError) as exc:
            raise FormatError(f"invalid JSON at line {line}: {exc}") from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        try:  # what Python's reader accepts beyond strict JSON (NaN, Infinity): checked later
            return jsonio.loads(data.decode("utf-8"))
        except (FormatError, UnicodeDecodeError):
            raise FormatError(f"invalid JSON at line {line}: {exc}") from None


def _lines(
    handle: IO[bytes], streamed: frozenset[str], raw_arrays: frozenset[str]
) -> Iterator[Piece]:
    number = 0
    array: str | None = None
    closed = False
    last_node = b""  # the last node read, for messages about where a file ends

    def after() -> str:
        try:
            node = _loads(last_node, number) if last_node else None
        except FormatError:
            node = None
        return f" (after node {node['id']})" if isinstance(node, dict) and "id" in node else ""

    def loads(data: bytes, raw: bytes) -> Any:
        if not raw.endswith(b"\n"):  # the last line, cut short
            try:
                return _loads(data, number)
            except FormatError:
                raise FormatError(
                    f"the file ends early at line {number}{after()}: it is truncated"
                ) from None
        return _loads(data, number)

    for raw in handle:
        number += 1
        line = raw.strip()
        if number == 1:
            line = line.removeprefix(b"\xef\xbb\xbf")
            for name, value in _loads(line[:-1] + b"}", number).items():
                yield "field", name, value
            continue
        if not line:
            continue
        if closed:
            raise FormatError(f"invalid JSON at line {number}: data after the end of the document")
        if array is not None:
            if line in (b"]", b"],", b"]}"):
                array = None
                closed = line == b"]}"
                continue
            data = line[:-1] if line.endswith(b",") else line
            if array in raw_arrays and raw.endswith(b"\n"):
                item: Any = RawItem(data, number)
            else:
                item = loads(data, raw)
            if array == "nodes":
                last_node = data
            yield ("raw" if isinstance(item, RawItem) else "item"), array, item
            continue
        if line.endswith(b"[") and line[:-1].rstrip().endswith(b":"):
            name = _loads(line[:-1].rstrip()[:-1], number)
            if not isinstance(name, str) or name not in streamed:
                raise FormatError(f"invalid JSON at line {number}: unexpected array {name!r}")
            array = name
            continue
        if line.endswith(b","):
            entry = loads(b"{" + line[:-1] + b"}", raw)
        else:
            entry = loads(b"{" + line, raw)
            closed = True
        for name, value in entry.items():
            if name in streamed and isinstance(value, list):
                for item in value:
                    yield "item", name, item
            else:
                yield "field", name, value
    if array is not None or not closed:
        where = after() or (f" (inside {array!r})" if array is not None else "")
        raise FormatError(f"the file ends early at line {number}{where}: it is truncated")


def _events(handle: IO[bytes], streamed: frozenset[str]) -> Iterator[Piece]:
    """Any layout, through ijson's parse events (values built with its ObjectBuilder)."""
    try:
        parser = ijson.parse(handle, use_float=True)
        _prefix, kind, value = next(parser)
        if kind != "start_map":
            raise FormatError("not a recognised loom format: the JSON is not an object")
        for prefix, kind, value in parser:
            if prefix == "" and kind == "map_key":
                name = value
                _prefix2, kind2, value2 = next(parser)
                if name in streamed and kind2 == "start_array":
                    yield from _array_items(parser, name)
                else:
                    yield "field", name, _build(parser, kind2, value2)
            elif prefix == "" and kind == "end_map":
                break
        for _extra in parser:
            raise FormatError("invalid JSON: data after the end of the document")
    except ijson.IncompleteJSONError as exc:
        message = " ".join(str(exc).split())
        if "integer overflow" in message:
            raise NeedsWholeDocument from None  # valid JSON: Python's own reader holds any integer
        if "premature EOF" in message or "incomplete" in message.lower():
            raise FormatError("the file ends early: it is truncated") from None
        # Not strict JSON (NaN, Infinity) or not JSON at all: Python's own reader, which takes
        # the former, reads the file whole and says which.
        raise NeedsWholeDocument from None
    except ijson.JSONError as exc:
        raise FormatError(f"invalid JSON: {' '.join(str(exc).split())}") from None


def _build(parser: Iterator[tuple[str, str, Any]], kind: str, value: Any) -> Any:
    if kind not in ("start_map", "start_array"):
        return value
    builder = ijson.ObjectBuilder()
    builder.event(kind, value)
    depth = 1
    for _prefix, kind2, value2 in parser:
        builder.event(kind2, value2)
        if kind2 in ("start_map", "start_array"):
            depth += 1
        elif kind2 in ("end_map", "end_array"):
            depth -= 1
            if depth == 0:
                return builder.value
    raise FormatError("the file ends early: it is truncated")


def _array_items(parser: Iterator[tuple[str, str, Any]], name: str) -> Iterator[Piece]:
    for _prefix, kind, value in parser:
        if kind == "end_array":
            return
        yield "item", name, _build(parser, kind, value)
    raise FormatError(f"the file ends early (inside {name!r}): it is truncated")
