"""Pilot tests of the reading aids: hoisting (z Z, the breadcrumb, navigation inside a hoist,
refusals), unread marks and U, blind reading (B, and that nothing leaks), and — with the real
model — sorting by entropy and the child filter (K)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.store import tokenizing_loom
from support.tui import (
    engine,
    ids_by_text,
    isolated_config,
    make_app,
    notices,
    run,
    sample_loom,
    screen_text,
    settle,
    small_generations,
    tree_ids,
    type_text,
)
from textual.pilot import Pilot
from textual.widgets import Input, Static

from loom.app.navigation import shuffle_rank
from loom.app.session import Session
from loom.engine.fake import FakeBackend
from loom.engine.sampling import SamplerSettings
from loom.store.loom import Loom
from loom.store.model import Persona, PersonaLabel
from loom.store.tokenizer import FunctionTokenizer
from loom.tui.app import LoomApp
from loom.tui.keymap import APP_ACTIONS
from loom.tui.screens.dialogs import MessageScreen, PromptScreen
from loom.tui.screens.help import help_plain_text, help_text, live_keys
from loom.tui.widgets.inspector import TokenInspector
from loom.tui.widgets.persona_panel import PersonaPanel

__all__ = ["engine", "isolated_config", "small_generations"]

PERSONAS = [
    Persona("luigi", "Bob is a loyal patriot who despises croissants.", "green", 0.5),
    Persona("waluigi", "Bob secretly loves croissants.", "magenta", 0.5),
]


@pytest.fixture
def loom_path(tmp_path: Path) -> Path:
    path = tmp_path / "views.loom"
    sample_loom(path).close()
    return path


def open_app(path: Path) -> tuple[LoomApp, dict[str, int]]:
    fake = FakeBackend()
    loom = Loom.open(path, tokenizer=FunctionTokenizer(fake.tokens_for))
    return make_app(loom, fake), ids_by_text(loom)


def tree_line(app: LoomApp, node_id: int) -> str:
    node = app.tree_pane.node_for(node_id)
    assert node is not None, f"#{node_id} not in the tree"
    return str(node.label)


def breadcrumb(app: LoomApp) -> Static:
    return app.query_one("#breadcrumb", Static)


# --------------------------------------------------------------------------- hoisting


def test_hoist_shows_the_subtree_as_the_tree_with_a_breadcrumb(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        assert not breadcrumb(app).display
        await pilot.press("l")  # to A
        assert app.current == ids["A"]
        await pilot.press("z")
        await pilot.pause()
        assert app.tree_pane.root.data == ids["A"]
        assert tree_ids(app) == {ids["A"], ids["A1"], ids["A2"]}
        crumb = breadcrumb(app)
        assert crumb.display and f"root › #{ids['A']}" in str(crumb.render())
        text = screen_text(app)
        assert f"hoisted #{ids['A']}" in text and f"⤒ #{ids['A']}" in text
        # the reading pane still reads the whole path (the model's context)
        assert "The croissant debate began." in app.reading.visible_text()
        # inside the hoist: the hoisted node is the top
        await pilot.press("h")
        assert app.current == ids["A"] and "the hoisted node is the top" in notices(app)
        await pilot.press("j")
        assert app.current == ids["A"]  # no siblings at the top
        await pilot.press("l", "j")
        assert app.current == ids["A2"]
        await pilot.press("right_square_bracket")  # next leaf: none inside A
        assert app.current == ids["A2"] and "no next leaf" in notices(app)
        await pilot.press("home")
        assert app.current == ids["A"]
        # bookmarks: only those under the hoisted node
        app.session.set_bookmark(ids["B"], True)
        await pilot.press("n")
        assert app.current == ids["A"] and "no bookmarks under the hoisted node" in notices(app)
        app.session.set_bookmark(ids["A2"], True)
        await pilot.press("n")
        assert app.current == ids["A2"]
        await pilot.press("n")
        assert app.current == ids["A2"] and app.hoist.stack == [ids["A"]]
        # unhoist: the whole tree again, no breadcrumb
        await pilot.press("Z")
        await pilot.pause()
        assert app.tree_pane.root.data == ids["root"] and not breadcrumb(app).display
        assert {ids["B"], ids["C"]} <= tree_ids(app)
        await pilot.press("Z")
        assert "nothing is hoisted" in notices(app)

    run(app, body)
    with Loom.open(loom_path, readonly=True) as check:
        assert check.view_state("hoist") == []
        assert not [e for e in check.events() if e.kind not in ("create", "add", "visit",
                                                               "bookmark")]  # fmt: skip


def test_nested_hoists_persist_and_a_jump_outside_unhoists(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("l", "z", "l", "z")  # hoist A, then A1 inside it
        await pilot.pause()
        assert app.hoist.stack == [ids["A"], ids["A1"]]
        assert f"› #{ids['A1']}" in str(breadcrumb(app).render())
        await pilot.click("#breadcrumb")  # the breadcrumb leads back: one level
        await pilot.pause()
        assert app.hoist.stack == [ids["A"]] and app.tree_pane.root.data == ids["A"]
        await pilot.press("l", "z")
        await pilot.pause()
        app.go_to(ids["B"])  # a search result outside the hoist
        await pilot.pause()
        assert app.hoist.stack == [] and app.current == ids["B"]
        assert "unhoisted 2 levels" in notices(app)
        app.go_to(ids["A"])
        await pilot.press("z")  # hoist A again, and quit so
        await pilot.press("q")

    run(app, body)
    with Loom.open(loom_path, readonly=True) as check:
        assert check.view_state("hoist") == [ids["A"]]
        # a view, not an edit: nothing but the visits went into the log
        assert {e.kind for e in check.events()} <= {"create", "add", "visit"}
    # reopened: the app starts hoisted where it was left
    again, _ = open_app(loom_path)

    async def reopened(pilot: Pilot[int]) -> None:
        assert again.tree_pane.root.data == ids["A"] and breadcrumb(again).display

    run(again, reopened)


def test_hoisting_a_pruned_node_is_refused_and_pruning_the_hoist_unhoists(
    loom_path: Path,
) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        app.session.prune(ids["A1"])
        await pilot.press("P")  # show pruned
        await pilot.pause()
        app.go_to(ids["A1"])
        await pilot.press("z")
        await pilot.pause()
        assert f"node {ids['A1']} is pruned" in notices(app)
        assert app.hoist.stack == [] and app.tree_pane.root.data == ids["root"]
        await pilot.press("z")  # the root can't be hoisted either
        app.go_to(ids["root"])
        await pilot.press("z")
        assert "the root is the whole tree already" in notices(app)
        # hoist B, then prune it: the hoist falls back to the whole tree
        await pilot.press("P")
        app.go_to(ids["B"])
        await pilot.press("z")
        await pilot.pause()
        assert app.hoist.stack == [ids["B"]]
        await pilot.press("d")
        await pilot.pause()
        assert app.hoist.stack == [] and app.tree_pane.root.data == ids["root"]

    run(app, body)
    with Loom.open(loom_path, readonly=True) as check:
        assert check.view_state("hoist") == []
        assert check.header(ids["B"]).pruned


# --------------------------------------------------------------------------- unread marks


def test_unread_marks_go_when_visited_and_persist(loom_path: Path) -> None:
    app, ids = open_app(loom_path)
    order = ["A1", "A2", "B", "C", "C1"]

    async def body(pilot: Pilot[int]) -> None:
        for name in ("A", "B", "C"):
            assert "•" in tree_line(app, ids[name])
        assert "•" not in tree_line(app, ids["root"])
        await pilot.press("l")  # A
        app.remember_current()  # what the settle timer does after 0.4 s on a node
        await pilot.pause()
        assert "•" not in tree_line(app, ids["A"])
        assert "•" in tree_line(app, ids["A1"])
        seen = []
        for _ in order:
            await pilot.press("U")
            seen.append(app.current)
        assert seen == [ids[n] for n in order]  # depth first, in the tree's order
        await pilot.press("U")
        assert "nothing unread in the tree" in notices(app)
        await pilot.pause(0.6)  # the last one settles

    run(app, body)
    with Loom.open(loom_path, readonly=True) as check:
        # reading progress is kept by the log's visits: no undo step of its own
        kinds = {e.kind for e in check.events()}
        assert "visit" in kinds and kinds <= {"create", "add", "visit"}
    again, _ = open_app(loom_path)

    async def reopened(pilot: Pilot[int]) -> None:
        assert again.session.unread()[0] == set()
        for node_id in tree_ids(again):
            assert "•" not in tree_line(again, node_id)

    run(again, reopened)


def test_next_unread_stays_inside_a_hoist(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("l", "z", "U")
        assert app.current == ids["A1"]
        await pilot.press("U")
        assert app.current == ids["A2"]
        await pilot.press("U")
        assert app.current == ids["A2"] and "nothing unread under the hoisted" in notices(app)

    run(app, body)


# --------------------------------------------------------------------------- blind reading


def persona_loom(path: Path) -> dict[str, int]:
    loom = sample_loom(path)
    ids = ids_by_text(loom)
    post = {"luigi": 0.9, "waluigi": 0.1}
    with loom.batch():
        loom.set_personas(PERSONAS)
        marks = {"A": ("luigi", {"collapse": True}), "A1": ("waluigi", {"mode_collapse": True})}
        for name, (persona, mark) in marks.items():
            label = PersonaLabel(persona, "model", posterior=post, path_posterior=post, **mark)
            loom.set_persona(ids[name], label)
    loom.close()
    return ids


LEAKS = ("%", "logprob", "entropy", "fake-model", "luigi", "waluigi", "⚡", "↻", "▁", "▂", "▃")


def test_blind_reading_hides_every_cue_and_refuses_what_would_show_one(tmp_path: Path) -> None:
    path = tmp_path / "blind.loom"
    ids = persona_loom(path)
    app, _ = open_app(path)
    app.blind_seed = 7

    async def body(pilot: Pilot[int]) -> None:
        app.go_to(ids["A1"])
        await pilot.press("p")  # the persona panel, open before blind reading
        await pilot.pause()
        before = screen_text(app)
        assert "%" in before and "luigi" in before and "fake-model" in before
        await pilot.press("B")
        await pilot.pause()
        app.tree_pane.root.expand_all()
        await pilot.pause()
        app.clear_notifications()
        await pilot.pause()
        text = screen_text(app)
        assert "BLIND" in text and "blind reading" in text and "sort shuffled" in text
        assert "model hidden" in text
        for leak in LEAKS:
            assert leak not in text, f"{leak!r} shows in blind reading:\n{text}"
        assert not app.query_one(PersonaPanel).display
        for node_id in tree_ids(app):
            assert not any(leak in tree_line(app, node_id) for leak in LEAKS)
        # no shading: a model token is drawn plain
        path_text = app.reading.path
        assert path_text is not None
        assert app.reading.token_style(len(path_text.tokens) - 1).bgcolor is None
        # the inspector: the token, nothing of its probability or alternatives
        await pilot.press("i")
        await pilot.pause()
        inspector = str(app.query_one(TokenInspector).render())
        assert "blind reading" in inspector
        assert not any(leak in inspector for leak in LEAKS)
        await pilot.press("escape")
        # actions that would show a cue are refused
        for key in ("s", "p", "v", "K", "f", "C", "m"):
            await pilot.press(key)
            await pilot.pause()
            assert not isinstance(app.screen, MessageScreen | PromptScreen), key
        assert "blind reading hides" in notices(app)
        assert not app.query_one(PersonaPanel).display and not app.reading.shading
        # a hand label works, and its notice names no persona
        app.clear_notifications()
        await pilot.press("a")
        await pilot.pause()
        await pilot.press("enter")  # the first persona
        await pilot.pause()
        assert app.session.header(app.current).manual_persona == "luigi"
        assert "labelled (hidden) by hand" in notices(app) and "luigi" not in notices(app)
        assert not any(leak in tree_line(app, app.current) for leak in LEAKS)
        app.notify("model ready: fake-model, 42% sure")
        assert "fake-model" not in notices(app) and "%" not in notices(app)
        # siblings come in a fixed shuffle, and navigation follows it
        shown = [n.data for n in app.tree_pane.root.children]
        kids = [ids["A"], ids["B"], ids["C"]]
        assert shown == sorted(kids, key=lambda i: shuffle_rank(i, 7))
        app.go_to(shown[0])
        await pilot.press("j")
        assert app.current == shown[1]
        # and everything comes back
        await pilot.press("B")
        await pilot.pause()
        after = screen_text(app)
        assert "%" in after and "BLIND" not in after and app.reading.shading
        assert [n.data for n in app.tree_pane.root.children] == kids

    run(app, body)


def test_blind_reading_sets_filters_aside_and_restores_them(tmp_path: Path) -> None:
    path = tmp_path / "blind.loom"
    ids = persona_loom(path)
    app, _ = open_app(path)

    async def body(pilot: Pilot[int]) -> None:
        app.action_persona_filter_hide("luigi")
        await pilot.pause()
        assert ids["A"] not in tree_ids(app, expand=False)
        assert "hiding luigi" in screen_text(app)
        await pilot.press("B")
        await pilot.pause()
        assert ids["A"] in tree_ids(app, expand=False)  # hiding would tell
        app.clear_notifications()
        await pilot.pause()
        assert "luigi" not in screen_text(app)  # nor does the status bar name it
        await pilot.press("B")
        await pilot.pause()
        assert ids["A"] not in tree_ids(app, expand=False)
        assert "luigi" in screen_text(app)

    run(app, body)


def test_keys_in_help_and_palette(loom_path: Path) -> None:
    app, _ = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Hoist", "Unhoist", "Unhoist all", "Next unread", "Filter children",
                "Clear child filter", "Blind reading"} <= titles  # fmt: skip
        keys = live_keys(app, [app])
        listed = help_plain_text(help_text(APP_ACTIONS, keys))
        for binding in ("loom.hoist", "loom.unhoist", "loom.next_unread", "loom.child_filter",
                        "loom.blind"):  # fmt: skip
            assert binding in listed
        await pilot.press("f1")
        await pilot.pause()
        assert "Hoist: show the current node's subtree" in screen_text(app)

    run(app, body)


# --------------------------------------------------------------------------- with the model


@pytest.mark.model
def test_sort_by_entropy_and_filter_children(tmp_path: Path, engine: object) -> None:
    path = tmp_path / "entropy.loom"
    loom = tokenizing_loom(engine, path, prompt="Bob said:")
    app = make_app(loom, engine)  # type: ignore[arg-type]
    kids = app.session.generate(
        loom.root_id, 4, SamplerSettings(temperature=1.0, max_tokens=8, seed=5)
    )
    entropy = {k: float(np.nanmean(loom.node(k).tokens.entropy)) for k in kids}
    lp = {k: loom.header(k).mean_logprob for k in kids}

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("o", "o", "o")
        await pilot.pause()
        assert app.sort_order == "entropy" and "sort entropy" in screen_text(app)
        shown = [n.data for n in app.tree_pane.root.children]
        assert shown == sorted(kids, key=lambda k: entropy[k])
        assert all(f"H{entropy[k]:.2f}" in tree_line(app, k) for k in kids)
        # keep the children at or below the median entropy
        cut = float(np.median(list(entropy.values())))
        await pilot.press("K")
        await pilot.pause()
        assert isinstance(app.screen, PromptScreen)
        await type_text(pilot, f"entropy <= {cut:.4f}")
        await pilot.press("enter")
        await pilot.pause()
        kept = {k for k in kids if round(entropy[k], 4) <= round(cut, 4)}
        assert set(tree_ids(app, expand=False)) - {loom.root_id} == kept
        assert "filter entropy ≤" in screen_text(app)
        # a bad filter is one line, and the filter stays as it was
        await pilot.press("K")
        await pilot.pause()
        app.screen.query_one(Input).value = "loudness > 3"
        await pilot.press("enter")
        await pilot.pause()
        assert "unknown criterion" in notices(app)
        assert app.child_filter is not None and app.child_filter.criterion == "entropy"
        # by mean probability, as a percentage
        best = max(kids, key=lambda k: lp[k] or -99)
        app.set_child_filter(None)
        await pilot.pause()
        assert set(tree_ids(app, expand=False)) - {loom.root_id} == set(kids)
        threshold = np.exp(lp[best] or 0) * 100 - 0.01
        await pilot.press("K")
        await pilot.pause()
        await type_text(pilot, f"mean >= {threshold:.2f}%")
        await pilot.press("enter")
        await settle(pilot)
        assert set(tree_ids(app, expand=False)) - {loom.root_id} == {best}

    run(app, body)


def test_nodes_passed_through_are_read_and_kept(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("l", "j", "j")  # A, B, C without stopping: each was shown
        for name in ("A", "B", "C"):
            assert "•" not in tree_line(app, ids[name])
        assert "•" in tree_line(app, ids["A1"])
        await pilot.press("q")  # quitting keeps the place (C) and what was passed on the way

    run(app, body)
    with Loom.open(loom_path, readonly=True) as check:
        assert check.current == ids["C"] and check.view_state("read") == sorted(
            [ids["A"], ids["B"]]
        )
    assert Session(Loom.open(loom_path, readonly=True)).unread()[0] == {
        ids["A1"],
        ids["A2"],
        ids["C1"],
    }
