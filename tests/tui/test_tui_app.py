"""Pilot tests of every action that doesn't need the model (a FakeBackend stands in where a
tokenizer is wanted). Each asserts on the loom file (re-opened read-only) and on the screen."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.tui import (
    ids_by_text,
    isolated_config,
    make_app,
    notices,
    run,
    sample_loom,
    screen_text,
    settle,
    type_text,
)
from textual.pilot import Pilot

from loom.engine.fake import FakeBackend
from loom.store.loom import Loom
from loom.tui.app import LoomApp
from loom.tui.screens.dialogs import ChoiceScreen, MessageScreen, PromptScreen, TextEditScreen
from loom.tui.screens.help import HelpScreen
from loom.tui.screens.sampler import SamplerScreen
from loom.tui.screens.search import SearchScreen
from loom.tui.widgets.inspector import TokenInspector
from loom.tui.widgets.reading_pane import ReadingPane

__all__ = ["isolated_config"]  # an autouse fixture, imported so it applies here


def reopen(path: Path) -> Loom:
    return Loom.open(path, readonly=True)


@pytest.fixture
def loom_path(tmp_path: Path) -> Path:
    path = tmp_path / "sample.loom"
    sample_loom(path).close()
    return path


def open_app(loom_path: Path, backend: FakeBackend | None = None) -> tuple[LoomApp, dict[str, int]]:
    fake = backend or FakeBackend()
    from loom.store.tokenizer import FunctionTokenizer

    loom = Loom.open(loom_path, tokenizer=FunctionTokenizer(fake.tokens_for))
    return make_app(loom, fake), ids_by_text(loom)


def last_style(app: LoomApp) -> object:
    path = app.reading.path
    assert path is not None
    return app.reading.token_style(len(path.tokens) - 1)


def tree_cursor(app: LoomApp) -> int | None:
    node = app.tree_pane.cursor_node
    return None if node is None else node.data


# --------------------------------------------------------------------------- layout


def test_main_screen_shows_tree_path_text_and_status(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        text = screen_text(app)
        assert "root" in text and "The croissant debate began." in text
        assert " cat sat on a mat." in text  # child A's preview in the tree
        assert "fake-model" in text and "sample.loom" in text and "saved" in text
        # Off-path branches are collapsed and children load lazily: only root's are loaded.
        assert app.tree_pane.node_for(ids["A1"]) is None
        assert app.tree_pane.node_for(ids["A"]) is not None

    run(app, body)


def test_navigation_keys_arrows_and_vim(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        steps = [("right", "A"), ("down", "B"), ("j", "C"), ("k", "B"), ("up", "A"),
                 ("l", "A1"), ("down", "A2"), ("h", "A"), ("left", "root"), ("right", "A"),
                 ("right_square_bracket", "A1"), ("right_square_bracket", "A2"),
                 ("right_square_bracket", "B"), ("right_square_bracket", "C1"),
                 ("left_square_bracket", "B"), ("home", "root")]  # fmt: skip
        for key, name in steps:
            await pilot.press(key)
            assert app.current == ids[name], f"after {key}"
            assert tree_cursor(app) == ids[name]
        # "child" goes back to the child last visited (B, by the last `[`).
        await pilot.press("right")
        assert app.current == ids["B"]
        await pilot.press("down", "right", "left", "left", "right")
        assert app.current == ids["C"]
        await pilot.press("up", "up", "right", "down")
        assert app.current == ids["A2"]
        # The reading pane holds the whole path; the tree shows the path expanded, the rest
        # collapsed.
        assert app.reading.visible_text().startswith("The croissant debate began. cat sat")
        assert app.tree_pane.node_for(ids["A"]).is_expanded
        assert not app.tree_pane.node_for(ids["C"]).is_expanded
        await pilot.pause(0.6)  # the visit is written once the user settles

    run(app, body)
    with reopen(loom_path) as loom:
        assert loom.current == ids["A2"]


def test_clicking_a_tree_node_makes_it_current(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        line = app.tree_pane.node_for(ids["B"]).line
        await pilot.click("#tree", offset=(12, line))
        await pilot.pause()
        assert app.current == ids["B"]

    run(app, body)


# --------------------------------------------------------------------------- the token cursor


def test_token_cursor_and_inspector(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("right", "i")
        assert isinstance(app.focused, ReadingPane)
        inspector = app.query_one(TokenInspector)
        assert inspector.display
        path = app.reading.path
        assert path is not None
        assert app.reading.cursor == len(path.tokens) - 1  # last token of the current node
        text = screen_text(app)
        assert "token ‹.›" in text and "entropy" in text and "← in the text" in text
        await pilot.press("left", "left")
        assert app.reading.cursor == len(path.tokens) - 3
        assert "token ‹·a›" in screen_text(app)
        await pilot.press("home")
        assert path.owners[app.reading.cursor] == ids["A"]
        assert app.reading.cursor == path.node_spans[ids["A"]][0]
        await pilot.press("escape")
        assert not inspector.display and app.focused is app.tree_pane

    run(app, body)


# --------------------------------------------------------------------------- edits


def test_write_a_human_child(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("right", "w")
        assert isinstance(app.screen, TextEditScreen)
        await type_text(pilot, " and then")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.session.summary(app.current).author == "human"
        assert app.reading.visible_text().endswith("mat. and then")

    run(app, body)
    with reopen(loom_path) as loom:
        (child,) = [h for h in loom.children(ids["A"]) if h.author == "human"]
        assert child.text == " and then"
        assert [str(t) for t in loom.node(child.id).tokens.texts] == [" and", " then"]


def test_edit_a_node_tokens_follow(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("right", "down", "e")
        assert isinstance(app.screen, TextEditScreen)
        await type_text(pilot, " barked")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "dog ran barked" in app.reading.visible_text()

    run(app, body)
    with reopen(loom_path) as loom:
        node = loom.node(ids["B"])
        assert node.text == " dog ran barked"
        assert node.tokens.text == " dog ran barked"


def test_split_at_token_cursor_then_merge(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("right", "i", "left", "left", "X")
        await pilot.pause()
        tail = app.current
        assert tail != ids["A"]
        assert app.session.nav.parent_of(tail) == ids["A"]
        assert app.reading.visible_text().endswith("cat sat on a mat.")  # text unchanged
        assert "split" in notices(app)
        await pilot.press("J")  # merge the tail back into A
        await pilot.pause()
        assert app.current == ids["A"]

    run(app, body)
    with reopen(loom_path) as loom:
        assert loom.node(ids["A"]).text == " cat sat on a mat."
        kinds = [e.kind for e in loom.events()]
        assert "split" in kinds and "merge" in kinds


def test_prune_show_pruned_unprune(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("right", "down", "d")  # prune B
        assert app.current == ids["root"]
        assert app.tree_pane.node_for(ids["B"]) is None  # hidden
        await pilot.press("P")  # show pruned
        assert app.tree_pane.node_for(ids["B"]) is not None
        await pilot.press("P", "D")  # hide again; unprune offers B from the root
        assert isinstance(app.screen, ChoiceScreen)
        await pilot.press("enter")
        await pilot.pause()
        assert app.current == ids["B"]

    run(app, body)
    with reopen(loom_path) as loom:
        assert not loom.header(ids["B"]).pruned
        # the last two edits (a visit, recorded when the cursor settles, may come after them)
        assert [e.kind for e in loom.events() if e.kind != "visit"][-2:] == ["prune", "unprune"]


def test_undo_and_redo(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("right", "down", "d")
        await pilot.press("u")
        await pilot.pause()
        assert app.tree_pane.node_for(ids["B"]) is not None
        assert "undid: prune" in notices(app)
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert app.tree_pane.node_for(ids["B"]) is None

    run(app, body)
    with reopen(loom_path) as loom:
        assert loom.header(ids["B"]).pruned


def test_bookmarks_and_jumps(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("right", "b", "down", "down", "right", "b", "home")
        assert "★" in screen_text(app)
        await pilot.press("n")
        assert app.current == ids["A"]
        await pilot.press("n")
        assert app.current == ids["C1"]
        await pilot.press("N")
        assert app.current == ids["A"]
        await pilot.press("b")  # again: remove

    run(app, body)
    with reopen(loom_path) as loom:
        assert loom.bookmarks() == [ids["C1"]]


def test_tag_add_and_remove(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("right", "t")
        assert isinstance(app.screen, PromptScreen)
        await type_text(pilot, "waluigi")
        await pilot.press("enter")
        await pilot.press("t")
        await type_text(pilot, "luigi")
        await pilot.press("enter", "t")
        await type_text(pilot, "-waluigi")
        await pilot.press("enter")
        await pilot.pause()
        assert "#luigi" in screen_text(app)

    run(app, body)
    with reopen(loom_path) as loom:
        assert loom.header(ids["A"]).tags == ["luigi"]


def test_search_and_jump(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("slash")
        assert isinstance(app.screen, SearchScreen)
        await type_text(pilot, "hello")
        await pilot.press("enter")
        await pilot.pause()
        assert "1 result" in screen_text(app)
        await pilot.press("enter")
        await pilot.pause()
        assert app.current == ids["C"]

    run(app, body)


def test_sort_siblings_by_probability(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        order = lambda: [n.data for n in app.tree_pane.root.children]  # noqa: E731
        assert order() == [ids["A"], ids["B"], ids["C"]]
        await pilot.press("o")  # mean logprob: B's two tokens are likelier on average
        means = {k: app.session.summary(ids[k]).mean_logprob for k in ("A", "B")}
        expected = sorted(("A", "B"), key=lambda k: -means[k])
        assert order() == [ids[k] for k in expected] + [ids["C"]]  # human text last
        assert "sort mean" in screen_text(app)
        await pilot.press("o")  # cumulative: the shorter B wins
        assert order()[0] == ids["B"]
        await pilot.press("right", "down")  # navigation follows the shown order
        assert app.current == order()[1]
        await pilot.press("o")  # mean entropy, most certain first; human text last
        entropy = app.session.mean_entropies([ids["A"], ids["B"]])
        expected = sorted(("A", "B"), key=lambda k: entropy[ids[k]] or 0.0)
        assert order() == [ids[k] for k in expected] + [ids["C"]]
        assert "sort entropy" in screen_text(app)
        await pilot.press("o")
        assert order() == [ids["A"], ids["B"], ids["C"]]

    run(app, body)


def test_branch_statistics(loom_path: Path) -> None:
    app, _ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("right", "s")
        assert isinstance(app.screen, MessageScreen)
        text = screen_text(app)
        for words in ("cumulative logprob", "mean logprob", "least likely token", "mean entropy"):
            assert words in text
        stats = app.session.branch_stats(app.current)
        assert stats.node.n_tokens == 6 and stats.path.n_scored == 6
        assert f"{stats.node.cum_logprob:.3f}" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, MessageScreen)

    run(app, body)


def test_sampler_presets_apply_and_save(loom_path: Path, isolated_config: Path) -> None:
    app, _ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("c")
        screen = app.screen
        assert isinstance(screen, SamplerScreen)
        from textual.widgets import Input, Select

        screen.query_one("#preset", Select).value = "focused"
        await pilot.pause()
        assert screen.query_one("#temperature", Input).value == "0.7"
        screen.query_one("#name", Input).value = "mine"
        screen.query_one("#n", Input).value = "2"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.preset.name == "mine" and app.preset.n == 2 and app.preset.top_k == 40
        assert "preset mine" in screen_text(app)

    run(app, body)
    saved = isolated_config.read_text()
    assert "[presets.mine]" in saved and "n = 2" in saved


def test_export_every_writable_format(loom_path: Path, tmp_path: Path) -> None:
    from loom.formats import FORMATS

    writable = [name for name, f in FORMATS.items() if f.can_write]
    for index, fmt in enumerate(writable):
        app, _ids = open_app(loom_path)
        target = tmp_path / f"out-{fmt}.txt"

        async def body(
            pilot: Pilot[int], app: LoomApp = app, index: int = index, target: Path = target
        ) -> None:
            await pilot.press("E")
            assert isinstance(app.screen, ChoiceScreen)
            await pilot.press(*(["down"] * index), "enter")
            assert isinstance(app.screen, PromptScreen)
            from textual.widgets import Input

            app.screen.query_one(Input).value = str(target)
            await pilot.press("enter")
            await pilot.pause()
            assert "exported" in notices(app)

        run(app, body)
        assert target.exists() and "croissant" in target.read_text(), fmt


def test_export_never_replaces_a_loom_file(loom_path: Path, tmp_path: Path) -> None:
    """Exporting onto the open loom's own file (or any other loom) is refused, not written."""
    other = tmp_path / "other.loom"
    sample_loom(other).close()
    other_bytes = other.read_bytes()
    with reopen(loom_path) as loom:
        before = [(n.id, n.parent, n.text) for n in loom.to_document(events=False).nodes]
    app, _ids = open_app(loom_path)
    fine = tmp_path / "fine.json"

    async def body(pilot: Pilot[int]) -> None:
        from textual.widgets import Input

        for target in (loom_path, Path(f"{loom_path.parent}/./{loom_path.name}"), other, fine):
            await pilot.press("E", "enter")  # the first format (loom-json)
            assert isinstance(app.screen, PromptScreen)
            app.screen.query_one(Input).value = str(target)
            await pilot.press("enter")
            await pilot.pause()
        assert notices(app).count("Not exported") == 3
        assert f"exported 7 nodes to {fine}" in notices(app)

    run(app, body)
    with reopen(loom_path) as loom:
        assert [(n.id, n.parent, n.text) for n in loom.to_document(events=False).nodes] == before
    assert other.read_bytes() == other_bytes
    assert fine.read_text().startswith("{")


