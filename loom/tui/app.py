"""The loom app: the panes, every action, the command palette and F1 help (started by launch.py)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from pathlib import Path

from textual.app import SystemCommand
from textual.screen import Screen

from loom.app.session import Session
from loom.config import Config
from loom.tui.census import CensusActions
from loom.tui.editing import EditActions
from loom.tui.generation import GenerationActions
from loom.tui.keymap import APP_ACTIONS, TOKEN_ACTIONS
from loom.tui.personas import PersonaActions
from loom.tui.scoring import ScoringActions
from loom.tui.screens.help import HelpScreen, help_text, live_keys
from loom.tui.transfer import TransferActions
from loom.tui.viewing import ViewActions


class LoomApp(
    ViewActions,
    CensusActions,
    PersonaActions,
    GenerationActions,
    TransferActions,
    EditActions,
    ScoringActions,
):
    """`backend`: an engine already loaded (tests share one); otherwise, with `load_model`, the
    model (`model_path`, else the config's, else the default model) loads in a worker."""

    def __init__(
        self,
        session: Session,
        config: Config,
        *,
        model_path: Path | None = None,
        load_model: bool = True,
        notices: Iterable[str] = (),
    ) -> None:
        super().__init__(session, config)
        self._model_path = model_path
        self._load_model_on_mount = load_model and session.backend is None
        self._notices = list(notices)
        self.set_keymap(config.keymap)

    def after_mount(self) -> None:
        for notice in self._notices:
            self.notify(notice, timeout=8)
        self.show_models()  # the models that wrote the loom are told apart even without one
        if self.session.backend is None and self._load_model_on_mount and not self.session.readonly:
            self.load_model(self._model_path)
        elif self.session.backend is None:
            reason = self.session.generation_blocker() or "no model"
            self.status.show(model_note=f"none — {reason}")

    # ----------------------------------------------------------------- help and palette

    def action_help(self) -> None:
        namespaces = [self, self.screen, self.reading]
        keys = live_keys(self, namespaces)
        self.push_screen(HelpScreen(help_text((*APP_ACTIONS, *TOKEN_ACTIONS), keys)))

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """Every loom action, named as in F1 help, with the key bound to it now."""
        keys = live_keys(self, [self])
        for action in APP_ACTIONS:
            if action.id == "loom.palette":
                continue
            bound = ", ".join(keys.get(action.id, []))
            yield SystemCommand(
                action.title,
                # Palette help is rendered as markup: no square brackets in it.
                action.help + (f" · key {bound}" if bound else ""),
                partial(self.run_action, action.action),
            )
        yield from self._persona_commands()
        yield SystemCommand(
            "Unhoist all", "Tree: show the whole tree again, from the root",
            partial(self.run_action, "unhoist(True)"),
        )  # fmt: skip
        yield SystemCommand(
            "Clear child filter", "Tree: show every child again (K sets a filter)",
            partial(self.run_action, "child_filter_clear"),
        )  # fmt: skip
        yield SystemCommand(
            "Branch with an alternative token",
            "Token cursor: pick one of the alternatives at the cursor and branch",
            self._palette_branch,
        )

    def _persona_commands(self) -> Iterable[SystemCommand]:
        """The persona filter, one entry per persona of the loom."""
        for name in self.persona_names():
            yield SystemCommand(
                f"Show only persona {name}",
                f"Tree: only branches voicing {name} (unlabelled ones stay)",
                partial(self.action_persona_filter_only, name),
            )
            yield SystemCommand(
                f"Hide persona {name}",
                f"Tree: hide branches voicing {name}",
                partial(self.action_persona_filter_hide, name),
            )
        if self.persona_filter is not None or self.persona_names():
            yield SystemCommand(
                "Clear persona filter",
                "Tree: show every branch again",
                self.action_persona_filter_clear,
            )

    def _palette_branch(self) -> None:
        self.reading.focus()
        self.reading.action_branch()

    # ----------------------------------------------------------------- quitting

    async def action_quit(self) -> None:
        if self.generation is not None:
            # Keep what has been generated: the handler saves the partial branches, then exits.
            self.quit_after_generation = True
            self.generation.cancel.set()
            self.status.show(saved="saving partial branches before quitting…")
            return
        self.remember_current()
        self.exit(0)
