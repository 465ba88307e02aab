"""The persona panel: the current node's posterior per persona, its trajectory along the path,
and the tokens that moved it most. A view only: the numbers come from loom.personas."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.style import Style
from rich.text import Text
from textual.widgets import Static

from loom.app.models import UNDECIDED, UNLABELLED, PersonaComparison
from loom.personas.labels import effective_label
from loom.personas.scoring import TokenEvidence
from loom.personas.trajectory import Trajectory
from loom.store.views import NodeHeader
from loom.text import one_line
from loom.tui.display import percent
from loom.tui.widgets.tree_pane import COLLAPSE_GLYPH, MODE_COLLAPSE_GLYPH

BAR_WIDTH = 20
SPARK_WIDTH = 24
_SPARKS = "▁▂▃▄▅▆▇█"


def bar(p: float, width: int = BAR_WIDTH) -> str:
    filled = max(0, min(width, round(p * width)))
    return "█" * filled + "░" * (width - filled)


def sparkline(values: Sequence[float], width: int = SPARK_WIDTH) -> str:
    """0..1 values as block glyphs (the last `width`); unknown steps as a dot."""
    out = []
    for v in list(values)[-width:]:
        out.append("·" if math.isnan(v) else _SPARKS[max(0, min(7, int(v * 8)))])
    return "".join(out)


@dataclass
class PanelData:
    header: NodeHeader
    names: list[str]
    colours: dict[str, str]
    trajectory: Trajectory | None
    evidence: list[TokenEvidence] = field(default_factory=list)
    # How each model's branches below a node split among the personas, with each model's
    # (chip, colour): shown when the loom has several models.
    comparison: PersonaComparison | None = None
    model_chips: dict[str, tuple[str, str]] = field(default_factory=dict)


COMPARE_BAR = 6  # a share's bar in the model comparison (two models side by side)


def comparison_text(data: PanelData) -> Text:
    """Each persona's share of each model's labelled branches, the models side by side."""
    out = Text(no_wrap=True, overflow="ellipsis")
    comparison = data.comparison
    if comparison is None:
        return out
    splits = [s for s in comparison.splits if s.total]
    out.append(f"models below #{comparison.root}", Style(bold=True))
    scorer = comparison.scorer or "no model loaded"
    out.append(f" · labels by {one_line(scorer, 24)}\n", Style(dim=True))
    if not splits:
        out.append("no model-written branches here yet\n", Style(dim=True))
        return out
    width = max(len(n) for n in [*data.names, UNDECIDED, UNLABELLED])
    column = COMPARE_BAR + 6
    out.append(" " * (width + 1))
    for split in splits:
        chip, colour = data.model_chips.get(split.model, (split.model, ""))
        out.append(
            f"{one_line(chip, column - 1):<{column}}", Style(color=colour or None, bold=True)
        )
    out.append("\n")
    for name in data.names:
        out.append(f"{name:<{width}} ", Style(color=data.colours.get(name)))
        for split in splits:
            share = split.share(name)
            if share is None:
                out.append(f"{'—':<{column}}", Style(dim=True))
                continue
            out.append(bar(share, COMPARE_BAR), Style(color=data.colours.get(name)))
            out.append(f"{percent(share):>5} ")
        out.append("\n")
    for name in (UNDECIDED, UNLABELLED):
        if not any(split.counts.get(name) for split in splits):
            continue
        out.append(f"{name:<{width}} ", Style(dim=True))
        for split in splits:
            out.append(f"{split.counts.get(name, 0):<{column}}", Style(dim=True))
        out.append("\n")
    out.append(f"{'branches':<{width}} ", Style(dim=True))
    for split in splits:
        out.append(f"{split.total:<{column}}", Style(dim=True))
    out.append("\n")
    return out


def panel_text(data: PanelData) -> Text:
    h = data.header
    out = Text(no_wrap=True, overflow="ellipsis")
    out.append(f"Personas · node #{h.id}\n", Style(bold=True))
    if not data.names:
        out.append("This loom has no persona set: ctrl+l loads one.", Style(dim=True))
        return out
    name, source, confidence = effective_label(h)
    label = h.persona
    if h.manual_persona is not None:
        out.append("label ", Style(dim=True))
        out.append(f"{h.manual_persona}*", Style(color=data.colours.get(name or ""), bold=True))
        out.append(" (set by hand: always wins)\n")
    elif label is None:
        out.append("not labelled yet: r labels it\n", Style(dim=True))
    elif name is not None:
        out.append("label ", Style(dim=True))
        out.append(name, Style(color=data.colours.get(name), bold=True))
        out.append(f" ({source}, {percent(confidence)})\n")
    else:
        out.append(f"undecided (best {percent(confidence)})\n", Style(dim=True))
    marks = []
    if label is not None and label.collapse:
        marks.append(f"{COLLAPSE_GLYPH} collapse: the posterior jumped here")
    if label is not None and label.mode_collapse:
        marks.append(f"{MODE_COLLAPSE_GLYPH} mode collapse: a repetition loop ends here")
    for mark in marks:
        out.append(mark + "\n", Style(bold=True))
    posterior = label.posterior if label is not None else {}
    # The effective label first, then by posterior.
    order = sorted(data.names, key=lambda n: (n != name, -posterior.get(n, 0.0)))
    width = max(len(n) for n in data.names)
    for n in order:
        colour = data.colours.get(n)
        out.append(f"{n:<{width}} ", Style(color=colour, bold=n == name))
        if n in posterior:
            out.append(bar(posterior[n]), Style(color=colour))
            out.append(f" {percent(posterior[n])}")
        else:
            out.append("—", Style(dim=True))
        out.append("\n")
    traj = data.trajectory
    if traj is not None and len(traj.steps) > 1:
        out.append("path (root → here)\n", Style(dim=True))
        for n in order:
            series = traj.series(n)
            out.append(f"{n:<{width}} ", Style(color=data.colours.get(n)))
            out.append(sparkline(series), Style(color=data.colours.get(n)))
            last = series[-1] if series else math.nan
            out.append("" if math.isnan(last) else f" {percent(last)}")
            out.append("\n")
    if data.evidence:
        out.append("tokens that moved it most\n", Style(dim=True))
        for ev in data.evidence:
            llr = "∞" if math.isinf(ev.llr) else f"{ev.llr:+.2f}"
            out.append(f"  {one_line(ev.text, 16)!r} ", Style(bold=True))
            out.append(f"→ {ev.favours}", Style(color=data.colours.get(ev.favours)))
            out.append(f" over {ev.against} ({llr} nats)\n")
    elif label is not None or h.manual_persona is not None:
        out.append("score this node to see evidence (r)\n", Style(dim=True))
    if data.comparison is not None:
        out.append_text(comparison_text(data))
    return out


class PersonaPanel(Static):
    """Hidden until toggled (p); the app feeds it `PanelData` when the current node changes."""

    def show_data(self, data: PanelData) -> None:
        self.update(panel_text(data))
