"""Journeys through the app (Textual's Pilot, the real default model): the README's first
session with the keys a person presses, then its replay; and the counterfactual journey — pick
another token in the inspector, branch there, watch it happen again in the replay.

Every step is checked on the screen and on the loom file; the replays are compared with the
store's own `state_at` at every event.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.cli import (
    CROISSANT,
    cli_env,
    event_kinds,
    ok,
    parse_timeline,
    run_loom,
    token_record,
    tree_record,
)
from support.engines import default_gguf, engine
from support.store import tokenizing_loom
from support.tui import (
    export_in_app,
    idle,
    isolated_config,
    make_app,
    notices,
    run,
    screen_text,
    tree_ids,
    until,
)
from textual.pilot import Pilot

from loom.cli import main as loom_cli
from loom.config import load_config
from loom.formats import read_document
from loom.store.loom import Loom
from loom.store.replay import state_at
from loom.tui.replay import ReplayApp
from loom.tui.widgets.inspector import TokenInspector

pytestmark = pytest.mark.model
__all__ = ["default_gguf", "engine", "isolated_config"]  # fixtures

PROMPT = "Bob is a loyal patriot who sincerely despises croissants. Bob said:"


@pytest.fixture(autouse=True)
def short_generations(isolated_config: Path) -> None:
    """`g` writes three branches of eight tokens (quick on two cores)."""
    isolated_config.parent.mkdir(parents=True, exist_ok=True)
    isolated_config.write_text("[generation]\nn = 3\nmax_tokens = 8\n", encoding="utf-8")


def state(doc: Any) -> dict[int, tuple[Any, ...]]:
    """What the tree shows of a document: place, author, text, marks and label of each node."""
    return {
        n.id: (
            n.parent,
            n.author,
            n.text,
            n.pruned,
            n.bookmarked,
            n.manual_persona or (n.persona.label if n.persona else None),
        )
        for n in doc.nodes
    }


def shown_state(app: ReplayApp) -> dict[int, tuple[Any, ...]]:
    return state(app.session.loom.to_document(events=False))


async def step_through(pilot: Pilot[int], app: ReplayApp, source: Loom) -> list[int]:
    """Step the replay from the first event to the last, checking the view at each stop
    against the store's state at that event; the seqs stopped at."""
    events = source.events()
    stops = [app.seq]
    assert app.seq == events[0].seq
    assert shown_state(app) == state(state_at(events, app.seq, tokens=source))
    while app.seq < events[-1].seq:
        await pilot.press("full_stop")
        await pilot.pause()
        assert app.seq > stops[-1], "the replay did not move"
        stops.append(app.seq)
        assert shown_state(app) == state(state_at(events, app.seq, tokens=source)), app.seq
        assert f"event {app.seq}/{events[-1].seq}" in app.query_one("#replay-bar").plain  # type: ignore[attr-defined]
    return stops


def open_replay(path: Path) -> tuple[ReplayApp, Loom]:
    source = Loom.open(path, readonly=True)
    app = ReplayApp(source, load_config())
    app.animation_level = "none"
    return app, source


# --------------------------------------------------------------------------- the first session


def test_the_first_session_in_the_app(tmp_path: Path, engine: Any) -> None:
    path = tmp_path / "croissant.loom"
    exported = tmp_path / "croissant.json"
    assert loom_cli(["new", str(path), "--personas", str(CROISSANT)]) == 0
    loom = Loom.open(path)
    app = make_app(loom, engine)
    seen: dict[str, Any] = {}

    async def body(pilot: Pilot[int]) -> None:
        root = app.current
        await pilot.press("g")  # three branches; the persona set labels them when they land
        await until(pilot, lambda: idle(app) and len(app.last_generated) == 3, "generate + label")
        kids = list(app.last_generated)
        assert [h.id for h in loom.children(root)] == kids
        assert all(loom.header(k).persona is not None for k in kids)
        assert tree_ids(app) == {root, *kids}
        labels = [loom.header(k).label for k in kids]
        for label in filter(None, labels):  # the tree names each decided persona
            assert label in screen_text(app)

        await pilot.press("right")  # onto the first branch, and prune it
        pruned = app.current
        assert pruned == kids[0]
        await pilot.press("d")
        assert app.current == root and loom.header(pruned).pruned
        assert pruned not in tree_ids(app) and "pruned" in notices(app)
        await pilot.press("u")  # undo brings it back
        assert not loom.header(pruned).pruned and pruned in tree_ids(app)

        await pilot.press("right", "down")  # the second branch: bookmark it
        marked = app.current
        assert marked == kids[1]
        await pilot.press("b")
        assert loom.header(marked).bookmarked and "bookmarked" in notices(app)

        await export_in_app(pilot, exported)  # to loom-json, from the app
        seen.update(kids=kids, marked=marked, pruned=pruned)
        await pilot.press("q")

    run(app, body)
    assert app.return_code == 0
    loom.close()

    # the file holds it all
    kids, marked = seen["kids"], seen["marked"]
    with Loom.open(path, readonly=True) as lm:
        assert [h.id for h in lm.children(lm.root_id)] == kids
        assert all(lm.header(k).persona is not None for k in kids)
        assert not any(lm.header(k).pruned for k in kids)
        assert lm.bookmarks() == [marked] and lm.current == marked
        kinds = event_kinds(lm.events())
        at = 0
        for kind in ["create", "personas", "add", "persona", "prune", "undo", "bookmark"]:
            at = kinds.index(kind, at) + 1  # the person's steps, in their order
        final = tree_record(lm)
        final_state = state(lm.to_document(events=False))

    # the replay steps through every event to the same final state and tree
    replay, source = open_replay(path)

    async def watch(pilot: Pilot[int]) -> None:
        stops = await step_through(pilot, replay, source)
        assert {e.seq for e in source.events() if e.kind != "visit"} <= set(stops)
        assert shown_state(replay) == final_state
        assert tree_ids(replay) == set(kids) | {source.root_id}

    run(replay, watch)
    source.close()

    # what the app exported imports as the same loom
    copy = tmp_path / "copy.loom"
    Loom.from_document(copy, read_document(exported)).close()
    with Loom.open(copy, readonly=True) as lm:
        assert tree_record(lm) == final


