"""Pilot tests of the memory dialog (`Y`) with the REAL default model: the memory is kept (one
undo step), the status bar says which is in effect where, `g` reads it, and a memory that cannot
fit is refused with a notice. Each checks the loom file and the screen."""

from __future__ import annotations

from pathlib import Path

import pytest
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
    type_text,
)
from textual.pilot import Pilot
from textual.widgets import Input, RadioButton, TextArea

from loom.store.loom import Loom
from loom.store.model import Memory
from loom.tui.screens.memory import MemoryScreen

pytestmark = pytest.mark.model
__all__ = ["engine", "isolated_config", "small_generations"]

PROMPT = "Once upon a time, there was a"


def new_loom(path: Path, engine: object) -> Loom:
    return tokenizing_loom(engine, path, title="t", prompt=PROMPT)


def status(app: object) -> str:
    return app.status.render().plain  # type: ignore[attr-defined, no-any-return]


def test_y_keeps_a_node_memory_the_status_bar_shows_it_and_g_reads_it(
    tmp_path: Path, engine: object
) -> None:
    path = tmp_path / "m.loom"
    loom = new_loom(path, engine)
    app = make_app(loom, engine)  # type: ignore[arg-type]

    async def body(pilot: Pilot[int]) -> None:
        root = app.current
        assert "memory:" not in status(app)
        await pilot.press("Y")
        await pilot.pause()
        assert isinstance(app.screen, MemoryScreen)
        assert "in effect here: none" in screen_text(app)
        await type_text(pilot, "The narrator is a pirate. Arr.\n")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not isinstance(app.screen, MemoryScreen)
        assert loom.memory(root) == Memory("The narrator is a pirate. Arr.\n", node=root)
        assert f"memory: node #{root} (before)" in status(app)
        used = int(status(app).split("ctx ")[1].split("/")[0])
        memory_tokens = len(engine.tokenize("The narrator is a pirate. Arr.\n"))  # type: ignore[attr-defined]
        assert used == len(loom.path_tokens(root)) + 1 + memory_tokens

        await pilot.press("g")
        await settle(pilot)
        children = [h.id for h in loom.children(root)]
        assert len(children) == 2
        for child in children:
            assert loom.node(child).generation.memory == [  # type: ignore[union-attr]
                Memory("The narrator is a pirate. Arr.\n", node=root)
            ]
        app.go_to(children[0])
        await pilot.pause()
        assert f"memory: inherited from #{root} (before)" in status(app)

        await pilot.press("u")  # the generation
        await pilot.press("u")  # the memory
        await settle(pilot)
        assert loom.memory(root) is None
        assert "memory:" not in status(app)

    run(app, body)
    with Loom.open(path, readonly=True) as again:
        assert again.memory(again.root_id) is None
        assert [e.kind for e in again.events()].count("memory") == 1


def test_the_dialog_edits_the_loom_memory_as_a_note_and_clears_it(
    tmp_path: Path, engine: object
) -> None:
    path = tmp_path / "m.loom"
    loom = new_loom(path, engine)
    loom.set_memory(None, Memory("old loom memory"))
    app = make_app(loom, engine)  # type: ignore[arg-type]

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("Y")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, MemoryScreen) and screen.scope is None  # the loom's is there
        area = screen.query_one(TextArea)
        assert area.text == "old loom memory"
        area.text = "[Genre: horror]"
        screen.query_one("#memory-depth", Input).value = "4"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert loom.memory(None) == Memory("[Genre: horror]", depth=4)
        assert "memory: loom (note at 4)" in status(app)
        prompt = app.session.prompt(app.current)
        path_ids = [int(t) for t in loom.path_tokens(app.current).ids]
        note = engine.tokenize("[Genre: horror]")  # type: ignore[attr-defined]
        assert prompt.ids == path_ids[:-4] + note + path_ids[-4:]

        await pilot.press("Y")  # a bad depth is said, and the dialog stays
        await pilot.pause()
        app.screen.query_one("#memory-depth", Input).value = "four"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, MemoryScreen)
        assert "number of tokens" in notices(app)
        await pilot.press("ctrl+d")
        await settle(pilot)
        assert loom.memory(None) is None and "memory:" not in status(app)

        await pilot.press("Y")  # switching to the node's scope shows its (empty) memory
        await pilot.pause()
        app.screen.query_one("#scope-node", RadioButton).value = True
        await pilot.pause()
        assert app.screen.scope == app.current  # type: ignore[attr-defined]
        assert app.screen.query_one(TextArea).text == ""
        await pilot.press("escape")
        await pilot.pause()

    run(app, body)


def test_a_memory_too_long_for_the_context_is_refused_with_a_notice(
    tmp_path: Path, engine: object
) -> None:
    path = tmp_path / "m.loom"
    loom = new_loom(path, engine)
    app = make_app(loom, engine)  # type: ignore[arg-type]

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("Y")
        await pilot.pause()
        app.screen.query_one(TextArea).text = "word " * 1100  # the test engine holds 1024
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "too many" in notices(app) and "Memory not kept" in notices(app)
        assert loom.memory(app.current) is None and loom.memory(None) is None
        # A memory made too long elsewhere (another tool, an import) stops `g` with a notice.
        loom.set_memory(None, Memory("word " * 1100))
        await pilot.press("g")
        await settle(pilot)
        assert "the memory is" in notices(app) and app.generation is None
        assert loom.children(loom.root_id) == []

    run(app, body)


def test_on_a_descendant_the_dialog_edits_the_inherited_memory_where_it_is_kept(
    tmp_path: Path, engine: object
) -> None:
    path = tmp_path / "m.loom"
    loom = new_loom(path, engine)
    root = loom.root_id
    child = loom.add_child(root, " dragon")
    grandchild = loom.add_child(child, " who slept")
    loom.set_memory(child, Memory("Dragons everywhere.\n"))
    app = make_app(loom, engine)  # type: ignore[arg-type]

    async def body(pilot: Pilot[int]) -> None:
        app.go_to(grandchild)
        await pilot.pause()
        assert f"memory: inherited from #{child} (before)" in status(app)
        await pilot.press("Y")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, MemoryScreen) and screen.scope == child
        assert screen.query_one(TextArea).text == "Dragons everywhere.\n"
        screen.query_one(TextArea).text = "Only one dragon.\n"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert loom.memory(child) == Memory("Only one dragon.\n", node=child)
        assert loom.memory(grandchild) is None

        await pilot.press("Y")  # the grandchild's own memory replaces the inherited one
        await pilot.pause()
        app.screen.query_one("#scope-node", RadioButton).value = True
        await pilot.pause()
        assert app.screen.scope == grandchild  # type: ignore[attr-defined]
        app.screen.query_one(TextArea).text = "A mouse's tale.\n"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert f"memory: node #{grandchild} (before)" in status(app)
        assert app.session.memories_at(grandchild) == [Memory("A mouse's tale.\n", node=grandchild)]

    run(app, body)
