"""Text made safe to show, for Markdown and DOT output (read in editors and terminals)."""

from __future__ import annotations

import re

# Every C0/C1 control except tab and newline (NUL, ESC of terminal escape codes, lone CR, DEL,
# CSI...), and lone surrogates, which no UTF-8 file can hold.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _picture(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xD800 <= code <= 0xDFFF:
        return "\ufffd"
    if code < 0x20:
        return chr(0x2400 + code)  # the Unicode "control pictures" block: ESC shows as ␛, NUL as ␀
    if code == 0x7F:
        return "\u2421"  # ␡
    return f"<U+{code:04X}>"  # C1 controls have no pictures


def visible(text: str) -> str:
    """`text` with CRLF as LF and every other control character replaced by a visible stand-in.

    Exports for reading must never carry raw escape codes: printed to a terminal they would
    restyle it or move the cursor.
    """
    return _CONTROL.sub(_picture, text.replace("\r\n", "\n"))


def one_line(text: str) -> str:
    """`visible(text)` on a single line (titles, headers)."""
    return " ".join(visible(text).split("\n")).strip()


def preview(text: str, limit: int) -> str:
    """The first `limit` characters of `text`, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
