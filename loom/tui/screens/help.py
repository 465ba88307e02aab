"""F1 help: every action with the keys bound to it *now* (after the user's keymap)."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any, ClassVar

from rich.console import Group
from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen
from textual.widgets import Static

from loom.tui.keymap import LoomAction


def live_keys(app: App[Any], namespaces: Iterable[DOMNode]) -> dict[str, list[str]]:
    """binding id → the keys (as displayed) that trigger it in these namespaces, keymap applied."""
    keys: dict[str, list[str]] = {}
    for node in namespaces:
        bindings_map = node._bindings.copy()
        bindings_map.apply_keymap(app._keymap)
        for _key, binding in bindings_map:
            if binding.id is None:
                continue
            shown = keys.setdefault(binding.id, [])
            display = app.get_key_display(binding)
            if display not in shown:
                shown.append(display)
    return keys


def help_text(actions: Iterable[LoomAction], keys: dict[str, list[str]]) -> Group:
    """One table per group: key(s) · what it does · binding id (for [keymap])."""
    parts: list[Table | Text] = []
    by_group: dict[str, list[LoomAction]] = {}
    for action in actions:
        by_group.setdefault(action.group, []).append(action)
    for group, members in by_group.items():
        table = Table(box=None, expand=True, show_header=False, padding=(0, 1))
        table.add_column("keys", width=14, no_wrap=True, style="bold")
        table.add_column("does", ratio=1)
        table.add_column("id", width=24, no_wrap=True, style="dim")
        for action in members:
            table.add_row(
                Text(", ".join(keys.get(action.id, [])) or "(unbound)"),
                Text(action.help),
                Text(action.id),
            )
        parts.append(Text(group, style=Style(bold=True, underline=True)))
        parts.append(table)
        parts.append(Text(""))
    parts.append(
        Text(
            'Rebind any key in the config file\'s [keymap] table: "binding-id" = "key".\n'
            "Every action is also in the command palette (ctrl+p).",
            style=Style(italic=True),
        )
    )
    return Group(*parts)


def help_plain_text(group: Group) -> str:
    """The help as plain text (tests read it)."""
    from rich.console import Console

    console = Console(width=120, record=True, file=io.StringIO())
    console.print(group)
    return console.export_text()


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,q", "dismiss", "Close", show=False),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 100%; height: 100%;
        border: round $primary; background: $panel; padding: 0 1;
    }
    """

    def __init__(self, text: Group) -> None:
        super().__init__()
        self.help_group = text

    def compose(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            scroll.border_title = "loom keys — esc closes"
            yield Static(self.help_group, id="help-text")
