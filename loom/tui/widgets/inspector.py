"""The token inspector: the token under the cursor, its probability, entropy and alternatives."""

from __future__ import annotations

import math

from rich.style import Style
from rich.text import Text
from textual.color import Color
from textual.widgets import Static

from loom.app.census import UNDECIDED
from loom.app.forks import FORKING_TV, ForkPoint
from loom.text import one_line
from loom.tui.display import ProbabilityScale, bar, percent, prob_of, token_label
from loom.tui.widgets.reading_pane import PathText

BAR_WIDTH = 16
OUTCOME_BAR_WIDTH = 4  # an outcome's personas share one line of the inspector


def fork_text(point: ForkPoint, names: tuple[str, ...], colours: dict[str, str]) -> Text:
    """A fork map's finding at one token: the persona outcome after each token it tried."""
    divergence = point.divergence(names)
    out = Text(no_wrap=True, overflow="ellipsis")
    verdict = "a forking token" if divergence >= FORKING_TV else "not a forking token"
    out.append(f"\nfork map: {verdict} (total variation {divergence:.2f})", Style(bold=True))
    for outcome in point.outcomes:
        out.append("\n")
        out.append(f"{token_label(outcome.text)[:14]:<14} {percent(outcome.p)} ")
        out.append(f"n={outcome.n:<3}", Style(dim=True))
        for name, share in outcome.distribution(names).items():
            if name == UNDECIDED and not share:
                continue
            colour = colours.get(name)
            out.append(f" {name} ", Style(color=colour, bold=True))
            out.append(bar(share, OUTCOME_BAR_WIDTH), Style(color=colour))
            out.append(percent(share).strip())
        if outcome is point.sampled:
            out.append("  ← in the text", Style(dim=True))
    return out


def inspector_text(
    path: PathText,
    index: int,
    scale: ProbabilityScale,
    background: Color,
    writer: tuple[str, str] | None = None,
) -> Text:
    """The token at `index`; `writer`: the model that wrote its node and that model's colour
    ("" when the loom has one model), None for human-written text."""
    tokens = path.tokens
    node_id = path.owners[index]
    start, end = path.node_spans[node_id]
    lp = float(tokens.logprobs[index])
    p = prob_of(lp)
    out = Text(no_wrap=True, overflow="ellipsis")
    out.append("token ", Style(dim=True))
    out.append(token_label(tokens.texts[index]), Style(bold=True))
    out.append(f"  id {int(tokens.ids[index])}", Style(dim=True))
    out.append("   p ")
    reader = path.reader_at(index)
    if p is None:
        out.append("— (not read by a model yet: S reads it)", Style(italic=True))
    else:
        colour = scale.text_colour(p, background).rich_color
        out.append(percent(p).strip(), Style(color=colour, bold=True))
        out.append(f"  logprob {lp:.3f}")
    entropy = None if tokens.entropy is None else float(tokens.entropy[index])
    if entropy is not None and not math.isnan(entropy):
        out.append(f"   entropy {entropy:.2f} nats")
    out.append(f"   node #{node_id} token {index - start + 1}/{end - start}", Style(dim=True))
    if writer is not None:
        out.append("   by ", Style(dim=True))
        out.append(one_line(writer[0], 40), Style(color=writer[1] or None, bold=True))
    if reader is not None:
        out.append(f"\nread by the model {reader}, not sampled", Style(italic=True))
    alternatives = tokens.top(index)
    if not alternatives:
        out.append("\nno alternatives recorded for this token", Style(dim=True, italic=True))
        return out
    chosen = int(tokens.ids[index])
    for rank, alt in enumerate(alternatives, 1):
        alt_p = math.exp(alt.logprob)
        out.append("\n")
        out.append(f"{rank} " if rank <= 9 else "  ", Style(bold=True))
        colour = scale.text_colour(alt_p, background).rich_color
        out.append(bar(alt_p, BAR_WIDTH), Style(color=colour))
        out.append(f" {percent(alt_p)} ")
        out.append(token_label(alt.text), Style(bold=alt.id == chosen))
        if alt.id == chosen:
            out.append("  ← in the text", Style(dim=True))
    out.append(
        "\n1-9 branch with that token · enter choose · ←→↑↓ move · esc leave", Style(dim=True)
    )
    return out


def blind_inspector_text(path: PathText, index: int) -> Text:
    """Blind reading: the token and where it is, nothing of its probability or alternatives."""
    node_id = path.owners[index]
    start, end = path.node_spans[node_id]
    out = Text(no_wrap=True, overflow="ellipsis")
    out.append("token ", Style(dim=True))
    out.append(token_label(path.tokens.texts[index]), Style(bold=True))
    out.append(f"   node #{node_id} token {index - start + 1}/{end - start}", Style(dim=True))
    out.append("\nblind reading: probabilities and alternatives hidden (B shows them)",
               Style(dim=True, italic=True))  # fmt: skip
    return out


class TokenInspector(Static):
    """Hidden unless the reading pane has focus; the app feeds it the cursor position."""

    def show_token(
        self,
        path: PathText | None,
        index: int | None,
        scale: ProbabilityScale,
        background: Color,
        fork: tuple[ForkPoint, tuple[str, ...], dict[str, str]] | None = None,
        *,
        blind: bool = False,
        writer: tuple[str, str] | None = None,
    ) -> None:
        """`fork`: the fork map's point at this token, the persona names and their colours;
        `writer`: the model that wrote the token's node, and its colour."""
        if path is None or index is None or index >= len(path):
            self.display = False
            return
        if blind:
            self.update(blind_inspector_text(path, index))
            self.display = True
            return
        text = inspector_text(path, index, scale, background, writer)
        if fork is not None:
            text.append_text(fork_text(*fork))
        self.update(text)
        self.display = True
