"""Replay mode of the TUI, no model needed: stepping, play speed, jumping to an event or a time,
forking at a past point, and the replay keys in F1 help and the palette.

The loom is built with the store API under a fake clock (one minute per event), so times in the
log are known; every check compares the app's view with the store's own `state_at`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from support.tui import SIZE, isolated_config, model_node, notices, run, screen_text, tree_ids
from textual.pilot import Pilot
from textual.widgets import Input

from loom.config import load_config
from loom.engine.fake import FakeBackend
from loom.store.loom import Loom
from loom.store.replay import state_at
from loom.store.tokenizer import FunctionTokenizer
from loom.tui.replay import REPLAY_ACTIONS, ReplayApp, ReplayBar
from loom.tui.screens.dialogs import PromptScreen
from loom.tui.screens.help import HelpScreen, help_plain_text

__all__ = ["isolated_config"]

START = datetime(2026, 3, 1, 9, 0, 0)  # local time: the replay shows local times
STEP_S = 60.0
HUMAN_SEQ = 3  # the event that adds " Zebra crossing"


@pytest.fixture
def loom_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A loom whose log has one event a minute from 09:00 on START's day:

    1 create · 2 add A, B (model, scored) · 3 add " Zebra crossing" (human) · 4 add A1, A2 ·
    5 prune B · 6 undo (B back) · 7 prune A2 · then a visit (a cursor move)."""
    ticks = iter(START.timestamp() + STEP_S * i for i in range(1000))
    import loom.store.apply as apply

    monkeypatch.setattr(apply, "time", SimpleNamespace(time=lambda: next(ticks)))
    path = tmp_path / "story.loom"
    tokenizer = FunctionTokenizer(FakeBackend().tokens_for)
    with Loom.create(path, title="story", prompt="Once upon a time", tokenizer=tokenizer) as loom:
        a, b = loom.add_children(loom.root_id, [model_node([1, 2, 3]), model_node([8, 9])])
        loom.add_child(loom.root_id, " Zebra crossing", author="human")
        _a1, a2 = loom.add_children(a, [model_node([4, 5]), model_node([6, 7])])
        loom.prune(b)
        loom.undo()
        loom.prune(a2)
        loom.set_current(a)
    monkeypatch.undo()
    yield path


def open_replay(path: Path) -> tuple[ReplayApp, Loom]:
    source = Loom.open(path, readonly=True)
    app = ReplayApp(source, load_config())
    app.animation_level = "none"
    return app, source


def shape(nodes: Any) -> dict[int, tuple[Any, ...]]:
    return {n.id: (n.parent, n.author, n.text, n.pruned) for n in nodes}


def shown_state(app: ReplayApp) -> dict[int, tuple[Any, ...]]:
    return shape(app.session.loom.to_document(events=False).nodes)


def expected_state(source: Loom, seq: int) -> dict[int, tuple[Any, ...]]:
    return shape(state_at(source.events(), seq, tokens=source).nodes)


def bar(app: ReplayApp) -> str:
    return app.query_one(ReplayBar).plain


def seq_at(source: Loom, clock: str) -> int:
    """The seq of the event stamped at `clock` (HH:MM) on START's day."""
    hour, minute = (int(x) for x in clock.split(":"))
    when = START.replace(hour=hour, minute=minute).timestamp()
    (seq,) = [e.seq for e in source.events() if e.ts == when]
    return seq


async def prompt(pilot: Pilot[int], key: str, text: str | None) -> None:
    """Open a replay dialog with `key` and submit `text` (None: keep the value offered)."""
    await pilot.press(key)
    await pilot.pause()
    assert isinstance(pilot.app.screen, PromptScreen)
    field = pilot.app.screen.query_one(Input)
    if text is not None:
        field.value = text
    await pilot.press("enter")
    await pilot.pause()


def test_the_log_has_the_times_the_tests_rely_on(loom_path: Path) -> None:
    with Loom.open(loom_path, readonly=True) as loom:
        events = loom.events()
    assert [e.kind for e in events] == [
        "create", "add", "add", "add", "prune", "undo", "discard_redo", "prune", "visit"
    ]  # fmt: skip
    assert events[HUMAN_SEQ - 1].payload["nodes"][0]["author"] == "human"
    assert [e.ts - events[0].ts for e in events] == [STEP_S * i for i in range(len(events))]


