"""Small modal dialogs: a text editor, a one-line prompt, a list to choose from, a message."""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static, TextArea
from textual.widgets.option_list import Option

T = TypeVar("T")

DIALOG_CSS = """
{cls} {{ align: center middle; }}
{cls} > Vertical {{
    width: 90; max-width: 95%; height: auto; max-height: 90%;
    border: round $primary; background: $panel; padding: 0 1;
}}
{cls} .hint {{ color: $text-muted; }}
"""


class TextEditScreen(ModalScreen[str | None]):
    """Edit (or write) a node's text. ctrl+s keeps it, escape throws it away."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Keep", id="dialog.save"),
        Binding("escape", "dismiss(None)", "Cancel", id="dialog.cancel"),
    ]
    DEFAULT_CSS = (
        DIALOG_CSS.format(cls="TextEditScreen")
        + """
    TextEditScreen TextArea { height: 14; }
    """
    )

    def __init__(self, title: str, text: str = "") -> None:
        super().__init__()
        self._title = title
        self._text = text

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = self._title
            area = TextArea(self._text, id="editor", soft_wrap=True, show_line_numbers=False)
            area.cursor_blink = False
            yield area
            yield Label("ctrl+s keep · esc cancel", classes="hint")

    def on_mount(self) -> None:
        area = self.query_one(TextArea)
        area.focus()
        area.move_cursor(area.document.end)

    def action_save(self) -> None:
        self.dismiss(self.query_one(TextArea).text)


class PromptScreen(ModalScreen[str | None]):
    """One line of input; enter accepts, escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel", id="dialog.cancel"),
    ]
    DEFAULT_CSS = DIALOG_CSS.format(cls="PromptScreen")

    def __init__(self, title: str, value: str = "", placeholder: str = "", hint: str = "") -> None:
        super().__init__()
        self._title, self._value, self._placeholder, self._hint = title, value, placeholder, hint

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = self._title
            yield Input(self._value, placeholder=self._placeholder, id="prompt-input")
            yield Label(self._hint or "enter accept · esc cancel", classes="hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)


class ChoiceScreen(ModalScreen[T | None], Generic[T]):
    """Pick one of a list. Options are (rich Text label, value); labels are never markup."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel", id="dialog.cancel"),
    ]
    DEFAULT_CSS = (
        DIALOG_CSS.format(cls="ChoiceScreen")
        + """
    ChoiceScreen OptionList { height: auto; max-height: 24; }
    """
    )

    def __init__(
        self, title: str, options: list[tuple[Text, T]], hint: str = "", initial: int = 0
    ) -> None:
        super().__init__()
        self._initial = initial
        self._title = title
        self._values = [value for _, value in options]
        self._labels = [label for label, _ in options]
        self._hint = hint

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = self._title
            yield OptionList(*(Option(label) for label in self._labels), id="choices")
            yield Label(self._hint or "enter choose · esc cancel", classes="hint")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.focus()
        if self._values:
            options.highlighted = min(self._initial, len(self._values) - 1)

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self._values[event.option_index])


class MessageScreen(ModalScreen[None]):
    """A read-only panel of text (branch statistics …); any of esc/enter/q closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter,q", "dismiss(None)", "Close", id="dialog.close"),
    ]
    DEFAULT_CSS = DIALOG_CSS.format(cls="MessageScreen")

    def __init__(self, title: str, text: Text) -> None:
        super().__init__()
        self._title, self._text = title, text

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = self._title
            with VerticalScroll():
                yield Static(self._text, id="message-text")
            yield Label("esc close", classes="hint")
