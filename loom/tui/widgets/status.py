"""The status bar (model, speed, context, file, saved state) and the probability legend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.color import Color
from textual.widget import Widget

from loom.tui.display import ProbabilityScale
from loom.tui.widgets.reading_pane import SHADE_ALPHA


@dataclass
class StatusInfo:
    model: str = ""
    model_note: str = ""  # "loading 42%", "no model: …"
    second: str = ""  # the second model's name (or "loading…")
    tokens_per_second: float | None = None
    context_used: int = 0
    context_total: int = 0
    loom_file: str = ""
    saved: str = "saved"
    sort: str = "created"
    preset: str = ""
    job: str = ""  # model work under way (a fork map, guided growth …), shown first
    memory: str = ""  # the hidden context in effect at the current node ("" none)
    blind: bool = False  # blind reading: the model's name is hidden
    hoist: str = ""  # the hoisted node ("#9"), if any
    filter: str = ""  # the child filter ("mean ≥ -1.50 (22%)"), if any


def status_text(info: StatusInfo) -> Text:
    out = Text(no_wrap=True, overflow="ellipsis")
    dim = Style(dim=True)
    if info.job:
        out.append(f" {info.job} ", Style(bold=True, reverse=True))
        out.append("  ", dim)
    if info.blind:
        out.append(" BLIND ", Style(bold=True, reverse=True))
        out.append("  ", dim)
    out.append("model ", dim)
    if info.blind:
        out.append("hidden", Style(italic=True))
    elif info.model:
        out.append(info.model, Style(bold=True))
    if info.model_note and not info.blind:
        out.append((" " if info.model else "") + info.model_note, Style(italic=True))
    if info.second:
        out.append(" + 2nd ", dim)
        out.append(info.second, Style(bold=True))
    out.append("  ·  ", dim)
    speed = "–" if info.tokens_per_second is None else f"{info.tokens_per_second:.0f}"
    out.append(f"{speed} tok/s", Style())
    out.append("  ·  ctx ", dim)
    total = str(info.context_total) if info.context_total else "?"
    out.append(f"{info.context_used}/{total}")
    if info.memory:
        out.append("  ·  ", dim)
        out.append(f"memory: {info.memory}", Style(bold=True, italic=True))
    if info.preset:
        out.append("  ·  preset ", dim)
        out.append(info.preset)
    if info.sort != "created":
        out.append("  ·  sort ", dim)
        out.append(info.sort)
    if info.filter:
        out.append("  ·  filter ", dim)
        out.append(info.filter, Style(bold=True))
    if info.hoist:
        out.append("  ·  hoisted ", dim)
        out.append(info.hoist, Style(bold=True))
    out.append("  ·  ", dim)
    out.append(info.loom_file)
    out.append("  ·  ", dim)
    out.append(info.saved, Style(bold=True))
    return out


class StatusBar(Widget):
    """One line; redrawn in place (no layout pass) when its information changes."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.info = StatusInfo()

    def show(self, **changes: object) -> None:
        changed = False
        for key, value in changes.items():
            if getattr(self.info, key) != value:
                setattr(self.info, key, value)
                changed = True
        if changed:
            self.refresh()

    def render(self) -> Text:
        return status_text(self.info)


ModelKey = tuple[str, str, str]  # (chip, colour, role: "primary", "second" or "")


def legend_text(
    scale: ProbabilityScale,
    shading: bool,
    background: Color,
    width: int = 20,
    blind: bool = False,
    models: Sequence[ModelKey] = (),
) -> Text:
    """The colour scale as the reading pane draws it (blended into the pane's background);
    with several models, which colour is which model instead of the reminders (never in blind
    reading)."""
    out = Text(no_wrap=True, overflow="ellipsis")
    if blind:
        out.append("blind reading: probabilities, models and personas hidden (B)", Style(dim=True))
        return out
    if not shading:
        out.append("shading off (v)", Style(dim=True))
        if models:
            out.append_text(_models_text(models))
        return out
    out.append("p 0 ", Style(dim=True))
    for i in range(width):
        shade = background.blend(scale.colour(i / (width - 1)), SHADE_ALPHA)
        out.append(" ", Style(bgcolor=shade.rich_color))
    out.append(" 1", Style(dim=True))
    if models:
        out.append_text(_models_text(models))
        return out
    out.append("  · hand-written text unshaded · current node bold", Style(dim=True))
    return out


def _models_text(models: Sequence[ModelKey]) -> Text:
    """Each model's colour and chip, the loaded ones marked 1st (primary) and 2nd: short, for
    it shares the legend's one line with the scale."""
    out = Text("  ·", Style(dim=True))
    for chip, colour, role in models:
        out.append(" ■ ", Style(color=colour))
        out.append(chip, Style(color=colour, bold=True))
        if role:
            out.append(" 2nd" if role == "second" else " 1st", Style(dim=True))
    return out


class Legend(Widget):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._text = Text()
        self.models: list[ModelKey] = []  # set by the app when the loom has several models

    def show(
        self, scale: ProbabilityScale, shading: bool, background: Color, *, blind: bool = False
    ) -> None:
        self._text = legend_text(scale, shading, background, blind=blind, models=self.models)
        self.refresh()

    def render(self) -> Text:
        return self._text
