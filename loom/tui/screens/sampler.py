"""Sampler settings: pick a named preset, adjust its values, apply or save it to the config."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select

from loom.config import SamplerPreset
from loom.tui.screens.dialogs import DIALOG_CSS

FIELDS: tuple[tuple[str, str, type], ...] = (
    ("temperature", "temperature (0 = greedy)", float),
    ("top_k", "top-k (0 = off)", int),
    ("top_p", "top-p (1 = off)", float),
    ("min_p", "min-p (0 = off)", float),
    ("n", "children per generate (N)", int),
    ("max_tokens", "tokens per child", int),
)


@dataclass
class SamplerChoice:
    preset: SamplerPreset  # with n and max_tokens filled in
    save: bool  # also write it to the config file


class SamplerScreen(ModalScreen[SamplerChoice | None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel", id="dialog.cancel"),
        Binding("ctrl+s", "apply(True)", "Save preset", id="dialog.save"),
    ]
    DEFAULT_CSS = (
        DIALOG_CSS.format(cls="SamplerScreen")
        + """
    SamplerScreen .row { height: 3; }
    SamplerScreen .row Label { width: 28; padding: 1 1 0 0; }
    SamplerScreen .row Input { width: 1fr; }
    SamplerScreen #buttons { height: 3; align-horizontal: right; }
    SamplerScreen #sampler-error { color: $error; }
    """
    )

    def __init__(self, presets: dict[str, SamplerPreset], current: SamplerPreset) -> None:
        super().__init__()
        self._presets = presets
        self._current = current

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Sampler"
            with Horizontal(classes="row"):
                yield Label("preset")
                yield Select(
                    [(name, name) for name in self._presets] or [("default", "default")],
                    value=self._current.name
                    if self._current.name in self._presets
                    else Select.BLANK,
                    allow_blank=self._current.name not in self._presets,
                    id="preset",
                )
            with Horizontal(classes="row"):
                yield Label("save as name")
                yield Input(self._current.name, id="name")
            for key, label, _kind in FIELDS:
                with Horizontal(classes="row"):
                    yield Label(label)
                    yield Input(str(getattr(self._current, key)), id=key)
            yield Label("", id="sampler-error")
            with Horizontal(id="buttons"):
                yield Button("Apply", id="apply", variant="primary")
                yield Button("Save preset", id="save")
                yield Button("Cancel", id="cancel")

    @on(Select.Changed, "#preset")
    def _preset_picked(self, event: Select.Changed) -> None:
        preset = self._presets.get(str(event.value))
        if preset is None:
            return
        self.query_one("#name", Input).value = preset.name
        for key, _label, _kind in FIELDS:
            value = getattr(preset, key)
            if value is None:
                value = getattr(self._current, key)
            self.query_one(f"#{key}", Input).value = str(value)

    def _read(self) -> SamplerPreset | None:
        values: dict[str, float | int] = {}
        for key, label, kind in FIELDS:
            raw = self.query_one(f"#{key}", Input).value.strip()
            try:
                values[key] = kind(raw)
            except ValueError:
                self.query_one("#sampler-error", Label).update(f"{label}: {raw!r} is not a number")
                return None
        name = self.query_one("#name", Input).value.strip() or "custom"
        problems = []
        if values["temperature"] < 0:
            problems.append("temperature must be ≥ 0")
        if not 0 < values["top_p"] <= 1:
            problems.append("top-p must be in (0, 1]")
        if not 0 <= values["min_p"] < 1:
            problems.append("min-p must be in [0, 1)")
        if values["top_k"] < 0 or not 1 <= values["n"] <= 64 or values["max_tokens"] < 1:
            problems.append("top-k ≥ 0, N in 1..64, tokens ≥ 1")
        if problems:
            self.query_one("#sampler-error", Label).update("; ".join(problems))
            return None
        return replace(SamplerPreset(name), **values)  # type: ignore[arg-type]

    def action_apply(self, save: bool = False) -> None:
        preset = self._read()
        if preset is not None:
            self.dismiss(SamplerChoice(preset, save))

    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
        else:
            self.action_apply(save=event.button.id == "save")
