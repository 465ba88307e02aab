"""The one policy for showing untrusted text: model output, imported files, what users typed.

Such text may hold terminal escape sequences (ESC, CSI, OSC: they restyle a terminal, retitle its
window, move the cursor), other C0 and C1 controls (NUL, a lone CR that overwrites the line),
bidirectional overrides and isolates (they reorder what follows them on screen), invisible format
characters (zero-width spaces and joiners that hide text), line and paragraph separators, and
lone surrogates (which no UTF-8 file can hold). Wherever loom shows text — the terminal app, the
CLI, HTML, SVG, DOT, Markdown — it goes through `inert` first, and formats then apply their own
quoting (HTML/XML entities, DOT string escapes) to the result:

- CRLF becomes LF; newline and tab are kept (prose stays prose), and so is every space;
- every other character that is not printable (Unicode categories Cc, Cf, Co, Cn, Zl, Zp) becomes
  a visible, readable escape (`\\x1b`, `\\u202e`): the exact character is recoverable, and no
  font lacks the glyphs;
- a lone surrogate becomes U+FFFD.

`one_line` is the same on a single line (labels, previews, table cells): newline shown as `↵`,
tab as a space, optionally cut to a length with an ellipsis (`cut`). `quoted` is a short quoted
preview.
"""

from __future__ import annotations

import unicodedata

ELLIPSIS = "\u2026"
NEWLINE_MARK = "\u21b5"  # ↵


def _shown(ch: str, keep: str) -> str:
    if ch.isprintable() or ch in keep or unicodedata.category(ch) == "Zs":
        return ch
    code = ord(ch)
    if 0xD800 <= code <= 0xDFFF:
        return "\ufffd"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _escape_line(line: str, keep: str) -> str:
    # str.isprintable runs in C: most lines of model text need no character-by-character look.
    return line if line.isprintable() else "".join(_shown(ch, keep) for ch in line)


def inert(text: str) -> str:
    """`text` made inert: what is not printable as visible escapes; newline, tab, spaces kept."""
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(_escape_line(line, "\t") for line in lines)


def one_line(text: str, limit: int | None = None) -> str:
    """`inert(text)` on one line (newline as ↵, tab as a space), cut to `limit` characters."""
    lines = text.replace("\r\n", "\n").replace("\t", " ").split("\n")
    flat = NEWLINE_MARK.join(_escape_line(line, "") for line in lines)
    return flat if limit is None else cut(flat, limit)


def cut(text: str, limit: int) -> str:
    """The first `limit` characters of `text`, the last one an ellipsis when it was longer."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + ELLIPSIS


def quoted(text: str, limit: int = 48) -> str:
    """A short, quoted, one-line preview of untrusted text ("“…”")."""
    return f"\u201c{one_line(text, limit)}\u201d"
