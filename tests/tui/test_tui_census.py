"""Pilot tests of the census features of the TUI: the census panel (run, kept, promoted, shown
again, cancelled), the census at a token, the fork marks and their outcome bars in the inspector,
the transition table, guided growth stopped with esc, and undo of one automatic step.

The census, the transitions and the growth run on the real default model; the fork marks use the
toy world of tests/support/personas.py, whose fork is planted, so the marks are known.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.personas import ToyWorld, toy_set
from support.store import tokenizing_loom
from support.tui import (
    engine,
    isolated_config,
    make_app,
    notices,
    run,
    screen_text,
    settle,
    small_generations,
    tree_ids,
)
from textual.pilot import Pilot

from loom.app.session import Session
from loom.personas.sets import load_persona_set
from loom.store.loom import Loom
from loom.store.tokenizer import FunctionTokenizer
from loom.tui.app import LoomApp
from loom.tui.screens.census import CensusScreen
from loom.tui.screens.dialogs import ChoiceScreen, MessageScreen, PromptScreen
from loom.tui.screens.help import HelpScreen, help_plain_text

__all__ = ["engine", "isolated_config", "small_generations"]  # fixtures

CROISSANT = Path(__file__).parents[2] / "sessions" / "croissant.toml"


@pytest.fixture(autouse=True)
def small_censuses(isolated_config: Path, small_generations: None) -> None:
    """A census of 4 rollouts × 6 tokens, growth of 2 children of 6 tokens: quick on 2 cores."""
    with isolated_config.open("a") as f:
        f.write("[census]\nrollouts = 4\ntokens = 6\nfork_budget = 400\ngrowth_budget = 24\n")


def croissant_loom(path: Path, engine: object) -> Loom:
    croissant = load_persona_set(CROISSANT)
    loom = tokenizing_loom(engine, path, title="c", prompt=croissant.prompt)
    loom.set_personas(croissant.personas)
    return loom


async def wait_for(pilot: Pilot[int], done: object, what: str, limit: float = 180) -> None:
    waited = 0.0
    while not done():  # type: ignore[operator]
        await pilot.pause(0.05)
        waited += 0.05
        assert waited < limit, f"timed out waiting for {what}"


def census_screen(app: LoomApp) -> CensusScreen:
    screen = app.screen
    assert isinstance(screen, CensusScreen), type(screen)
    return screen


def test_the_census_panel_runs_keeps_promotes_and_shows_again(
    tmp_path: Path, engine: object
) -> None:
    path = tmp_path / "c.loom"
    loom = croissant_loom(path, engine)
    root = loom.root_id
    app = make_app(loom, engine)  # type: ignore[arg-type]

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("C")
        screen = census_screen(app)
        await wait_for(pilot, lambda: not screen.running and screen.result is not None, "census")
        await pilot.pause()
        text = screen_text(app)
        for name in ("luigi", "waluigi", "95% interval", "4 rollouts × 6 tokens"):
            assert name in text, name
        result = screen.result
        assert result is not None and len(result.outcomes[0].census.rollouts) == 4
        # kept in the file before it was shown
        with Loom.open(path, readonly=True) as again:
            (kept,) = again.censuses(root)
            assert kept.seq == result.seq
        # enter promotes the highlighted rollout into the tree, the panel stays
        await pilot.press("down", "enter")
        await pilot.pause()
        (child,) = app.session.children(root)
        rollout = result.outcomes[0].census.rollouts[1]
        assert app.session.node(child.id).text == rollout.text
        assert app.current == child.id and isinstance(app.screen, CensusScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, CensusScreen)
        # C again on the root shows the stored census, without running the model
        app.go_to(root)
        await pilot.press("C")
        await pilot.pause()
        again_screen = census_screen(app)
        assert not again_screen.running and again_screen.result is not None
        assert again_screen.result.seq == result.seq
        await pilot.press("escape")
        # one undo takes the promotion back, the next the census
        await pilot.press("u")
        await pilot.pause()
        assert app.session.children(root) == []
        await pilot.press("u")
        await pilot.pause()
        assert app.session.censuses(root) == []

    run(app, body)


def test_esc_in_a_running_census_keeps_the_completed_rollouts(
    tmp_path: Path, engine: object, isolated_config: Path
) -> None:
    # 16 rollouts in batches of the engine's 8 sequences: esc after the first batch
    text = isolated_config.read_text()
    isolated_config.write_text(text.replace("rollouts = 4", "rollouts = 16"))
    path = tmp_path / "c.loom"
    loom = croissant_loom(path, engine)
    app = make_app(loom, engine)  # type: ignore[arg-type]

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("C")
        screen = census_screen(app)
        from textual.widgets import ProgressBar

        bar = screen.query_one(ProgressBar)
        # progress counts each rollout's tokens and its labelling: a batch is 8 × (tokens + 1)
        batch = 8 * (app.config.census_tokens + 1)
        await wait_for(pilot, lambda: (bar.progress or 0) >= batch or not screen.running, "batch")
        await pilot.press("escape")  # cancels; the panel stays, with what was done
        await wait_for(pilot, lambda: not screen.running, "cancel")
        await pilot.pause()
        result = screen.result
        assert result is not None and isinstance(app.screen, CensusScreen)
        done = len(result.outcomes[0].census.rollouts)
        assert done in (8, 16)  # whole batches only
        if done == 8:
            assert result.cancelled and "cancelled" in screen_text(app)
        with Loom.open(path, readonly=True) as again:
            (kept,) = again.censuses(loom.root_id)
            assert len(kept.payload["outcomes"][0]["rollouts"]) == done

    run(app, body)


def test_a_census_at_a_token_weighs_each_alternative(tmp_path: Path, engine: object) -> None:
    path = tmp_path / "c.loom"
    loom = croissant_loom(path, engine)
    app = make_app(loom, engine)  # type: ignore[arg-type]

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("g")
        await wait_for(pilot, lambda: app.generation is None and app.last_generated, "generate")
        await wait_for(pilot, lambda: not app.labelling, "labels")
        await settle(pilot)
        node = app.last_generated[0]
        app.go_to(node)
        await pilot.press("i", "home")  # token cursor on the node's first token
        await pilot.press("C")
        screen = census_screen(app)
        await wait_for(pilot, lambda: not screen.running and screen.result is not None, "census")
        result = screen.result
        assert result is not None and result.token_index == 0 and result.node_id == node
        assert len(result.outcomes) >= 2  # one census per alternative the model gave
        assert "after ‹" in screen_text(app)

    run(app, body)


def test_census_without_a_persona_set_says_how_to_load_one(tmp_path: Path, engine: object) -> None:
    loom = tokenizing_loom(engine, tmp_path / "plain.loom", title="p", prompt="Once")
    app = make_app(loom, engine)  # type: ignore[arg-type]

    async def body(pilot: Pilot[int]) -> None:
        for key in ("C", "F", "O", "A"):
            await pilot.press(key)
            await pilot.pause()
            assert not isinstance(app.screen, CensusScreen | ChoiceScreen)
        assert "load a persona set first (ctrl+l)" in notices(app)
        assert loom.censuses() == []

    run(app, body)


# --- the fork map: marks in the reading pane, outcome bars in the inspector ---------------------


def test_the_fork_map_marks_the_planted_fork_and_the_inspector_shows_its_outcomes(
    tmp_path: Path, isolated_config: Path
) -> None:
    text = isolated_config.read_text()
    isolated_config.write_text(text.replace("fork_budget = 400", "fork_budget = 3000"))
    from support.personas import planted_tokens, toy_loom

    from loom.tui.widgets.reading_pane import FORK_MARK

    loom = toy_loom(tmp_path)
    loom.set_personas(toy_set().personas)
    # luigi's story, unless "F" is said: the node's token 2 could have been "F"
    node = loom.add_child(loom.root_id, "AAAAA", author="model", tokens=planted_tokens("AAAAA", 2))
    app = make_app(loom, ToyWorld(p_waluigi=0.0, fork=ord("F")))  # type: ignore[arg-type]
    session = app.session

    async def body(pilot: Pilot[int]) -> None:
        app.go_to(node)
        await pilot.press("F")
        await wait_for(pilot, lambda: app.model_job is None, "fork map", limit=60)
        await pilot.pause()
        path = app.reading.path
        assert path is not None
        start, _end = path.node_spans[node]
        assert app.reading.fork_marks == {start + 2}, notices(app)  # the planted fork only
        fork = app.reading.token_style(start + 2)
        assert fork + FORK_MARK == fork and not app.reading.token_style(start + 1).underline2
        assert "1 forking" in notices(app)
        await pilot.press("i", "home", "right", "right")
        await pilot.pause()
        text = screen_text(app)
        assert "fork map: a forking token" in text and "waluigi" in text
        # another branch: the marks belong to the mapped path only
        app.go_to(session.root_id)
        await pilot.pause()
        assert app.reading.fork_marks == frozenset()

    run(app, body)


# --- the transition table ------------------------------------------------------------------


def test_the_transition_table_is_computed_kept_and_shown(tmp_path: Path, engine: object) -> None:
    path = tmp_path / "c.loom"
    loom = croissant_loom(path, engine)
    app = make_app(loom, engine)  # type: ignore[arg-type]

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("g")
        await wait_for(pilot, lambda: app.generation is None and app.last_generated, "generate")
        await wait_for(pilot, lambda: not app.labelling, "labels")
        await settle(pilot)
        labelled = [h for h in app.session.headers(app.last_generated) if h.label]
        await pilot.press("O")
        await wait_for(pilot, lambda: app.model_job is None, "transitions")
        await pilot.pause()
        if not labelled:
            assert "no labelled node" in notices(app)
            return
        assert isinstance(app.screen, MessageScreen)
        text = screen_text(app)
        assert "from " in text and "→" in text
        assert len(app.session.loom.censuses()) == len(labelled)

    run(app, body)


# --- guided growth -------------------------------------------------------------------------


def test_guided_growth_grows_live_and_one_undo_removes_one_step(
    tmp_path: Path, engine: object
) -> None:
    path = tmp_path / "c.loom"
    loom = croissant_loom(path, engine)
    root = loom.root_id
    app = make_app(loom, engine)  # type: ignore[arg-type]

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("A")
        assert isinstance(app.screen, ChoiceScreen)
        await pilot.press("enter")  # explore
        assert isinstance(app.screen, PromptScreen)
        await pilot.press("enter")  # the proposed budget: 24 tokens = 2 steps of 2 × 6
        await wait_for(pilot, lambda: app.model_job is None, "growth")
        await settle(pilot)
        assert "grew 2 step(s)" in notices(app)
        with Loom.open(path, readonly=True) as again:
            grown = [i for i in Session(again).subtree_ids(root) if i != root]
        assert len(grown) == 4 and set(grown) <= tree_ids(app)
        # every child was labelled as it was grown (the explore policy reads the labels)
        assert all(app.session.header(i).persona is not None for i in grown)
        await pilot.press("u")  # one automatic step
        await pilot.pause()
        left = [i for i in app.session.subtree_ids(root) if i != root]
        assert len(left) == 2 and set(left) < set(grown)

    run(app, body)


def test_esc_stops_guided_growth_and_keeps_every_step(
    tmp_path: Path, engine: object, isolated_config: Path
) -> None:
    isolated_config.write_text(
        isolated_config.read_text().replace("growth_budget = 24", "growth_budget = 100000")
    )
    path = tmp_path / "c.loom"
    loom = croissant_loom(path, engine)
    root = loom.root_id
    app = make_app(loom, engine)  # type: ignore[arg-type]

    async def body(pilot: Pilot[int]) -> None:
        assert app.start_growth(root, "explore", "100000")
        growth = app.growth
        assert growth is not None
        await wait_for(pilot, lambda: growth.steps >= 2, "steps")
        assert "esc stops" in screen_text(app)
        await pilot.press("w")  # edits wait while it grows
        assert not isinstance(app.screen, PromptScreen) and "wait for the growing" in notices(app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.model_job is None, "stop")
        await settle(pilot)
        assert "stopped" in notices(app)
        with Loom.open(path, readonly=True) as again:
            kept = [i for i in Session(again).subtree_ids(root) if i != root]
        assert len(kept) >= 4  # every finished step, and the one cut short if it had tokens
        assert app.growth is None

    run(app, body)


def test_help_and_palette_list_the_census_actions(tmp_path: Path) -> None:
    from loom.engine.fake import FakeBackend

    fake = FakeBackend()
    loom = Loom.create(tmp_path / "h.loom", title="h", prompt="x",
                       tokenizer=FunctionTokenizer(fake.tokens_for))  # fmt: skip
    app = make_app(loom, fake)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("f1")
        screen = app.screen
        assert isinstance(screen, HelpScreen)
        text = help_plain_text(screen.help_group)
        for shown in ("Census and guided growth", "loom.census", "loom.fork_map",
                      "loom.transitions", "loom.grow", "tokens.census",
                      "Persona transition table"):  # fmt: skip
            assert shown in text, shown
        await pilot.press("escape")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Census", "Fork map", "Transitions", "Grow"} <= set(titles)

    run(app, body)
