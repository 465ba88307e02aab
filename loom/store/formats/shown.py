"""Model text made safe to show in a browser or a terminal: controls as `\\xNN` escapes.

Model output may hold terminal escape codes, NUL or other control characters. Printed raw they
restyle a terminal; in a page they are invisible. Written as `\\x1b`-style escapes they are inert
and readable in any font (the Unicode control pictures, ␛ and ␀, are missing from many fonts).
"""

from __future__ import annotations

import re

# C0 and C1 controls but tab and newline, DEL, and lone surrogates (which UTF-8 cannot hold).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return "\ufffd" if code >= 0xD800 else f"\\x{code:02x}"


def shown(text: str) -> str:
    """`text` with CRLF as LF and every other control character as a visible `\\xNN` escape."""
    return _CONTROL.sub(_escape, text.replace("\r\n", "\n"))


def line(text: str) -> str:
    """`shown(text)` on one line, whitespace runs as single spaces (labels, names, titles)."""
    return " ".join(shown(text).split())


def quoted(text: str, limit: int = 48) -> str:
    """A short, quoted, one-line preview of model or user text."""
    flat = line(text)
    if len(flat) > limit:
        flat = flat[: limit - 1] + "\u2026"
    return f"\u201c{flat}\u201d"