def test_switch_theme_at_run_time(loom_path: Path) -> None:
    app, _ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        assert app.theme == "loom-dark"
        before = last_style(app)
        await pilot.press("T")
        assert isinstance(app.screen, ChoiceScreen)
        await pilot.press("up", "enter")  # the list opens on the current theme
        await pilot.pause()
        assert app.theme == "loom-cividis"
        await pilot.press("right")
        assert last_style(app) != before  # the shading follows the theme's scale

    run(app, body)


def test_shading_toggle_and_legend(loom_path: Path) -> None:
    app, _ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("right")
        assert "p 0" in screen_text(app)
        shaded = last_style(app)
        assert shaded.bgcolor is not None
        await pilot.press("v")
        assert "shading off" in screen_text(app)
        assert last_style(app).bgcolor is None

    run(app, body)


# --------------------------------------------------------------------------- help, palette, keys


def test_help_lists_every_action_with_live_keys(loom_path: Path, isolated_config: Path) -> None:
    isolated_config.parent.mkdir(parents=True, exist_ok=True)
    isolated_config.write_text('[keymap]\n"loom.generate" = "ctrl+g"\n"loom.bookmark" = "B"\n')
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        from loom.tui.screens.help import help_plain_text

        help_text = help_plain_text(app.screen.help_group)
        from loom.tui.keymap import APP_ACTIONS

        for action in APP_ACTIONS:
            assert action.help in help_text and action.id in help_text
        assert "ctrl+g" in help_text.lower() or "^g" in help_text.lower()
        await pilot.press("escape")
        await pilot.press("right", "B")  # the rebound bookmark key works
        await pilot.pause()

    run(app, body)
    with reopen(loom_path) as loom:
        assert loom.bookmarks() == [ids["A"]]


