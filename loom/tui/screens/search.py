"""Search the loom (the store's full-text index) and jump to a hit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from loom.text import one_line
from loom.tui.screens.dialogs import DIALOG_CSS


class SearchScreen(ModalScreen[int | None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel", id="dialog.cancel"),
        Binding("down", "focus_results", "Results", show=False),
    ]
    DEFAULT_CSS = (
        DIALOG_CSS.format(cls="SearchScreen")
        + """
    SearchScreen OptionList { height: auto; max-height: 20; }
    """
    )

    def __init__(self, search: Callable[[str], list[Any]], query: str = "") -> None:
        super().__init__()
        self._search = search
        self._query = query
        self._hit_ids: list[int] = []

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Search"
            yield Input(self._query, placeholder="words to find (full-text)", id="search-input")
            yield OptionList(id="search-results")
            yield Label(
                "enter search · ↓ results · enter jump · esc close",
                classes="hint",
                id="search-status",
            )

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def _run(self, event: Input.Submitted) -> None:
        results = self.query_one(OptionList)
        results.clear_options()
        query = event.value.strip()
        if not query:
            return
        try:
            hits = self._search(query)
        except Exception as exc:  # a malformed FTS query is the user's typo, not a crash
            self.query_one("#search-status", Label).update(Text(f"search failed: {exc}"))
            return
        self._hit_ids = [int(h.node_id) for h in hits]
        for hit in hits:
            label = Text(f"#{hit.node_id}  ", style="bold")
            label.append(one_line(str(hit.snippet), 200))
            results.add_option(Option(label))
        self.query_one("#search-status", Label).update(
            Text(f"{len(hits)} result{'s' if len(hits) != 1 else ''} · ↓ then enter to jump")
        )
        if hits:
            results.highlighted = 0
            results.focus()

    def action_focus_results(self) -> None:
        self.query_one(OptionList).focus()

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self._hit_ids[event.option_index])
