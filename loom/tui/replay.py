"""Replay: step through a loom's event log and watch the tree grow as it did.

The store's `Replay` rebuilds the loom in memory one event at a time; the app shows that
read-only view with the ordinary panes, so everything (tree, shading, personas, inspector,
search, export) works at every point of the history. Visits (cursor moves) are applied but not
stopped at by the step keys. Play runs at a speed from 0.25× to 16×; `:` jumps to an event
number (its seq, as `loom replay --headless` lists them) or a time; `F` forks the loom as it
was at the current point into a new file (the original is only read).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import work
from textual.app import SystemCommand
from textual.binding import BindingType
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import Widget

from loom.app.session import Session
from loom.app.timeline import fork_at
from loom.config import Config
from loom.store.errors import LoomError
from loom.store.events import Event
from loom.store.history import HistoryError, clock, read_history
from loom.store.loom import Loom
from loom.store.replay import Replay
from loom.text import one_line
from loom.tui.app import LoomApp
from loom.tui.keymap import APP_ACTIONS, TOKEN_ACTIONS, LoomAction, bindings
from loom.tui.messages import Forked
from loom.tui.screens.dialogs import PromptScreen
from loom.tui.screens.help import HelpScreen, help_text, live_keys

BASE_RATE = 2.0  # events per second at 1×
SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
SKIPPED_KINDS = {"visit"}
REPLAY = "Replay"

REPLAY_ACTIONS: tuple[LoomAction, ...] = (
    LoomAction("replay.next", "full_stop", "replay_step(1)", "Next event",
               "Replay: step to the next event (cursor moves are passed over)", REPLAY,
               show=True),
    LoomAction("replay.previous", "comma", "replay_step(-1)", "Previous event",
               "Replay: step back to the previous event", REPLAY),
    LoomAction("replay.first", "less_than_sign", "replay_jump(-1)", "First event",
               "Replay: go to the first event (the loom as it was created)", REPLAY),
    LoomAction("replay.last", "greater_than_sign", "replay_jump(1)", "Last event",
               "Replay: go to the last event (the loom as it is now)", REPLAY),
    LoomAction("replay.play", "space", "replay_play", "Play/pause",
               "Replay: play the events one after another, or pause", REPLAY, show=True),
    LoomAction("replay.faster", "plus,equals_sign", "replay_speed(1)", "Faster",
               "Replay: play faster (up to 16×)", REPLAY),
    LoomAction("replay.slower", "minus", "replay_speed(-1)", "Slower",
               "Replay: play slower (down to 0.25×)", REPLAY),
    LoomAction("replay.goto", "colon,ctrl+g", "replay_goto", "Jump to…",
               "Replay: jump to an event number or a time (HH:MM, HH:MM:SS, ISO date-time)",
               REPLAY, show=True),
    LoomAction("replay.fork", "F", "replay_fork", "Fork here",
               "Replay: write the loom as it was at this event to a new file", REPLAY,
               show=True),
)  # fmt: skip


def speed_label(speed: float) -> str:
    return f"{speed:g}×"


class ReplayBar(Widget):
    DEFAULT_CSS = "ReplayBar { height: 1; width: 1fr; background: $accent 30%; padding: 0 1; }"

    def __init__(self) -> None:
        super().__init__(id="replay-bar")
        self._text = Text()

    def show(self, text: Text) -> None:
        self._text = text
        self.refresh()

    @property
    def plain(self) -> str:
        return self._text.plain

    def render(self) -> Text:
        return self._text


class ReplayApp(LoomApp):
    """LoomApp over the in-memory state of a log at one event (read-only)."""

    BINDINGS: ClassVar[list[BindingType]] = list(bindings(REPLAY_ACTIONS))

    def __init__(self, source: Loom, config: Config, notices: Iterable[str] = ()) -> None:
        self.source = source
        self.events: list[Event] = source.events()
        if not self.events:
            raise LoomError("this loom has no event log to replay")
        try:
            _history, steps = read_history(self.events)
        except HistoryError as exc:
            raise LoomError(f"cannot replay this log: {exc}") from None
        self.summaries = {step.seq: step for step in steps}
        self.replayer = Replay(self.events, tokens=source)
        self.position = 0  # index in self.events of the last applied event
        self.replayer.step()  # the first event is the snapshot that makes the loom
        view = self.replayer.loom
        assert view is not None
        super().__init__(Session(view), config, load_model=False, notices=notices)
        self._player: Timer | None = None
        self.speed = 1.0

    def after_mount(self) -> None:
        super().after_mount()
        self.mount(ReplayBar(), before=self.status)
        name = Path(self.source.path).name if self.source.path else "loom"
        self.status.show(loom_file=f"{name} (replay)")
        self.call_after_refresh(self._show_event)

    @property
    def seq(self) -> int:
        """The seq of the last applied event: the loom shown is `state_at(seq)`."""
        return self.events[self.position].seq

    @property
    def playing(self) -> bool:
        return self._player is not None

    # ----------------------------------------------------------------- help and palette

    def action_help(self) -> None:
        keys = live_keys(self, [self, self.screen, self.reading])
        actions = (*REPLAY_ACTIONS, *APP_ACTIONS, *TOKEN_ACTIONS)
        self.push_screen(HelpScreen(help_text(actions, keys)))

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        keys = live_keys(self, [self])
        for action in REPLAY_ACTIONS:
            bound = ", ".join(keys.get(action.id, []))
            yield SystemCommand(
                action.title,
                action.help + (f" · key {bound}" if bound else ""),
                partial(self.run_action, action.action),
            )
        yield from super().get_system_commands(screen)

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
            self._stop_player()
        else:
            if self.position >= len(self.events) - 1:
                self.replay_to(0)  # play again from the start
            self._start_player()
        self._show_event()

    def _start_player(self) -> None:
        self._player = self.set_interval(1 / (BASE_RATE * self.speed), self._play_tick)

    def _stop_player(self) -> None:
        if self._player is not None:
            self._player.stop()
            self._player = None

    def _play_tick(self) -> None:
        if self.position >= len(self.events) - 1:
            self._stop_player()  # stop at the end
            self._show_event()
            return
        self.action_replay_step(1)

    def action_replay_speed(self, direction: int) -> None:
        index = SPEEDS.index(self.speed) + direction
        if not 0 <= index < len(SPEEDS):
            self.bell()
            return
        self.speed = SPEEDS[index]
        if self._player is not None:  # the new pace from now on
            self._stop_player()
            self._start_player()
        self._show_event()

    def replay_to(self, index: int) -> None:
        index = max(0, min(len(self.events) - 1, index))
        if index == self.position:
            self.bell()
            return
        if index < self.position:  # the store's replay runs forwards: start again
            self.replayer = Replay(self.events, tokens=self.source)
            self.replayer.step()
            assert self.replayer.loom is not None
            self.session.switch_to(self.replayer.loom)
        self.replayer.advance_to(self.events[index].seq)
        self.position = index
        self.rebuild_tree()
        node = self.summaries.get(self.events[index].seq)
        target = node.node if node is not None and node.node is not None else None
        self.land_on([n for n in (target, self.session.place) if n is not None])
        self._show_event()

    # ----------------------------------------------------------------- jumping

    def action_replay_goto(self) -> None:
        first, last = self.events[0].seq, self.events[-1].seq

        def done(text: str | None) -> None:
            if text is not None and text.strip():
                self.replay_goto(text)

        self.push_screen(
            PromptScreen(
                "Jump to an event or a time",
                placeholder=f"event {first}–{last}, or HH:MM[:SS], or 2025-01-31T14:05",
                hint="an event number, or a time (on this event's day unless a date is given)"
                " · enter jump · esc cancel",
            ),
            done,
        )

    def replay_goto(self, text: str) -> bool:
        """Go to the event `text` names (a seq) or to the last event at or before the time it
        names. A notice and no change if it names nothing in this log; True if it moved."""
        try:
            index = self.index_for(text)
        except ValueError as exc:
            self.notify(str(exc), severity="error", title="Not a place in this replay")
            return False
        if index == self.position:
            self.notify(f"already at event {self.seq}", timeout=2)
            return False
        self.replay_to(index)
        return True

    def index_for(self, text: str) -> int:
        """The index in the log that `text` names; ValueError (for the user) if none."""
        text = text.strip()
        first, last = self.events[0].seq, self.events[-1].seq
        number = text.removeprefix("#")
        if number.isdigit():
            seq = int(number)
            if not first <= seq <= last:
                raise ValueError(f"no event {seq}: this log runs from {first} to {last}")
            return max(i for i, e in enumerate(self.events) if e.seq <= seq)
        moment = self._moment(text)
        if moment is None:
            raise ValueError(
                f"{one_line(text, 40)!r} is neither an event number ({first}–{last}) nor a "
                "time (HH:MM, HH:MM:SS or an ISO date-time such as 2025-01-31T14:05)"
            )
        before = [i for i, e in enumerate(self.events) if e.ts <= moment]
        if not before:
            raise ValueError(
                f"{one_line(text, 40)} is before the first event ({clock(self.events[0].ts)})"
            )
        return before[-1]

    def _moment(self, text: str) -> float | None:
        """Unix seconds for a time of day (on the current event's day) or an ISO date-time."""
        for pattern in ("%H:%M", "%H:%M:%S"):
            try:
                wall = datetime.strptime(text, pattern).time()
            except ValueError:
                continue
            day = datetime.fromtimestamp(self.events[self.position].ts).date()
            return datetime.combine(day, wall).timestamp()
        try:
            # Naive: local time, as the replay shows times.
            return datetime.fromisoformat(text).timestamp()
        except (ValueError, OverflowError, OSError):
            return None

    # ----------------------------------------------------------------- forking

    def default_fork_path(self) -> Path:
        """`<name>-at-<seq>.loom` beside the original (numbered if that exists already)."""
        original = Path(self.source.path) if self.source.path else Path("loom.loom")
        path = original.with_name(f"{original.stem}-at-{self.seq}.loom")
        n = 1
        while path.exists():
            n += 1
            path = original.with_name(f"{original.stem}-at-{self.seq}-{n}.loom")
        return path

    def action_replay_fork(self) -> None:
        seq = self.seq

        def done(text: str | None) -> None:
            if text is not None and text.strip():
                self.fork_to(seq, Path(text.strip()).expanduser())

        self.push_screen(
            PromptScreen(
                f"Fork the loom as it was after event {seq}",
                value=str(self.default_fork_path()),
                hint="a new .loom file (the original is not changed) · enter write · esc cancel",
            ),
            done,
        )

    def fork_to(self, seq: int, path: Path) -> bool:
        """Write the loom as it was right after event `seq` to the new file `path`, in a worker
        (False, with a notice, if it can't start)."""
        if path.exists():
            self.notify(
                f"{path} already exists: forking writes a new file only",
                severity="error",
                title="Not forked",
            )
            return False
        self.status.show(saved=f"forking at event {seq}…")
        self._fork_worker(seq, path)
        return True

    @work(thread=True, group="fork", exit_on_error=False)
    def _fork_worker(self, seq: int, path: Path) -> None:
        # The source is only read here; the new file is this worker's own.
        started = time.monotonic()
        try:
            written = fork_at(self.source, seq, path)
        except Exception as exc:  # shown on the UI thread
            self.post_message(Forked(seq, path, None, exc))
        else:
            self.post_message(Forked(seq, written, time.monotonic() - started, None))

    def on_forked(self, message: Forked) -> None:
        self.status.show(saved="read-only")
        if message.error is not None:
            self.notify(str(message.error), severity="error", title="Not forked")
        else:
            took = f" ({message.seconds:.1f}s)" if message.seconds is not None else ""
            self.notify(f"forked at event {message.seq} → {message.path}{took}", title="Forked")

    # ----------------------------------------------------------------- the replay bar

    def _show_event(self) -> None:
        event = self.events[self.position]
        step = self.summaries.get(event.seq)
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("replay ", Style(bold=True))
        text.append(f"{'▶' if self.playing else '⏸'} {speed_label(self.speed)}  ")
        text.append(f"event {event.seq}/{self.events[-1].seq}  ")
        text.append(f"{clock(event.ts)}  ", Style(dim=True))
        text.append(f"{event.kind} ", Style(bold=True))
        if step is not None:
            if step.node is not None:
                text.append(f"#{step.node} ")
            text.append(one_line(step.summary, 50))
        text.append(
            "   . next  , previous  < > first/last  space play  + - speed  : jump  F fork",
            Style(dim=True),
        )
        self.query_one(ReplayBar).show(text)