def test_command_palette_runs_actions(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for expected in ("Generate", "Siblings", "Multiverse", "Search", "Write", "Edit",
                         "Split", "Merge", "Prune", "Unprune", "Undo", "Redo", "Bookmark",
                         "Tag", "Stats", "Sort", "Sampler", "Export", "Model", "Theme",
                         "Help", "Quit", "Next leaf", "Parent"):  # fmt: skip
            assert expected in titles
        await pilot.press("ctrl+p")
        await pilot.pause()
        await type_text(pilot, "Next leaf")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert app.current == ids["A1"]

    run(app, body)


def test_quit_key(loom_path: Path) -> None:
    app, _ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("q")
        await pilot.pause()

    run(app, body)
    assert app.return_code == 0


# --------------------------------------------------------------------------- safety


def test_model_text_is_inert(tmp_path: Path) -> None:
    path = tmp_path / "nasty.loom"
    loom = sample_loom(path)
    nasty = "\x1b[31m[bold red]boo[/bold red]\x1b]0;title\x07 [link=x]y[/link]"
    node = loom.add_child(loom.root_id, nasty, author="human")
    app = make_app(loom, FakeBackend())

    async def body(pilot: Pilot[int]) -> None:
        app.go_to(node)
        await pilot.pause()
        text = screen_text(app)
        assert "\x1b" not in text and "\x07" not in text
        assert "[bold red]boo[/bold red]" in text  # shown literally, never applied
        assert "\\x1b" in text  # shown as an escape, never obeyed

    run(app, body)


def test_persona_chips_and_tags_with_markup_stay_literal(loom_path: Path) -> None:
    from loom.store.model import Persona, PersonaLabel

    with Loom.open(loom_path) as loom:
        ids = ids_by_text(loom)
        loom.set_personas([Persona("luigi", "loyal", "green"), Persona("waluigi", "not", "red")])
        loom.set_persona(ids["A"], PersonaLabel("luigi", "model", {"luigi": 0.9}))
        loom.set_manual_persona(ids["B"], "waluigi")
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        text = screen_text(app)
        assert "[luigi]" in text and "[waluigi*]" in text  # * marks a hand label
        await pilot.press("t")
        await type_text(pilot, "[b]x")
        await pilot.press("enter")
        await pilot.pause()
        assert "#[b]x" in screen_text(app)

    run(app, body)


def test_without_a_model_generation_is_off_with_a_reason(loom_path: Path) -> None:
    loom = Loom.open(loom_path)
    app = make_app(loom, None)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("g")
        await pilot.pause()
        assert "generation is off: no model loaded" in notices(app)
        assert "none — generation is off" in screen_text(app)  # the status bar says why
        await pilot.press("m")
        await pilot.pause()
        assert "Can't build a multiverse" in notices(app)

    run(app, body)
    with reopen(loom_path) as check:
        assert len(check.children(check.root_id)) == 3


def test_a_failing_model_load_opens_the_loom_read_only_for_generation(loom_path: Path) -> None:
    loom = Loom.open(loom_path)
    from loom.app.session import Session
    from loom.config import load_config

    bad = loom_path.parent / "broken.gguf"
    bad.write_bytes(b"not a gguf at all")
    app = LoomApp(Session(loom), load_config(), model_path=bad)
    app.animation_level = "none"

    async def body(pilot: Pilot[int]) -> None:
        await settle(pilot)
        assert "No model" in notices(app) and "read-only for generation" in notices(app)
        assert app.session.backend is None and app.session.no_model_reason
        await pilot.press("right", "b")  # everything else still works
        await pilot.pause()
        assert app.session.summary(app.current).bookmarked

    run(app, body)


def test_read_only_loom_refuses_edits_and_keeps_the_file(loom_path: Path) -> None:
    before = loom_path.read_bytes()
    loom = Loom.open(loom_path, readonly=True)
    app = make_app(loom, FakeBackend())

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("right", "b", "d", "w")
        await pilot.pause()
        assert "read-only" in notices(app)
        assert not isinstance(app.screen, TextEditScreen)
        await pilot.press("down")
        assert app.current != app.session.loom.root_id

    run(app, body)
    assert loom_path.read_bytes() == before


def test_generation_with_the_fake_backend_streams_and_saves(loom_path: Path) -> None:
    """The streaming plumbing (placeholders, batches, one transaction) without the model."""
    # slow enough steps that the generation is surely still running when the test looks
    app, ids = open_app(loom_path, FakeBackend(delay_s=0.05))

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("right", "right", "down", "g")
        await pilot.pause(0.15)
        assert app.generation is not None
        assert "⋯ #1" in screen_text(app)  # live placeholders
        await settle(pilot)
        assert app.generation is None and len(app.last_generated) == 4

    run(app, body)
    with reopen(loom_path) as loom:
        assert len(loom.children(ids["A2"])) == 4


def test_replay_steps_through_the_history(loom_path: Path) -> None:
    from loom.config import load_config
    from loom.tui.replay import ReplayApp

    with Loom.open(loom_path) as loom:
        loom.prune(ids_by_text(loom)["B"])
    source = Loom.open(loom_path, readonly=True)
    app = ReplayApp(source, load_config())
    app.animation_level = "none"
    kinds = [e.kind for e in source.events() if e.kind != "visit"]

    async def body(pilot: Pilot[int]) -> None:
        await pilot.pause()
        assert "event 1/" in screen_text(app), screen_text(app)
        assert len(app.tree_pane.root.children) == 0
        await pilot.press("full_stop")  # root's first children appear
        assert len(app.tree_pane.root.children) == 2
        assert kinds[1] in screen_text(app)
        await pilot.press("greater_than_sign")  # the last event: B pruned (and shown, current)
        b = ids_by_text(app.session.loom)["B"]
        assert app.current == b and app.session.summary(b).pruned
        assert "prune" in screen_text(app)
        await pilot.press("comma", "less_than_sign")
        assert "event 1/" in screen_text(app)
        await pilot.press("w")  # a replay is read-only
        assert "read-only" in notices(app)

    run(app, body)
    source.close()
