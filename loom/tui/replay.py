"""Replay: step through a loom's event log and watch the tree grow as it did.

The store's `Replay` rebuilds the loom in memory one event at a time; the app shows that
read-only view with the ordinary panes, so everything (tree, shading, inspector, search,
export) works at every point of the history. Visits (cursor moves) are applied but not
stopped at.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.timer import Timer
from textual.widget import Widget

from loom.session import Session
from loom.store.events import Event
from loom.store.formats.history import clock, read_history
from loom.store.loom import Loom
from loom.store.replay import Replay
from loom.tui.app import LoomApp
from loom.tui.config import Config
from loom.tui.display import one_line

PLAY_INTERVAL_S = 0.6
SKIPPED_KINDS = {"visit"}


class ReplayBar(Widget):
    DEFAULT_CSS = "ReplayBar { height: 1; width: 1fr; background: $accent 30%; padding: 0 1; }"

    def __init__(self) -> None:
        super().__init__(id="replay-bar")
        self._text = Text()

    def show(self, text: Text) -> None:
        self._text = text
        self.refresh()

    def render(self) -> Text:
        return self._text


class ReplayApp(LoomApp):
    """LoomApp over the in-memory state of a log at one event (read-only)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("full_stop,space", "replay_step(1)", "Next event", id="replay.next"),
        Binding("comma", "replay_step(-1)", "Previous", id="replay.previous", show=False),
        Binding("greater_than_sign", "replay_jump(1)", "Last", id="replay.last", show=False),
        Binding("less_than_sign", "replay_jump(-1)", "First", id="replay.first", show=False),
        Binding("p", "replay_play", "Play/pause", id="replay.play", show=False),
    ]

    def __init__(self, source: Loom, config: Config, notices: Iterable[str] = ()) -> None:
        self.source = source
        self.events: list[Event] = source.events()
        _history, steps = read_history(self.events)
        self.summaries = {step.seq: step for step in steps}
        self.replayer = Replay(self.events, tokens=source)
        self.position = 0  # index in self.events of the last applied event
        self.replayer.step()  # the first event is the snapshot that makes the loom
        view = self.replayer.loom
        assert view is not None
        super().__init__(Session(view), config, load_model=False, notices=notices)
        self._player: Timer | None = None

    def after_mount(self) -> None:
        super().after_mount()
        self.mount(ReplayBar(), before=self.status)
        name = Path(self.source.path).name if self.source.path else "loom"
        self.status.show(loom_file=f"{name} (replay)")
        self.call_after_refresh(self._show_event)

    # ----------------------------------------------------------------- stepping

    def action_replay_step(self, direction: int) -> None:
        target = self.position + direction
        # Cursor moves are applied but not stopped at.
        while 0 < target < len(self.events) - 1 and self.events[target].kind in SKIPPED_KINDS:
            target += direction
        self.replay_to(target)

    def action_replay_jump(self, direction: int) -> None:
        self.replay_to(len(self.events) - 1 if direction > 0 else 0)

    def action_replay_play(self) -> None:
        if self._player is not None:
            self._player.stop()
            self._player = None
        else:
            self._player = self.set_interval(PLAY_INTERVAL_S, self._play_tick)

    def _play_tick(self) -> None:
        if self.position >= len(self.events) - 1:
            self.action_replay_play()  # stop at the end
            return
        self.action_replay_step(1)

    def replay_to(self, index: int) -> None:
        index = max(0, min(len(self.events) - 1, index))
        if index == self.position:
            self.bell()
            return
        if index < self.position:  # the store's replay runs forwards: start again
            self.replayer = Replay(self.events, tokens=self.source)
            self.replayer.step()
            self.session.loom = self.replayer.loom  # type: ignore[assignment]
        self.replayer.advance_to(self.events[index].seq)
        self.position = index
        self.invalidate_after_edit()
        view = self.session.loom
        node = self.summaries.get(self.events[index].seq)
        target = node.node if node is not None and node.node is not None else None
        self.land_on([n for n in (target, view.current) if n is not None])
        self._show_event()

    def _show_event(self) -> None:
        event = self.events[self.position]
        step = self.summaries.get(event.seq)
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("replay ", Style(bold=True))
        text.append(f"event {self.position + 1}/{len(self.events)}  ")
        text.append(f"{clock(event.ts)}  ", Style(dim=True))
        text.append(f"{event.kind} ", Style(bold=True))
        if step is not None:
            if step.node is not None:
                text.append(f"#{step.node} ")
            text.append(one_line(step.summary, 60))
        text.append("   . next  , previous  < > first/last  p play", Style(dim=True))
        self.query_one(ReplayBar).show(text)
