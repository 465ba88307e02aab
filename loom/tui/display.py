"""Making model text safe and legible on a terminal, and the probability colour scale.

Model text is untrusted: an escape sequence or a `[markup]` tag in it must never act. Everything
shown goes through `inert` (control characters become visible pictures) and is put on screen as
rich `Text` built from plain strings, never parsed as markup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.text import Text
from textual.color import Color

# Bidirectional overrides and isolates can reorder what follows them on screen.
_BIDI_CONTROLS = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A)) | {0x200E, 0x200F}


def _picture(code: int) -> str:
    if code < 0x20:
        return chr(0x2400 + code)  # ␀ … ␟, the Unicode control pictures
    if code == 0x7F:
        return "␡"
    return "\ufffd"


# One translation table (str.translate runs in C): every control character to its stand-in.
_INERT = {code: _picture(code) for code in [*range(0x20), 0x7F, *range(0x80, 0xA0)]}
_INERT.update({code: "\ufffd" for code in _BIDI_CONTROLS})
_INERT[ord("\r")] = "␍"
_KEEP_NEWLINES = {**_INERT, ord("\n"): "\n"}
_FLAT = {**_INERT, ord("\n"): "↵"}


def inert(text: str, *, keep_newlines: bool = True, tab: str = "    ") -> str:
    """`text` with every control character replaced by a visible stand-in.

    Newlines stay newlines when `keep_newlines` (the reading pane wraps on them); tabs become
    spaces so that cell widths are predictable.
    """
    table = _KEEP_NEWLINES if keep_newlines else _FLAT
    if "\t" in text:
        text = text.replace("\t", tab)
    return text.translate(table)


def one_line(text: str, limit: int = 80) -> str:
    """A single-line preview: newlines shown as ↵, runs of spaces kept, cut at `limit` chars."""
    flat = inert(text, keep_newlines=False, tab=" ")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def token_label(text: str) -> str:
    """How one token is named in lists: quoted, with its spaces and newlines visible."""
    return "‹" + inert(text, keep_newlines=False, tab="⇥").replace(" ", "·") + "›"


def plain(text: str) -> Text:
    """Rich Text that is exactly `text` made inert: no markup, no emoji codes, no escapes."""
    return Text(inert(text, keep_newlines=False), no_wrap=True)


MIN_TEXT_CONTRAST = 0.3  # brightness difference below which coloured text is hard to read


@dataclass(frozen=True)
class ProbabilityScale:
    """Maps a probability to a colour: low at p=0, mid at p=0.5, high at p=1 (linear in p)."""

    low: Color
    mid: Color
    high: Color

    @classmethod
    def from_variables(cls, variables: dict[str, str]) -> ProbabilityScale:
        return cls(
            Color.parse(variables["prob-low"]),
            Color.parse(variables["prob-mid"]),
            Color.parse(variables["prob-high"]),
        )

    def colour(self, p: float) -> Color:
        p = min(1.0, max(0.0, p))
        if p < 0.5:
            return self.low.blend(self.mid, p * 2)
        return self.mid.blend(self.high, (p - 0.5) * 2)

    def text_colour(self, p: float, background: Color) -> Color:
        """The scale colour for text on `background`, pulled toward white or black where it
        would be too close to the background to read (cividis's dark blue on a dark theme)."""
        colour = self.colour(p)
        if abs(colour.brightness - background.brightness) >= MIN_TEXT_CONTRAST:
            return colour
        toward = Color(255, 255, 255) if background.brightness < 0.5 else Color(0, 0, 0)
        return colour.blend(toward, 0.55)


def prob_of(logprob: float) -> float | None:
    """The probability for a stored logprob, None where unknown (human tokens store NaN)."""
    if logprob is None or math.isnan(logprob):
        return None
    return math.exp(logprob)


def percent(p: float | None) -> str:
    if p is None:
        return "  — "
    if p >= 0.995:
        return "100%"
    if p < 0.01:
        return "<1% " if p > 0 else "  0%"
    return f"{p * 100:3.0f}%"


BAR_CHARS = " ▏▎▍▌▋▊▉█"


def bar(fraction: float, width: int) -> str:
    """A horizontal bar of `width` cells filled to `fraction`, with eighth-cell resolution."""
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    full, rest = divmod(eighths, 8)
    out = "█" * full + (BAR_CHARS[rest] if rest and full < width else "")
    return out.ljust(width)
