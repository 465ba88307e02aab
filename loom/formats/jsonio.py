"""JSON reading and writing that survives any nesting depth.

Nested formats (socketteer's `root.children...`) hold two JSON levels per tree level, and
Python's `json` module recurses per level: it fails near 1000 levels. Each direction tries, in
turn: the C implementation as is (ordinary files pay nothing); the C implementation again in a
thread with a 512 MiB stack under a recursion limit raised, for that moment only, to what the
stack can hold with a wide margin (fast for trees up to ~100k deep); and last an iterative
implementation of our own with no depth limit at all. All three read and write the same JSON.
"""

from __future__ import annotations

import json
import math
import re
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np

from loom.formats.errors import FormatError

# The C-accelerated string scanner `json` itself uses (not in typeshed's stubs).
scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"(-?(?:0|[1-9]\d*))(\.\d+)?([eE][-+]?\d+)?")
_LITERALS: tuple[tuple[str, Any], ...] = (
    ("true", True),
    ("false", False),
    ("null", None),
    ("NaN", math.nan),
    ("Infinity", math.inf),
    ("-Infinity", -math.inf),
)


T = TypeVar("T")

_DEEP_STACK_BYTES = 512 * 1024 * 1024  # reserved address space; pages are touched only as used
# Measured: the C json code takes 100-160 bytes of stack per nesting level. 8x margin.
_DEEP_RECURSION_LIMIT = _DEEP_STACK_BYTES // 1300
_deep_lock = threading.Lock()


