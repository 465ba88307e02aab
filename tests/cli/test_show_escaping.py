"""`loom show` prints model text inert, as search and replay do; `--raw` prints it exactly.

Model text may hold terminal escape sequences (colours, an OSC sequence that retitles the window,
C1 controls such as U+009B, which some terminals take as CSI) and bidi controls that reorder what
the reader sees. Printed raw they act on the terminal; `show` writes them as visible escapes and
keeps newlines and tabs (it prints prose), like `search` and `replay --headless` already do.
"""

from __future__ import annotations

import re
import subprocess
import sys
import unicodedata
from pathlib import Path

from support.cli import run_loom

from loom.store.loom import Loom

HOSTILE = (
    "\x1b[31mred\x1b[0m"  # SGR colours
    " \x1b]0;pwned\x07"  # OSC: set the window title
    " \x9b2J"  # C1 CSI: clear the screen on some terminals
    " \u202eevil\u202c \u2066iso\u2069"  # bidi override and isolate
    " bell\x07 nul\x00 del\x7f cr\r."
)
PROSE = "Once upon a time,\n\tthere was a café — 日本語\u3000テキスト, \u00a0and «quotes»."

# What must never reach a terminal raw: C0 but tab and newline, DEL, C1, bidi controls.
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _loom(path: Path) -> tuple[Path, int]:
    with Loom.create(path, title="t", prompt=PROSE) as lm:
        node = lm.add_child(lm.root_id, " " + HOSTILE, author="model")
    return path, node


def test_show_makes_control_characters_inert_and_keeps_prose(tmp_path: Path) -> None:
    path, node = _loom(tmp_path / "x.loom")
    done = run_loom("show", path, "--node", str(node))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert not RAW.search(out), repr(RAW.search(out))
    assert out.startswith(PROSE)  # newlines, tabs, spaces and non-ASCII text as they are
    for visible in ("\\x1b[31mred", "\\x1b]0;pwned\\x07", "\\x9b2J", "\\x00", "\\x7f", "\\x0d"):
        assert visible in out, visible
    assert "\\u202eevil\\u202c" in out and "\\u2066iso\\u2069" in out


def test_show_raw_prints_the_exact_text(tmp_path: Path) -> None:
    path, node = _loom(tmp_path / "x.loom")
    done = subprocess.run(
        [sys.executable, "-m", "loom.cli", "show", str(path), "--node", str(node), "--raw"],
        capture_output=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode("utf-8") == PROSE + " " + HOSTILE


def test_every_character_show_keeps_is_harmless_on_a_terminal(tmp_path: Path) -> None:
    sample = "".join(chr(c) for c in range(0x2100) if not 0xD800 <= c <= 0xDFFF)
    with Loom.create(tmp_path / "all.loom", title="t", prompt=sample):
        pass
    done = run_loom("show", tmp_path / "all.loom")
    assert done.returncode == 0, done.stderr
    for ch in set(done.stdout):
        category = unicodedata.category(ch)
        assert ch in "\n\t" or (category[0] not in "C" and category not in ("Zl", "Zp")), repr(ch)
