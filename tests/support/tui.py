"""Shared set-up for the TUI tests: a small loom, an app over it, key helpers.

Imported by the test_tui_* modules (it has no tests of its own).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.message import Message
from textual.pilot import Pilot

from loom.app.session import Session
from loom.config import load_config
from loom.engine.backend import Backend
from loom.engine.fake import FakeBackend, fake_tokens
from loom.store.loom import Loom, NewNode
from loom.store.tokenizer import FunctionTokenizer
from loom.tui.app import LoomApp

SIZE = (110, 32)


@pytest.fixture(autouse=True)
def isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every TUI test reads (and writes presets to) its own config file."""
    path = tmp_path / "config" / "config.toml"
    monkeypatch.setenv("LOOM_CONFIG", str(path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return path


def model_node(ids: list[int]) -> NewNode:
    tokens = fake_tokens(ids)
    return NewNode(tokens.text, tokens, "model")


def sample_loom(path: Path, backend: Backend | None = None) -> Loom:
    """root ─┬─ A (model) ─┬─ A1
    │             └─ A2
    ├─ B (model)
    └─ C (human) ── C1 (model)"""
    fake = FakeBackend()
    tokenizer = FunctionTokenizer((backend or fake).tokens_for)
    loom = Loom.create(path, title="sample", prompt="The croissant debate began.",
                       tokenizer=tokenizer)  # fmt: skip
    a, _b = loom.add_children(loom.root_id, [model_node([1, 2, 3, 4, 5, 6]), model_node([8, 9])])
    c = loom.add_child(loom.root_id, " Bob said hello", author="human")
    loom.add_children(a, [model_node([7, 8, 9]), model_node([0, 1])])
    loom.add_children(c, [model_node([2, 3])])
    loom.set_current(loom.root_id)
    return loom


def ids_by_text(loom: Loom) -> dict[str, int]:
    """Node ids of the sample loom by name (A, A1, A2, B, C, C1)."""
    root = loom.root_id
    a, b, c = (h.id for h in loom.children(root))
    a1, a2 = (h.id for h in loom.children(a))
    (c1,) = (h.id for h in loom.children(c))
    return {"root": root, "A": a, "B": b, "C": c, "A1": a1, "A2": a2, "C1": c1}


def make_app(loom: Loom, backend: Backend | None = None, **kwargs: Any) -> LoomApp:
    session = Session(loom, backend)
    app = LoomApp(session, load_config(), load_model=False, **kwargs)
    app.animation_level = "none"
    return app


def run(
    app: LoomApp,
    body: Callable[[Pilot[int]], Awaitable[None]],
    message_hook: Callable[[Message], None] | None = None,
) -> None:
    """Drive `app` headless with `body` (sync tests: no async plugin is needed)."""

    async def main() -> None:
        async with app.run_test(size=SIZE, message_hook=message_hook) as pilot:
            await pilot.pause()
            await body(pilot)

    asyncio.run(main())


async def settle(pilot: Pilot[int]) -> None:
    """Let workers finish and the screen catch up."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


async def until(pilot: Pilot[int], condition: Callable[[], bool], what: str) -> None:
    """Let the app run until `condition` holds (workers finish, messages arrive)."""
    for _ in range(2400):  # a generous bound for a loaded machine, not a timing
        if condition():
            await settle(pilot)
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def idle(app: LoomApp) -> bool:
    """No generation or labelling run is under way."""
    return app.generation is None and not app.labelling


async def export_in_app(pilot: Pilot[int], target: Path, fmt: str = "loom-json") -> None:
    """Export the whole loom with `E` as a user does: the format, the scope when asked (away
    from the root), the file; waits for the notice that says it was written."""
    from textual.widgets import Input

    from loom.formats import FORMATS
    from loom.tui.screens.dialogs import ChoiceScreen, PromptScreen

    app = pilot.app
    await pilot.press("E")
    assert isinstance(app.screen, ChoiceScreen)
    writable = [f.name for f in FORMATS.values() if f.can_write]
    await pilot.press(*["down"] * writable.index(fmt), "enter")
    await pilot.pause()
    if isinstance(app.screen, ChoiceScreen):  # away from the root: what to export
        await pilot.press("enter")  # the whole loom
        await pilot.pause()
    assert isinstance(app.screen, PromptScreen)
    app.screen.query_one(Input).value = str(target)
    await pilot.press("enter")
    await until(pilot, lambda: f" nodes to {target}" in notices(app), "the export")


async def type_text(pilot: Pilot[int], text: str) -> None:
    names = {" ": "space", "\n": "enter", "-": "minus", "#": "number_sign", ".": "full_stop",
             ",": "comma", "/": "slash"}  # fmt: skip
    await pilot.press(*(names.get(ch, ch) for ch in text))


def notices(app: LoomApp) -> str:
    """The text of every notification (toast) the app has shown and not yet expired."""
    return "\n".join(f"{n.title} {n.message}" for n in app._notifications)


def screen_text(app: LoomApp) -> str:
    """Everything on screen, as plain text (what a user would read)."""
    return "\n".join(
        "".join(segment.text for segment in line) for line in app.screen._compositor.render_strips()
    )


def tree_ids(app: LoomApp, *, expand: bool = True) -> set[int]:
    """The loom ids of the lines the tree pane holds: with `expand`, expanded all the way down;
    otherwise what is loaded now (the children of expanded nodes)."""
    if expand:
        app.tree_pane.root.expand_all()
    out: set[int] = set()
    stack = [app.tree_pane.root]
    while stack:
        node = stack.pop()
        if node.data is not None:
            out.add(node.data)
        stack.extend(node.children)
    return out


# --- the real model, for the Pilot tests that generate --------------------------------------


@pytest.fixture(scope="session")
def engine() -> Iterator[object]:
    from loom.engine.engine import Engine

    loaded = Engine.load(None, n_ctx=1024, n_seq_max=8)
    yield loaded
    loaded.close()


@pytest.fixture(autouse=True)
def small_generations(isolated_config: Path) -> None:
    """Short generations keep the suite quick on two cores."""
    isolated_config.parent.mkdir(parents=True, exist_ok=True)
    isolated_config.write_text(
        "[generation]\nn = 2\nmax_tokens = 6\n[multiverse]\ndepth = 2\nwidth = 3\n"
        "[presets.long]\nmax_tokens = 400\n"
    )
