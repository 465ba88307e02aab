"""The one policy for untrusted text (loom/text.py), checked over every code point."""

from __future__ import annotations

import unicodedata

from loom.text import inert, one_line, quoted

# The basic and supplementary multilingual planes and the tag characters: every category occurs
# there (the planes above are unassigned or private use, escaped the same way).
EVERY_CHARACTER = "".join(chr(c) for c in [*range(0x20000), *range(0xE0000, 0xE0200), 0x10FFFF])


def _acts(ch: str) -> bool:
    """Characters that do something on a screen other than being a glyph, or are invisible:
    controls, format characters (bidi controls, zero-width ones), surrogates, private use,
    unassigned code points, line and paragraph separators."""
    return unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp")


def test_nothing_that_acts_survives_but_newline_and_tab() -> None:
    out = inert(EVERY_CHARACTER)
    assert {ch for ch in out if _acts(ch)} == {"\n", "\t"}
    out.encode("utf-8")  # no lone surrogate is left


def test_one_line_has_no_line_breaks_and_keeps_its_limit() -> None:
    out = one_line(EVERY_CHARACTER)
    assert not {ch for ch in out if _acts(ch)}
    assert "\n" not in out and "\r" not in out
    assert one_line("a\nb\tc") == "a\u21b5b c"
    assert one_line("x" * 50, 10) == "x" * 9 + "\u2026"
    assert len(one_line("\x1b" * 50, 10)) == 10


def test_escapes_name_the_character_exactly() -> None:
    assert inert("red \x1b[31m!") == "red \\x1b[31m!"
    assert inert("title \x1b]0;pwned\x07") == "title \\x1b]0;pwned\\x07"
    assert inert("c1 \x9b2J") == "c1 \\x9b2J"
    assert inert("abc\u202edef") == "abc\\u202edef"
    assert inert("line\r\nnext\rover") == "line\nnext\\x0dover"
    assert inert("lone \ud800 surrogate") == "lone \ufffd surrogate"
    assert inert("tab\tand\nnewline, ünïcödé, 🥐") == "tab\tand\nnewline, ünïcödé, 🥐"
    assert inert("zero\u200bwidth, nbsp\u00a0and ideographic\u3000spaces") == (
        "zero\\u200bwidth, nbsp\u00a0and ideographic\u3000spaces"
    )
    assert inert("\U000e0041 tag") == "\\U000e0041 tag"


def test_quoted_is_a_short_one_line_preview() -> None:
    assert quoted("Bob said:\n\x1b[2J no") == "\u201cBob said:\u21b5\\x1b[2J no\u201d"
    assert len(quoted("y" * 200, 20)) == 22
