"""Pilot tests of everything that generates, with the REAL default model (loaded once).

Each asserts on the loom file (re-opened read-only) and on what the screen shows.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
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
)
from textual.message import Message
from textual.pilot import Pilot

from loom.store.loom import Loom
from loom.tui.app import LoomApp
from loom.tui.messages import TokensArrived
from loom.tui.screens.multiverse import MultiverseScreen, MultiverseView

pytestmark = pytest.mark.model
__all__ = ["engine", "isolated_config", "small_generations"]

PROMPT = "Bob is a loyal patriot who sincerely despises croissants. Bob said:"


def new_loom(path: Path, engine: object) -> Loom:
    return tokenizing_loom(engine, path, title="t", prompt=PROMPT)


def reopen(path: Path) -> Loom:
    return Loom.open(path, readonly=True)


class StreamWatch:
    """Counts the token batches the app receives (what the user sees arrive): a message hook."""

    def __init__(self) -> None:
        self.batches = 0
        self.tokens = 0

    def __call__(self, message: Message) -> None:
        if isinstance(message, TokensArrived):
            self.batches += 1
            self.tokens += len(message.batch)


async def wait_for(pilot: Pilot[int], condition: object, timeout: float = 60.0) -> None:
    waited = 0.0
    while not condition():  # type: ignore[operator]
        await pilot.pause(0.05)
        waited += 0.05
        assert waited < timeout, "timed out"


def test_generate_children_streams_live_and_saves(tmp_path: Path, engine: object) -> None:
    path = tmp_path / "g.loom"
    loom = new_loom(path, engine)
    app = make_app(loom, engine)  # type: ignore[arg-type]
    watch = StreamWatch()

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("g")
        await settle(pilot)
        assert app.generation is None and len(app.last_generated) == 2
        text = screen_text(app)
        for node_id in app.last_generated:
            preview = app.session.loom.node(node_id).text.strip()[:10]
            assert preview.split("\n")[0] in text
        assert "tok/s" in text and "– tok/s" not in text

    run(app, body, watch)
    assert watch.batches >= 1 and watch.tokens >= 2
    with reopen(path) as check:
        kids = check.children(check.root_id)
        assert len(kids) == 2
        for kid in kids:
            node = check.node(kid.id)
            assert node.author == "model" and len(node.tokens) >= 1
            assert node.tokens.text.startswith(node.text) or node.text.startswith("")
            assert not np.isnan(node.tokens.logprobs).any()
            assert node.tokens.k == 5
            assert node.generation is not None and node.generation.model
            assert node.generation.batch_size == 2
        assert [e.kind for e in check.events()].count("add") == 1  # one transaction


@pytest.mark.parametrize("reproducible", [True, False])
def test_the_reproducible_setting_starts_every_generation_from_an_empty_cache(
    tmp_path: Path, engine: object, isolated_config: Path, reproducible: bool
) -> None:
    """With it on, every node the app makes is one `loom regenerate` reproduces bit for bit."""
    flag = "true" if reproducible else "false"
    isolated_config.write_text(f"[generation]\nn = 2\nmax_tokens = 6\nreproducible = {flag}\n")
    path = tmp_path / "r.loom"
    loom = new_loom(path, engine)
    app = make_app(loom, engine)  # type: ignore[arg-type]

    async def body(pilot: Pilot[int]) -> None:
        for _ in range(2):  # the second time, the root's path is resident in the cache
            await pilot.press("g")
            await settle(pilot)

    run(app, body)
    with reopen(path) as check:
        records = [check.node(kid.id).generation for kid in check.children(check.root_id)]
    assert len(records) == 4
    second = [r.from_empty_cache for r in records[2:] if r is not None]
    assert second == ([True, True] if reproducible else [False, False])


def test_generate_siblings(tmp_path: Path, engine: object) -> None:
    path = tmp_path / "s.loom"
    loom = new_loom(path, engine)
    first = loom.add_child(loom.root_id, " I hate them.", author="human")
    app = make_app(loom, engine)  # type: ignore[arg-type]

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("right")
        assert app.current == first
        await pilot.press("G")
        await settle(pilot)
        assert app.current == first  # the user stays where they were

    run(app, body)
    with reopen(path) as check:
        assert len(check.children(check.root_id)) == 3


def test_cancel_keeps_the_partial_tokens(tmp_path: Path, engine: object) -> None:
    path = tmp_path / "c.loom"
    loom = new_loom(path, engine)
    app = make_app(loom, engine)  # type: ignore[arg-type]
    app.preset = app._resolved_preset(app.config.presets["long"])
    watch = StreamWatch()

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("g")
        await wait_for(pilot, lambda: watch.tokens >= 4)
        # Tokens appear in the new (not yet saved) nodes as they come.
        live = screen_text(app)
        assert "⋯ #1" in live and "⋯ #2" in live and "generating" in live
        assert app.generation is not None and all(app.generation.texts)
        await pilot.press("escape")
        await settle(pilot)
        assert app.generation is None
        assert "cancelled: kept 2 partial" in notices(app)

    run(app, body, watch)
    with reopen(path) as check:
        kids = [check.node(h.id) for h in check.children(check.root_id)]
        assert len(kids) == 2
        assert all(0 < len(k.tokens) < 400 for k in kids)


def test_counterfactual_branch_from_an_alternative(tmp_path: Path, engine: object) -> None:
    path = tmp_path / "cf.loom"
    loom = new_loom(path, engine)
    app = make_app(loom, engine)  # type: ignore[arg-type]
    chosen: dict[str, int] = {}

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("g")
        await settle(pilot)
        await pilot.press("right", "i", "left")  # cursor on the 2nd-last token of the child
        node_id = app.current
        path_text = app.reading.path
        assert path_text is not None and app.reading.cursor is not None
        index = app.reading.cursor
        start, end = path_text.node_spans[node_id]
        alternatives = path_text.tokens.top(index)
        assert len(alternatives) >= 2
        chosen.update(node=node_id, at=index - start, length=end - start,
                      alt=alternatives[1].id)  # fmt: skip
        assert "token ‹" in screen_text(app)
        await pilot.press("2")
        await settle(pilot)
        assert app.current == node_id  # the head of the split

    run(app, body)
    with reopen(path) as check:
        head = check.node(chosen["node"])
        assert len(head.tokens) == chosen["at"]
        kids = [check.node(h.id) for h in check.children(head.id)]
        tails = [k for k in kids if k.generation is not None and not k.generation.forced_tokens]
        branches = [k for k in kids if k.generation is not None and k.generation.forced_tokens]
        assert len(tails) == 1 and len(tails[0].tokens) == chosen["length"] - chosen["at"]
        assert len(branches) == 2
        for branch in branches:
            assert int(branch.tokens.ids[0]) == chosen["alt"]
            assert branch.generation is not None
            assert branch.generation.forced_tokens == [chosen["alt"]]
        kinds = [e.kind for e in check.events() if e.kind != "visit"]
        assert kinds[-2:] == ["split", "add"]


def test_block_multiverse_creates_the_chosen_branch(tmp_path: Path, engine: object) -> None:
    path = tmp_path / "mv.loom"
    loom = new_loom(path, engine)
    app = make_app(loom, engine)  # type: ignore[arg-type]
    picked: list[tuple[int, float]] = []

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("m")
        assert isinstance(app.screen, MultiverseScreen)
        await settle(pilot)
        view = app.screen.query_one(MultiverseView)
        assert view.root is not None and len(view.root.children) == 3
        # Blocks are as tall as their probability: the likeliest is the tallest.
        firsts = [b for b in view.blocks() if b.depth == 0 and b.node is not None]
        assert firsts[0].height >= firsts[-1].height
        assert "%" in screen_text(app)
        await pilot.press("down", "right", "enter")  # 2nd token, then its likeliest follower
        await pilot.pause()
        selected = view.selected_path()
        picked.extend((n.token_id, n.logprob) for n in selected)  # type: ignore[misc]
        assert not isinstance(app.screen, MultiverseScreen)

    run(app, body)
    with reopen(path) as check:
        (kid,) = [check.node(h.id) for h in check.children(check.root_id)]
        assert kid.author == "model" and [int(i) for i in kid.tokens.ids] == [p[0] for p in picked]
        for got, (_id, logprob) in zip(kid.tokens.logprobs, picked, strict=True):
            assert math.isclose(float(got), logprob, rel_tol=1e-5)
        assert kid.tokens.k == 3


def test_model_loads_in_a_worker_with_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from loom.app.session import Session
    from loom.config import load_config
    from loom.engine.engine import Engine

    real_load = Engine.load
    release = threading.Event()  # the load is held until the test has seen its progress state

    def held_load(*args: object, **kwargs: object) -> Engine:
        release.wait(timeout=120)
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Engine, "load", held_load)

    path = tmp_path / "load.loom"
    Loom.create(path, prompt="Hello").close()
    loom = Loom.open(path)
    app = LoomApp(Session(loom), load_config(), model_path=None)
    app.animation_level = "none"

    async def body(pilot: Pilot[int]) -> None:
        try:
            await wait_for(pilot, lambda: "loading the model" in screen_text(app), timeout=300)
            assert app.session.backend is None
            await pilot.press("g")  # the UI answers while the worker loads
            await wait_for(pilot, lambda: "still loading" in notices(app))
        finally:
            release.set()
        await settle(pilot)
        assert app.session.backend is not None
        assert "Gemma" in screen_text(app) and "ready" in notices(app)
        assert "loading" not in screen_text(app)
        await pilot.press("g")
        await settle(pilot)

    run(app, body)
    with reopen(path) as check:
        assert len(check.children(check.root_id)) == 2


def test_quit_while_generating_saves_partials_first(tmp_path: Path, engine: object) -> None:
    path = tmp_path / "q.loom"
    loom = new_loom(path, engine)
    app = make_app(loom, engine)  # type: ignore[arg-type]
    app.preset = app._resolved_preset(app.config.presets["long"])
    watch = StreamWatch()

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("g")
        await wait_for(pilot, lambda: watch.tokens >= 2)
        await pilot.press("q")
        await settle(pilot)

    run(app, body, watch)
    with reopen(path) as check:
        assert len(check.children(check.root_id)) == 2


def test_switch_model_loads_the_chosen_one(tmp_path: Path) -> None:
    from loom.engine.fake import FakeBackend
    from loom.tui.screens.dialogs import ChoiceScreen

    path = tmp_path / "switch.loom"
    Loom.create(path, prompt="Hello").close()
    app = make_app(Loom.open(path), FakeBackend())

    async def body(pilot: Pilot[int]) -> None:
        assert "fake-model" in screen_text(app)
        await pilot.press("M")
        assert isinstance(app.screen, ChoiceScreen)
        assert "default model" in screen_text(app)
        await pilot.press("enter")  # the default model is listed first
        await settle(pilot)
        assert "Gemma" in app.session.model_name and "Gemma" in screen_text(app)
        assert "model ready" in notices(app)

    run(app, body)