def test_stepping_forward_and_back_changes_the_tree_and_reading_pane(loom_path: Path) -> None:
    app, source = open_replay(loom_path)
    human_seq = HUMAN_SEQ

    async def body(pilot: Pilot[int]) -> None:
        first = app.seq
        assert shown_state(app) == expected_state(source, first)
        assert tree_ids(app) == {app.session.loom.root_id}
        assert f"event {first}/" in bar(app)
        while app.seq < human_seq:
            await pilot.press("full_stop")
        await pilot.pause()
        assert shown_state(app) == expected_state(source, human_seq)
        assert len(tree_ids(app)) == 4  # root, A, B and the human child
        assert "Zebra crossing" in screen_text(app)  # the new node is current: reading pane
        assert f"event {human_seq}/" in bar(app) and "add #4" in bar(app)
        await pilot.press("comma")
        await pilot.pause()
        assert app.seq == human_seq - 1
        assert shown_state(app) == expected_state(source, human_seq - 1)
        assert len(tree_ids(app)) == 3
        assert "Zebra crossing" not in screen_text(app)

    run(app, body)
    source.close()


def test_model_nodes_keep_their_probabilities_in_replay(loom_path: Path) -> None:
    """The reading pane shades by probability: the replayed tokens carry their logprobs."""
    app, source = open_replay(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("full_stop")  # A and B appear; A is current
        await pilot.pause()
        header = app.session.loom.header(app.current)
        assert header.author == "model"
        last_part = app.reading.path.parts[-1][1]
        assert len(last_part) == 3 and all(lp < 0 for lp in last_part.logprobs)

    run(app, body)
    source.close()


def test_jump_to_an_event_shows_exactly_the_state_at_it(loom_path: Path) -> None:
    app, source = open_replay(loom_path)
    prune_seq = next(e.seq for e in source.events() if e.kind == "prune")

    async def body(pilot: Pilot[int]) -> None:
        await prompt(pilot, "colon", str(prune_seq))
        assert app.seq == prune_seq
        assert shown_state(app) == expected_state(source, prune_seq)
        assert any(row[3] for row in shown_state(app).values())  # B is pruned here
        assert f"event {prune_seq}/" in bar(app) and "prune" in bar(app)
        await prompt(pilot, "ctrl+g", "#2")  # backwards, and the other key
        assert app.seq == 2
        assert shown_state(app) == expected_state(source, 2)

    run(app, body)
    source.close()


def test_jump_to_a_time_goes_to_the_last_event_at_or_before_it(loom_path: Path) -> None:
    app, source = open_replay(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        await prompt(pilot, "colon", "09:03:30")  # between the 09:03 and 09:04 events
        assert app.seq == seq_at(source, "09:03")
        assert shown_state(app) == expected_state(source, app.seq)
        assert "09:03:00" in bar(app)
        await prompt(pilot, "colon", "09:01")  # exactly an event's time: that event
        assert app.seq == seq_at(source, "09:01")
        iso = START.replace(minute=5).isoformat()
        await prompt(pilot, "colon", iso)
        assert app.seq == seq_at(source, "09:05")
        await prompt(pilot, "colon", "23:59")  # after the last event: the last one
        assert app.seq == source.events()[-1].seq

    run(app, body)
    source.close()


@pytest.mark.parametrize("text", ["banana", "999", "0", "08:59", "25:00", "2026-03-01T08:00"])
def test_bad_jump_input_leaves_the_position_unchanged(loom_path: Path, text: str) -> None:
    app, source = open_replay(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("full_stop", "full_stop")
        before, state = app.seq, shown_state(app)
        await prompt(pilot, "colon", text)
        assert app.seq == before and shown_state(app) == state
        assert "Not a place in this replay" in notices(app)

    run(app, body)
    source.close()


def test_speed_keys_change_the_speed_shown_and_the_pace(loom_path: Path) -> None:
    app, source = open_replay(loom_path)
    last = source.events()[-1].seq

    async def body(pilot: Pilot[int]) -> None:
        assert "⏸ 1×" in bar(app)
        await pilot.press("plus")
        assert app.speed == 2 and "2×" in bar(app)
        await pilot.press("minus", "minus", "minus")
        assert app.speed == 0.25 and "0.25×" in bar(app)
        await pilot.press("minus")  # the slowest already: no change
        assert app.speed == 0.25
        await pilot.press("space")  # 0.5 events a second: nothing moves for a while
        assert app.playing and "▶ 0.25×" in bar(app)
        await pilot.pause(0.4)
        assert app.seq == 1
        await pilot.press("space")
        assert not app.playing
        for _ in range(6):
            await pilot.press("plus")
        assert app.speed == 16 and "16×" in bar(app)
        await pilot.press("space")  # 32 events a second: the end soon, then it stops
        for _ in range(100):  # generous for a loaded machine
            await pilot.pause(0.05)
            if not app.playing:
                break
        assert app.seq == last and not app.playing
        assert shown_state(app) == expected_state(source, last)

    run(app, body)
    source.close()


def test_fork_writes_the_past_state_to_a_new_file_and_keeps_the_original(
    loom_path: Path,
) -> None:
    original = loom_path.read_bytes()
    app, source = open_replay(loom_path)
    prune_seq = next(e.seq for e in source.events() if e.kind == "prune")
    fork = loom_path.with_name(f"story-at-{prune_seq}.loom")

    async def body(pilot: Pilot[int]) -> None:
        await prompt(pilot, "colon", str(prune_seq))
        await pilot.press("F")
        await pilot.pause()
        assert pilot.app.screen.query_one(Input).value == str(fork)  # the default path
        await pilot.press("enter")
        await pilot.pause()
        assert "Forked" in notices(app)
        assert app.seq == prune_seq  # the replay stays where it was

    run(app, body)
    expected = expected_state(source, prune_seq)
    source.close()
    assert fork.exists()
    with Loom.open(fork, readonly=True) as forked:
        assert shape(forked.to_document(events=False).nodes) == expected
    with Loom.open(loom_path, readonly=True) as now:
        assert expected != shape(now.to_document(events=False).nodes)  # a past state, not now
    assert loom_path.read_bytes() == original


def test_fork_refuses_an_existing_path(loom_path: Path, tmp_path: Path) -> None:
    original = loom_path.read_bytes()
    taken = tmp_path / "taken.loom"
    taken.write_bytes(b"not mine")
    app, source = open_replay(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("full_stop")
        await prompt(pilot, "F", str(taken))
        assert "already exists" in notices(app) and "Not forked" in notices(app)
        await prompt(pilot, "F", str(loom_path))  # not even over the original
        assert "Forked" not in notices(app).replace("Not forked", "")

    run(app, body)
    source.close()
    assert taken.read_bytes() == b"not mine"
    assert loom_path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.glob("*.loom")) == ["story.loom", "taken.loom"]


def test_every_replay_key_has_an_id_and_is_in_help_and_palette(loom_path: Path) -> None:
    app, source = open_replay(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        unnamed = {b.action for _key, b in app._bindings if not (b.id and b.description)}
        assert unnamed <= {"quit", "help_quit"}, unnamed  # Textual's own ctrl+q, ctrl+c
        assert {b.id for _key, b in app._bindings} >= {a.id for a in REPLAY_ACTIONS}
        commands = [c.title for c in app.get_system_commands(app.screen)]
        for title in ("Fork here", "Jump to…", "Faster", "Slower", "Play/pause"):
            assert title in commands
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = help_plain_text(app.screen.help_group)
        lines = {line.split()[-1]: line for line in text.splitlines() if line.strip()}
        assert lines["replay.fork"].split()[0] == "F"
        assert lines["replay.goto"].split()[0] == ":,"
        assert "(unbound)" not in lines["loom.persona_panel"]  # play does not take p

    run(app, body)
    source.close()


def test_the_persona_panel_key_still_works_in_replay(loom_path: Path) -> None:
    app, source = open_replay(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        assert not app.persona_panel.display
        await pilot.press("p")
        assert app.persona_panel.display and not app.playing

    run(app, body)
    source.close()


assert SIZE  # the shared screen size (run uses it)
