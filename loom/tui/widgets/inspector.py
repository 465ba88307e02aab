"""The token inspector: the token under the cursor, its probability, entropy and alternatives."""

from __future__ import annotations

import math

from rich.style import Style
from rich.text import Text
from textual.color import Color
from textual.widgets import Static

from loom.tui.display import ProbabilityScale, bar, percent, prob_of, token_label
from loom.tui.widgets.reading_pane import PathText

BAR_WIDTH = 16


def inspector_text(path: PathText, index: int, scale: ProbabilityScale, background: Color) -> Text:
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
    if p is None:
        out.append("— (written by hand)", Style(italic=True))
    else:
        colour = scale.text_colour(p, background).rich_color
        out.append(percent(p).strip(), Style(color=colour, bold=True))
        out.append(f"  logprob {lp:.3f}")
    entropy = None if tokens.entropy is None else float(tokens.entropy[index])
    if entropy is not None and not math.isnan(entropy):
        out.append(f"   entropy {entropy:.2f} nats")
    out.append(f"   node #{node_id} token {index - start + 1}/{end - start}", Style(dim=True))
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


class TokenInspector(Static):
    """Hidden unless the reading pane has focus; the app feeds it the cursor position."""

    def show_token(
        self,
        path: PathText | None,
        index: int | None,
        scale: ProbabilityScale,
        background: Color,
    ) -> None:
        if path is None or index is None or index >= len(path):
            self.display = False
            return
        self.update(inspector_text(path, index, scale, background))
        self.display = True
