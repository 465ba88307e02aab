"""The one policy for showing untrusted text: model output, imported files, what users typed.

Such text may hold terminal escape sequences (ESC, CSI, OSC: they restyle a terminal, retitle its
window, move the cursor), other C0 and C1 controls (NUL, a lone CR that overwrites the line),
bidirectional overrides and isolates (they reorder what follows them on screen), and lone
surrogates (which no UTF-8 file can hold). Wherever loom shows text — the terminal app, the CLI,
HTML, SVG, DOT, Markdown — it goes through `inert` first, and formats then apply their own
quoting (HTML/XML entities, DOT string escapes) to the result:

- CRLF becomes LF; newline and tab are kept (prose stays prose);
- every other control and every bidi control becomes a visible, readable escape (`\\x1b`,
  `\\u202e`): the exact character is recoverable, and no font lacks the glyphs;
- a lone surrogate becomes U+FFFD.

`one_line` is the same on a single line (labels, previews, table cells): newline shown as `↵`,
tab as a space, optionally cut to a length with an ellipsis. `quoted` is a short quoted preview.
"""

from __future__ import annotations

# C0 controls but tab and newline, DEL, C1 controls; the bidi controls; the Unicode line and
# paragraph separators (some renderers break lines on them, others not: either way a surprise).
_CONTROLS = [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]
_BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029]


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# str.translate runs in C: one table for every character that must not act.
_INERT: dict[int, str] = {code: _escape(code) for code in [*_CONTROLS, *_BIDI]}
_INERT.update({code: "\ufffd" for code in range(0xD800, 0xE000)})
_ONE_LINE: dict[int, str] = {**_INERT, ord("\n"): "\u21b5", ord("\t"): " "}

ELLIPSIS = "\u2026"


def inert(text: str) -> str:
    """`text` made inert: controls and bidi controls as visible escapes, newline and tab kept."""
    return text.replace("\r\n", "\n").translate(_INERT)


def one_line(text: str, limit: int | None = None) -> str:
    """`inert(text)` on one line (newline as ↵), cut to `limit` characters with an ellipsis."""
    flat = text.replace("\r\n", "\n").translate(_ONE_LINE)
    if limit is not None and len(flat) > limit:
        return flat[: max(0, limit - 1)] + ELLIPSIS
    return flat


def quoted(text: str, limit: int = 48) -> str:
    """A short, quoted, one-line preview of untrusted text ("“…”")."""
    return f"\u201c{one_line(text, limit)}\u201d"
