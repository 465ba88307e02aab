"""The census panel: how often each persona comes next from a node (or after each alternative at
one of its tokens), with 95 % intervals, and the rollouts behind the figures, any of which can be
promoted into the tree.

The census runs in this screen's worker (the Session holds the engine lock); its result comes
back as a message, and the app's `save` callback writes it on the UI thread before it is shown.
Esc during a run cancels it and keeps the completed rollouts; esc again closes the panel.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList, ProgressBar, Static
from textual.widgets.option_list import Option

from loom.app.census import UNDECIDED, CensusResult, TransitionTable
from loom.text import cut, one_line
from loom.tui.display import bar, percent, token_label
from loom.tui.messages import CensusDone, CensusProgress

SHARE_BAR = 20
ROLLOUT_CHARS = 80  # of a rollout's text in its line of the list
RunCensus = Callable[[threading.Event, Callable[[int, int], None]], CensusResult]


def census_text(result: CensusResult, colours: dict[str, str]) -> Text:
    """The census as a table per outcome: share bar with its interval, figures beside it."""
    settings = result.settings
    out = Text(no_wrap=True, overflow="ellipsis")
    where = f"node #{result.node_id}"
    if result.token_index is not None:
        where += f", token {result.token_index + 1} of it"
    out.append(f"{where} · {settings.rollouts} rollouts × {settings.tokens} tokens · "
               f"seed {result.seed}", Style(dim=True))  # fmt: skip
    if result.cancelled:
        out.append(" · cancelled: the rollouts completed so far", Style(italic=True))
    for outcome in result.outcomes:
        census = outcome.census
        out.append("\n")
        if outcome.token_id is not None:
            out.append(f"\nafter {token_label(outcome.text)} (p {percent(outcome.p).strip()})",
                       Style(bold=True))  # fmt: skip
        out.append(f"\n{'persona':<12} {'share':<{SHARE_BAR}}       95% interval   posterior"
                   "  loop/collapse logprob", Style(dim=True))  # fmt: skip
        for name, share in census.shares.items():
            colour = None if name == UNDECIDED else colours.get(name)
            out.append(f"\n{one_line(name)[:12]:<12} ", Style(color=colour, bold=True))
            # the share, and (dim) how far its interval reaches beyond it
            filled = bar(share.share, SHARE_BAR).rstrip()
            reach = max(0, round(share.high * SHARE_BAR) - len(filled))
            out.append(filled, Style(color=colour))
            out.append("░" * reach, Style(color=colour, dim=True))
            out.append(" " * (SHARE_BAR - len(filled) - reach))
            out.append(f" {percent(share.share)}  [{percent(share.low).strip():>4} – "
                       f"{percent(share.high).strip():>4}]")  # fmt: skip
            out.append(f"   {share.mean_posterior:8.2f}")
            out.append(f"   {percent(share.collapse):>11}")
            logprob = "" if share.mean_logprob is None else f"{share.mean_logprob:7.2f}"
            out.append(f"   {logprob}")
    return out


def rollout_options(result: CensusResult, colours: dict[str, str]) -> list[tuple[Text, int, int]]:
    """One line per rollout: (label, outcome index, rollout index)."""
    options = []
    several = len(result.outcomes) > 1
    for o, outcome in enumerate(result.outcomes):
        for r, rollout in enumerate(outcome.census.rollouts):
            line = Text(no_wrap=True, overflow="ellipsis")
            if several:
                line.append(f"{token_label(outcome.text)[:10]:<10} ", Style(dim=True))
            colour = None if rollout.label == UNDECIDED else colours.get(rollout.label)
            line.append(f"{one_line(rollout.label)[:11]:<11} ", Style(color=colour, bold=True))
            p = rollout.posterior.get(rollout.label)
            line.append(f"{percent(p)} " if p is not None else "     ", Style(dim=True))
            marks = ("↻" if rollout.repetition else " ") + ("⚠" if rollout.collapse else " ")
            line.append(marks + " ")
            # one line each (the option list wraps what is longer than the panel)
            line.append(cut(one_line(rollout.text), ROLLOUT_CHARS))
            options.append((line, o, r))
    return options


class CensusScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Cancel / close", id="census.close"),
        Binding("enter,p", "promote", "Promote rollout", id="census.promote"),
        Binding("r", "rerun", "New census", id="census.rerun"),
    ]
    DEFAULT_CSS = """
    CensusScreen { align: center middle; }
    CensusScreen > Vertical {
        width: 100%; height: 100%; border: round $primary; background: $panel; padding: 0 1;
    }
    CensusScreen #census-table { height: auto; max-height: 60%; }
    CensusScreen OptionList { height: 1fr; }
    CensusScreen .hint { color: $text-muted; }
    """

    def __init__(
        self,
        title: str,
        colours: dict[str, str],
        *,
        run: RunCensus,
        save: Callable[[CensusResult], bool | None],
        promote: Callable[[CensusResult, int, int], None],
        shown: CensusResult | None = None,
    ) -> None:
        """`shown`: a stored census to show (r runs a new one); else a census starts at once.
        `save` writes a finished census (falsy: it could not be written, and is not shown)."""
        super().__init__()
        self._title = title
        self._colours = colours
        self._run_census = run
        self._save = save
        self._promote = promote
        self.result: CensusResult | None = shown
        self.running = False
        self._cancel = threading.Event()
        self._rows: list[tuple[int, int]] = []

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = self._title
            yield ProgressBar(total=None, show_eta=False, id="census-progress")
            yield Static(Text("running the census…", style=Style(italic=True)),
                         id="census-table")  # fmt: skip
            yield OptionList(id="census-rollouts")
            yield Label(
                "↑↓ rollouts · enter/p promote into the tree · r new census · esc cancel/close",
                classes="hint",
            )

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()
        if self.result is not None:
            self._show(self.result)
        else:
            self._start()

    # ----------------------------------------------------------------- running

    def _start(self) -> None:
        self.running = True
        self._cancel = threading.Event()
        bar_widget = self.query_one(ProgressBar)
        bar_widget.display = True
        bar_widget.update(total=None, progress=0)
        self._worker(self._cancel)

    @work(thread=True, group="census", exit_on_error=False)
    def _worker(self, cancel: threading.Event) -> None:
        def progress(done: int, total: int) -> None:
            self.post_message(CensusProgress(done, total))

        try:
            result = self._run_census(cancel, progress)
        except Exception as exc:  # reported on the UI thread
            self.post_message(CensusDone(None, exc))
        else:
            self.post_message(CensusDone(result, None))

    def on_census_progress(self, message: CensusProgress) -> None:
        self.query_one(ProgressBar).update(total=message.total, progress=message.done)

    def on_census_done(self, message: CensusDone) -> None:
        self.running = False
        self.query_one(ProgressBar).display = False
        if message.error is not None or message.result is None:
            self.app.notify(str(message.error), severity="error", title="Census failed")
            if self.result is None:
                self.dismiss(None)
            return
        result = message.result
        if not result.outcomes[0].census.rollouts:
            self.app.notify("cancelled before the first batch: nothing to keep", timeout=3)
            if self.result is None:
                self.dismiss(None)
            return
        if self._save(result):  # written first, then shown
            self._show(result)

    def _show(self, result: CensusResult) -> None:
        self.result = result
        self.query_one("#census-table", Static).update(census_text(result, self._colours))
        options = rollout_options(result, self._colours)
        listing = self.query_one(OptionList)
        listing.clear_options()
        listing.add_options([Option(label) for label, _o, _r in options])
        self._rows = [(o, r) for _label, o, r in options]
        if options:
            listing.highlighted = 0

    # ----------------------------------------------------------------- keys

    def action_promote(self) -> None:
        highlighted = self.query_one(OptionList).highlighted
        if self.result is None or highlighted is None or not self._rows:
            return
        outcome, rollout = self._rows[highlighted]
        self._promote(self.result, outcome, rollout)

    @on(OptionList.OptionSelected)
    def _selected(self, _event: OptionList.OptionSelected) -> None:
        self.action_promote()

    def action_rerun(self) -> None:
        if not self.running:
            self.query_one("#census-table", Static).update(
                Text("running a new census…", style=Style(italic=True))
            )
            self._start()

    def action_close(self) -> None:
        if self.running:
            self._cancel.set()  # the worker returns the completed rollouts, which are kept
            self.app.notify("cancelling: the completed rollouts are kept", timeout=2)
            return
        self.dismiss(None)


def transition_text(table: TransitionTable, tokens: int, colours: dict[str, str]) -> Text:
    """Rows: the label of a node; cells: the share of its rollouts labelled with each persona."""
    out = Text(no_wrap=True, overflow="ellipsis")
    out.append(f"of the rollouts of the labelled nodes, {tokens} tokens on\n", Style(dim=True))
    for source in table.nodes:
        row = table.row(source)
        nodes = len(table.nodes[source])
        out.append(f"\nfrom {source}", Style(color=colours.get(source), bold=True))
        out.append(f"  ({nodes} node(s), {row[0].n if row else 0} rollouts)", Style(dim=True))
        for cell in row:
            low, high = cell.interval
            colour = None if cell.target == UNDECIDED else colours.get(cell.target)
            out.append(f"\n  → {one_line(cell.target)[:12]:<12} ", Style(color=colour))
            out.append(bar(cell.share, SHARE_BAR), Style(color=colour))
            out.append(f" {percent(cell.share)}  [{percent(low).strip()} – "
                       f"{percent(high).strip()}]  {cell.count}/{cell.n}")  # fmt: skip
    if not table.nodes:
        out.append("\nno labelled nodes here", Style(italic=True))
    return out