def _in_deep_thread(func: Callable[[], T]) -> T:
    """`func()` run where it may recurse ~400k levels; its exceptions (RecursionError) re-raised."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = func()
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    with _deep_lock:  # the stack size and recursion limit are process-wide
        old_limit = sys.getrecursionlimit()
        try:
            old_stack = threading.stack_size(_DEEP_STACK_BYTES)
        except (ValueError, RuntimeError):  # a platform that refuses: go iterative
            raise RecursionError("no deep stack available") from None
        sys.setrecursionlimit(max(old_limit, _DEEP_RECURSION_LIMIT))
        try:
            try:
                thread = threading.Thread(target=run, name="loom-deep-json", daemon=True)
                thread.start()
            finally:
                threading.stack_size(old_stack)
            thread.join()
        finally:
            sys.setrecursionlimit(old_limit)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FormatError(f"not UTF-8 text (byte {exc.start} is invalid)") from None


def loads(text: str) -> Any:
    """Parse JSON text; `FormatError` (one line, with position) when it is not valid JSON."""
    try:
        try:
            return json.loads(text)
        except RecursionError:
            pass
        try:
            return _in_deep_thread(lambda: json.loads(text))
        except RecursionError:
            return _loads_iterative(text)
    except json.JSONDecodeError as exc:
        raise FormatError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


def dumps(obj: Any, *, indent: int | None = None) -> str:
    """Strict JSON (no NaN), ASCII-only so lone surrogates and control characters round-trip."""
    try:
        try:
            return _dumps_c(obj, indent)
        except RecursionError:
            pass
        try:
            return _in_deep_thread(lambda: _dumps_c(obj, indent))
        except RecursionError:
            return "".join(_iterencode(obj, indent))
    except ValueError as exc:
        raise FormatError(f"cannot write JSON: {exc}") from None
    except TypeError as exc:
        raise FormatError(f"cannot write JSON: {exc}") from None


def _dumps_c(obj: Any, indent: int | None) -> str:
    return json.dumps(obj, ensure_ascii=True, allow_nan=False, indent=indent, default=_default)


def _default(obj: Any) -> Any:
    # Foreign `meta` dicts and events may carry numpy scalars or arrays from the engine.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


# --- the iterative decoder --------------------------------------------------------------------


def _error(msg: str, text: str, pos: int) -> json.JSONDecodeError:
    return json.JSONDecodeError(msg, text, pos)


def _key(text: str, pos: int) -> tuple[str, int]:
    """Parse `"key" :` at `pos`; return the key and the position of the value."""
    if text[pos : pos + 1] != '"':
        raise _error("Expecting property name enclosed in double quotes", text, pos)
    key, pos = scanstring(text, pos + 1)
    pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
    if text[pos : pos + 1] != ":":
        raise _error("Expecting ':' delimiter", text, pos)
    return key, _WS.match(text, pos + 1).end()  # type: ignore[union-attr]


def _scalar(text: str, pos: int) -> tuple[Any, int]:
    char = text[pos : pos + 1]
    if char == '"':
        return scanstring(text, pos + 1)
    for literal, value in _LITERALS:
        if text.startswith(literal, pos):
            return value, pos + len(literal)
    match = _NUMBER.match(text, pos)
    if match is None:
        raise _error("Expecting value", text, pos)
    integer, frac, exp = match.groups()
    if frac or exp:
        return float(integer + (frac or "") + (exp or "")), match.end()
    return int(integer), match.end()


def _loads_iterative(text: str) -> Any:
    """The same grammar as `json.loads`, with an explicit stack of open containers."""
    containers: list[dict[str, Any] | list[Any]] = []
    keys: list[str] = []  # the pending key of each open object, in step with `containers`
    pos = _WS.match(text, 0).end()  # type: ignore[union-attr]
    while True:
        # A value starts at `pos`.
        char = text[pos : pos + 1]
        value: Any
        if char in ("{", "["):
            pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
            closer = "}" if char == "{" else "]"
            if text[pos : pos + 1] == closer:
                value, pos = ({} if char == "{" else []), pos + 1
            elif char == "{":
                containers.append({})
                key, pos = _key(text, pos)
                keys.append(key)
                continue
            else:
                containers.append([])
                continue
        else:
            value, pos = _scalar(text, pos)
        # A value is complete: attach it, then close as many containers as end here.
        while True:
            if not containers:
                pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
                if pos != len(text):
                    raise _error("Extra data", text, pos)
                return value
            parent = containers[-1]
            if isinstance(parent, dict):
                parent[keys[-1]] = value
            else:
                parent.append(value)
            pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
            char = text[pos : pos + 1]
            if char == ",":
                pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
                if isinstance(parent, dict):
                    keys[-1], pos = _key(text, pos)
                break
            if char == ("}" if isinstance(parent, dict) else "]"):
                pos += 1
                value = containers.pop()
                if isinstance(value, dict):
                    keys.pop()
                continue
            expected = "','" if char else "',' or a closing bracket"
            raise _error(f"Expecting {expected} delimiter", text, pos)


# --- the iterative encoder --------------------------------------------------------------------


def _encode_key(key: Any) -> str:
    # The same key coercions as `json.dumps`.
    if isinstance(key, str):
        return key
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        return _encode_float(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _encode_float(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"Out of range float values are not JSON compliant: {value!r}")
    return float.__repr__(value)


def _encode_scalar(value: Any) -> str:
    if isinstance(value, str):
        return json.encoder.encode_basestring_ascii(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return _encode_float(value)
    return _encode_scalar(_default(value))


def _iterencode(obj: Any, indent: int | None) -> Iterator[str]:
    """Yield the pieces `json.dumps(obj, ensure_ascii=True, indent=indent)` would produce."""
    item_sep = "," if indent is not None else ", "

    def newline(depth: int) -> str:
        return "" if indent is None else "\n" + " " * (indent * depth)

    # Each frame: (iterator over the items, is-a-dict, depth, id of the container).
    frames: list[tuple[Iterator[Any], bool, int, int]] = []
    open_ids: set[int] = set()
    pending: Any = obj
    have_pending = True
    while True:
        if have_pending:
            have_pending = False
            value = pending
            if isinstance(value, (dict, list, tuple)) and value:
                if id(value) in open_ids:
                    raise ValueError("Circular reference detected")
                open_ids.add(id(value))
                is_dict = isinstance(value, dict)
                items = iter(value.items()) if isinstance(value, dict) else iter(value)
                frames.append((items, is_dict, len(frames) + 1, id(value)))
                yield "{" if is_dict else "["
                first = True
            elif isinstance(value, dict):
                yield "{}"
                first = False
            elif isinstance(value, (list, tuple)):
                yield "[]"
                first = False
            elif isinstance(value, np.ndarray):
                pending, have_pending = value.tolist(), True
                continue
            else:
                yield _encode_scalar(value)
                first = False
        if not frames:
            return
        items, is_dict, depth, container_id = frames[-1]
        item: Any = next(items, _END)
        if item is _END:
            frames.pop()
            open_ids.discard(container_id)
            yield newline(depth - 1) + ("}" if is_dict else "]")
            first = False
            continue
        prefix = ("" if first else item_sep) + newline(depth)
        first = False
        if is_dict:
            key, pending = item
            yield prefix + json.encoder.encode_basestring_ascii(_encode_key(key)) + ": "
        else:
            pending = item
            yield prefix
        have_pending = True


_END = object()
