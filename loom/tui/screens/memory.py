"""The memory dialog (`Y`): hidden context of the current node or of the whole loom.

The text, where it is placed (before the path, or as an author's note K tokens from its end) and
for what (this node and its descendants, or every path). ctrl+s keeps, ctrl+d clears, escape
leaves everything as it was; the app writes the result (one undo step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, RadioButton, RadioSet, TextArea

from loom.store.model import Memory
from loom.tui.screens.dialogs import DIALOG_CSS


@dataclass(frozen=True)
class MemoryEdit:
    """What the dialog asks for: `memory` kept on `node` (None: the loom); `memory` None clears."""

    node: int | None
    memory: Memory | None


class MemoryScreen(ModalScreen[MemoryEdit | None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Keep", id="memory.save"),
        # priority: the text area would take ctrl+d as "delete right"
        Binding("ctrl+d", "clear", "Clear", id="memory.clear", priority=True),
        Binding("escape", "dismiss(None)", "Cancel", id="memory.cancel"),
    ]
    DEFAULT_CSS = (
        DIALOG_CSS.format(cls="MemoryScreen")
        + """
    MemoryScreen TextArea { height: 10; }
    MemoryScreen RadioSet { width: 100%; }
    MemoryScreen Input { width: 100%; }
    """
    )

    def __init__(
        self,
        node_id: int,
        node_memory: Memory | None,
        loom_memory: Memory | None,
        in_effect: str,
        inherited: Memory | None = None,
    ) -> None:
        """`inherited`: the memory of the nearest ancestor that has one (its `node` says which),
        offered for editing where it is kept."""
        super().__init__()
        self.node_id = node_id
        self._kept: dict[int | None, Memory | None] = {node_id: node_memory, None: loom_memory}
        self._source = inherited.node if inherited is not None else None
        if self._source is not None:
            self._kept[self._source] = inherited
        # The memory a person came to edit: the node's own, else the one it inherits, else the
        # loom's; with none at all, the node's.
        if node_memory is not None or (self._source is None and loom_memory is None):
            self.scope: int | None = node_id
        else:
            self.scope = self._source if self._source is not None else None
        self._in_effect = in_effect

    def compose(self) -> ComposeResult:
        memory = self._kept[self.scope]
        with Vertical() as box:
            box.border_title = "Memory: text the model reads, the tree does not show"
            yield Label(f"in effect here: {self._in_effect or 'none'}", classes="hint")
            with RadioSet(id="memory-scope"):
                yield RadioButton(
                    f"node #{self.node_id} and its descendants",
                    value=self.scope == self.node_id,
                    id="scope-node",
                )
                if self._source is not None:
                    yield RadioButton(
                        f"node #{self._source}, whose memory this node inherits",
                        value=self.scope == self._source,
                        id="scope-inherited",
                    )
                yield RadioButton("the whole loom", value=self.scope is None, id="scope-loom")
            area = TextArea(
                "" if memory is None else memory.text,
                id="memory-text",
                soft_wrap=True,
                show_line_numbers=False,
            )
            area.cursor_blink = False
            yield area
            yield Input(
                "" if memory is None or memory.depth is None else str(memory.depth),
                placeholder="empty: before the path · K: an author's note K tokens from the end",
                id="memory-depth",
            )
            yield Label(
                "read exactly as written: end it with a newline to set it apart\n"
                "ctrl+s keep · ctrl+d clear · esc cancel",
                classes="hint",
            )

    def on_mount(self) -> None:
        area = self.query_one(TextArea)
        area.focus()
        area.move_cursor(area.document.end)

    @on(RadioSet.Changed, "#memory-scope")
    def _scope_changed(self, event: RadioSet.Changed) -> None:
        scopes = {"scope-node": self.node_id, "scope-inherited": self._source}
        self.scope = scopes.get(event.pressed.id or "")
        memory = self._kept[self.scope]
        self.query_one(TextArea).text = "" if memory is None else memory.text
        depth = "" if memory is None or memory.depth is None else str(memory.depth)
        self.query_one("#memory-depth", Input).value = depth

    def action_save(self) -> None:
        text = self.query_one(TextArea).text
        raw = self.query_one("#memory-depth", Input).value.strip()
        if raw and not (raw.isdigit() and raw.isascii()):
            self.notify(
                f"the depth is a number of tokens (or empty), not {raw!r}", severity="error"
            )
            return
        if not text:
            self.dismiss(MemoryEdit(self.scope, None))  # an emptied memory is a cleared one
            return
        self.dismiss(MemoryEdit(self.scope, Memory(text, int(raw) if raw else None)))

    def action_clear(self) -> None:
        self.dismiss(MemoryEdit(self.scope, None))
