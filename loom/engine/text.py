"""Token pieces to display text (per-token texts that join to the decoded string) and stop strings.

A token's piece is bytes, and byte-fallback tokens carry fragments of one UTF-8 character. Decoding
a sequence incrementally gives every character to the token that completes it (the earlier fragments
get ""), so `"".join(texts)` is always the properly decoded text. A piece shown on its own (a top-k
alternative) that is not valid UTF-8 is shown with \\x escapes instead of a replacement character.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class Utf8Stream:
    """Incremental UTF-8 decoding of one token stream (invalid bytes become U+FFFD)."""

    def __init__(self, carry: bytes = b"") -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        if carry:
            self._decoder.decode(carry)

    def push(self, piece: bytes) -> str:
        return str(self._decoder.decode(piece))

    def flush(self) -> str:
        """Whatever is left of an unfinished character (as U+FFFD)."""
        return str(self._decoder.decode(b"", final=True))


def stream_texts(pieces: Sequence[bytes], carry: bytes = b"") -> list[str]:
    """Per-token texts of a token sequence; a dangling fragment is flushed into the last text."""
    stream = Utf8Stream(carry)
    texts = [stream.push(p) for p in pieces]
    rest = stream.flush()
    if rest and texts:
        texts[-1] += rest
    return texts


def incomplete_tail(data: bytes) -> bytes:
    """The trailing bytes of an unfinished UTF-8 character (empty if the data ends cleanly)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        need = (
            2
            if byte & 0xE0 == 0xC0
            else 3
            if byte & 0xF0 == 0xE0
            else 4
            if byte & 0xF8 == 0xF0
            else 1
        )
        return data[-back:] if back < need else b""
    return b""


def piece_text(piece: bytes) -> str:
    """One piece shown on its own: its text, or \\x escapes if it is not whole UTF-8."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return piece.decode("utf-8", errors="backslashreplace")


def find_stop(text: str, stops: Sequence[str], start: int = 0) -> int | None:
    """Index of the earliest stop string that begins at or after `start`, else None."""
    best: int | None = None
    for s in stops:
        i = text.find(s, start)
        if i >= 0 and (best is None or i < best):
            best = i
    return best