# --------------------------------------------------------------------------- the counterfactual


def test_the_counterfactual_journey(tmp_path: Path, engine: Any) -> None:
    path = tmp_path / "counterfactual.loom"
    loom = tokenizing_loom(engine, path, title="cf", prompt=PROMPT)
    app = make_app(loom, engine)
    seen: dict[str, Any] = {}

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("g")
        await until(pilot, lambda: idle(app) and len(app.last_generated) == 3, "generation")
        first = list(app.last_generated)
        await pilot.press("right")
        for _ in range(2):  # a branch long enough to split
            if len(loom.node(app.current).tokens) >= 3:
                break
            await pilot.press("down")
        assert len(loom.node(app.current).tokens) >= 3, "no branch of 3 tokens or more"
        node = app.current
        before = loom.node(node).tokens
        await pilot.press("i", "home", "right")  # the token cursor on the node's 2nd token
        path_text = app.reading.path
        assert path_text is not None and app.reading.cursor is not None
        index = app.reading.cursor
        start, _end = path_text.node_spans[node]
        assert index - start == 1 and path_text.owners[index] == node
        written = int(path_text.tokens.ids[index])
        alternatives = path_text.tokens.top(index)
        rank = next(r for r, a in enumerate(alternatives, 1) if a.id != written)
        alt = alternatives[rank - 1]
        inspector = app.query_one(TokenInspector)
        assert inspector.display and "token ‹" in screen_text(app)
        shown = str(inspector.content)  # the token, its place, and the alternatives to pick
        assert f"node #{node} token 2/{len(before)}" in shown
        assert f"\n{rank} " in shown and f"id {written}" in shown
        await pilot.press(str(rank))  # branch with that alternative (keys 1-9)
        await until(
            pilot,
            lambda: idle(app) and bool(app.last_generated) and app.last_generated != first,
            "the counterfactual branches",
        )
        assert app.current == node  # the head of the split
        new = list(app.last_generated)
        assert len(new) == 3 and tree_ids(app) >= {node, *new}
        seen.update(node=node, before=before, alt=alt.id, new=new)

    run(app, body)
    loom.close()

    node, before, alt, new = seen["node"], seen["before"], seen["alt"], seen["new"]
    with Loom.open(path, readonly=True) as lm:
        head = lm.node(node)
        assert token_record(head.tokens)["ids"] == token_record(before)["ids"][:1]
        kids = [lm.node(h.id) for h in lm.children(node)]
        (tail,) = [k for k in kids if k.id not in new]
        assert token_record(tail.tokens)["ids"] == token_record(before)["ids"][1:]
        assert head.text + tail.text == before.text
        for branch in (lm.node(i) for i in new):
            assert branch.parent == node and int(branch.tokens.ids[0]) == alt
            assert branch.generation is not None and branch.generation.forced_tokens == [alt]
        kinds = [e.kind for e in lm.events() if e.kind != "visit"]
        assert kinds[-2:] == ["split", "add"]
        split_seq = max(e.seq for e in lm.events() if e.kind == "split")
        events = lm.events()
        final_state = state(lm.to_document(events=False))

    # the headless timeline shows the split and the new branches under the head
    folder = tmp_path / "work"
    folder.mkdir()
    env = cli_env(tmp_path / "home")
    lines = parse_timeline(ok(run_loom("replay", path, "--headless", cwd=folder, env=env)).stdout)
    assert [(s, k) for s, k, _n, _t in lines] == [(e.seq, e.kind) for e in events]
    split = next(i for i, line in enumerate(lines) if line[1] == "split")
    assert lines[split][2] == f"#{node}"
    add = next(line for line in lines[split:] if line[1] == "add")
    assert f"under #{node}" in add[3] and add[2] == f"#{new[0]}"

    # the replay app: at the split the tail hangs under the head; one step on, the new branches
    replay, source = open_replay(path)

    async def watch(pilot: Pilot[int]) -> None:
        replay.replay_goto(str(split_seq))
        await pilot.pause()
        assert replay.seq == split_seq
        assert shown_state(replay) == state(state_at(source.events(), split_seq, tokens=source))
        assert tail.id in tree_ids(replay) and not set(new) & tree_ids(replay)
        assert replay.session.loom.node(node).text == head.text
        await pilot.press("full_stop")
        await pilot.pause()
        assert replay.seq > split_seq
        assert set(new) <= tree_ids(replay)
        assert replay.current in new
        branch = replay.session.loom.node(replay.current)
        assert replay.reading.path is not None
        assert replay.reading.path.text == PROMPT + head.text + branch.text
        assert int(branch.tokens.ids[0]) == alt
        await pilot.press("greater_than_sign")
        await pilot.pause()
        assert shown_state(replay) == final_state

    run(replay, watch)
    source.close()
