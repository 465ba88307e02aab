"""Persona colours as safe CSS/SVG colour values.

A persona's colour is free text from a TOML file or an imported loom ("green", "#ff00ff",
Textual's "ansi_bright_red"...). Exports write it into style and fill attributes, where a value
such as `url(http://…)` could make a viewer fetch something; so only plain hex colours and a
small table of names get through, and anything else falls back to a palette colour.
"""

from __future__ import annotations

import re

_HEX = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
# Terminal-ish names people write in persona files, as hex (Textual's ANSI names included).
NAMED: dict[str, str] = {
    "black": "#333333",
    "white": "#d9d9d9",  # pure white would vanish on the page
    "red": "#d62728",
    "green": "#2ca02c",
    "blue": "#1f77b4",
    "yellow": "#d4b106",
    "magenta": "#c71585",
    "cyan": "#17becf",
    "orange": "#ff7f0e",
    "purple": "#9467bd",
    "violet": "#8a2be2",
    "pink": "#e377c2",
    "brown": "#8c564b",
    "gray": "#7f7f7f",
    "grey": "#7f7f7f",
    "teal": "#008080",
    "olive": "#808000",
    "navy": "#000080",
    "maroon": "#800000",
    "lime": "#7ec850",
    "gold": "#daa520",
    "indigo": "#4b0082",
    "crimson": "#dc143c",
    "silver": "#a0a0a0",
    "coral": "#ff7f50",
    "salmon": "#fa8072",
    "turquoise": "#40e0d0",
}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#e377c2", "#8c564b")
UNLABELLED = "#9e9e9e"


def safe_colour(value: str, index: int = 0) -> str:
    """A `#rrggbb`-style colour for `value`; palette colour number `index` if unrecognised."""
    text = value.strip()
    if _HEX.fullmatch(text):
        return text.lower()
    name = text.lower().replace(" ", "_")
    for prefix in ("ansi_", "bright_", "light_", "dark_"):
        name = name.removeprefix(prefix)
    return NAMED.get(name, PALETTE[index % len(PALETTE)])


def fresh_colour(used: set[str] | list[str]) -> str:
    """A palette colour no persona uses yet (for labels outside the persona set)."""
    taken = set(used)
    for colour in PALETTE:
        if colour not in taken:
            return colour
    return PALETTE[len(taken) % len(PALETTE)]
