"""Making model text safe and legible on a terminal, and the probability colour scale.

Model text is untrusted: an escape sequence or a `[markup]` tag in it must never act. Everything
shown goes through loom.text's policy (what is not printable becomes a visible escape) and is put
on screen as rich `Text` built from plain strings, never parsed as markup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.text import Text
from textual.color import Color

from loom.text import inert as shown
from loom.text import one_line

TAB = "    "  # the reading pane needs predictable cell widths


def inert(text: str) -> str:
    """`loom.text.inert` for the screen: tabs as spaces."""
    return shown(text).replace("\t", TAB)


def token_label(text: str) -> str:
    """How one token is named in lists: quoted, with its spaces, tabs and newlines visible."""
    visible = shown(text).replace("\t", "⇥").replace("\n", "↵").replace(" ", "·")
    return "‹" + visible + "›"


def plain(text: str) -> Text:
    """Rich Text that is exactly `text` made inert, on one line: no markup, emoji codes, escapes."""
    return Text(one_line(text), no_wrap=True)


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
