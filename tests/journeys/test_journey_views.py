"""The reading aids in a session, on the real default model: grow a loom, hoist a branch, read
it with `U`, judge branches blind, sort by entropy and filter, then export and import — through
the CLI (subprocesses) and in the app (Pilot). What was read travels with the log; the hoist is a
view of one file and does not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.cli import CROISSANT, cli_env, ids_of, ok, run_loom
from support.engines import default_gguf, engine
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
from textual.widgets import Input

from loom.cli import main as loom_cli
from loom.formats import read_document
from loom.store.loom import Loom

pytestmark = pytest.mark.model
__all__ = ["default_gguf", "engine", "isolated_config"]  # fixtures


def unread_ids(result: Any) -> list[int]:
    return [int(line.split("\t")[0]) for line in result.stdout.splitlines()]


def test_reading_aids_through_the_cli(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home")
    path = tmp_path / "c.loom"
    ok(run_loom("new", path, "--personas", CROISSANT, env=env))
    kids = ids_of(ok(run_loom("generate", path, "-n", "3", "--max-tokens", "6", "--seed", "3",
                              env=env)))  # fmt: skip
    grand = ids_of(ok(run_loom("generate", path, "--node", str(kids[0]), "-n", "2",
                               "--max-tokens", "6", "--seed", "4", env=env)))  # fmt: skip
    ok(run_loom("label", path, "--threshold", "0.5", env=env))  # every node decided: see below
    # everything new is unread
    assert unread_ids(ok(run_loom("unread", path, env=env))) == [kids[0], *grand, *kids[1:]]
    # the tree by entropy, and a hoisted branch
    lines = ok(run_loom("tree", path, "--sort", "entropy", "--depth", "1", env=env)).stdout
    with Loom.open(path, readonly=True) as loom:
        entropy = {k: float(np.nanmean(loom.node(k).tokens.entropy)) for k in kids}
    shown = [int(line.split()[0][1:]) for line in lines.splitlines()[1:]]
    assert shown == sorted(kids, key=lambda k: entropy[k])
    out = ok(run_loom("hoist", path, "--node", str(kids[0]), env=env)).stdout
    assert out.startswith(f"hoisted: root › #{kids[0]}")
    sub = ok(run_loom("tree", path, "--node", str(kids[0]), env=env)).stdout.splitlines()
    assert sub[0].startswith("hoisted:") and len(sub) == 1 + 1 + len(grand)
    # the reader (the app) stops on a grandchild: its whole path is read
    with Loom.open(path) as loom:
        loom.set_current(grand[0])
    left = unread_ids(ok(run_loom("unread", path, env=env)))
    assert left == [grand[1], *kids[1:]]
    seen = ok(run_loom("tree", path, env=env)).stdout
    blind = ok(run_loom("tree", path, "--blind", "--seed", "5", env=env)).stdout
    assert "%" in seen and "luigi]" in seen  # what blind reading hides is there to hide
    assert "%" not in blind and "luigi" not in blind

    # export and import: the log carries what was read; the hoist stays with the file
    exported = tmp_path / "c.json"
    ok(run_loom("export", path, "--format", "loom-json", "-o", exported, env=env))
    copy = tmp_path / "copy.loom"
    ok(run_loom("import", exported, "-o", copy, env=env))
    assert unread_ids(ok(run_loom("unread", copy, env=env))) == left
    assert ok(run_loom("hoist", copy, env=env)).stdout.startswith("nothing hoisted")
    assert ok(run_loom("tree", copy, "--blind", "--seed", "5", env=env)).stdout == blind


def test_reading_aids_in_the_app(tmp_path: Path, engine: Any, isolated_config: Path) -> None:
    isolated_config.parent.mkdir(parents=True, exist_ok=True)
    isolated_config.write_text("[generation]\nn = 3\nmax_tokens = 8\n", encoding="utf-8")
    path = tmp_path / "croissant.loom"
    exported = tmp_path / "croissant.json"
    assert loom_cli(["new", str(path), "--personas", str(CROISSANT)]) == 0
    loom = Loom.open(path)
    app = make_app(loom, engine)
    seen: dict[str, Any] = {}

    async def body(pilot: Pilot[int]) -> None:
        root = app.current
        await pilot.press("g")  # three labelled branches, unread
        await until(pilot, lambda: idle(app) and len(app.last_generated) == 3, "generate")
        kids = list(app.last_generated)
        assert all("•" in str(app.tree_pane.node_for(k).label) for k in kids)  # type: ignore[union-attr]
        await pilot.press("right", "g")  # the first branch, and three under it
        await until(pilot, lambda: idle(app) and app.last_generated[0] not in kids, "generate")
        grand = list(app.last_generated)
        await pilot.press("z")  # hoist the first branch
        await pilot.pause()
        assert app.tree_pane.root.data == kids[0] and tree_ids(app) == {kids[0], *grand}
        visited = []
        for _ in grand:  # read its branches one after another
            await pilot.press("U")
            visited.append(app.current)
        assert sorted(visited) == sorted(grand)
        await pilot.press("U")
        assert "nothing unread under the hoisted node" in notices(app)
        await pilot.press("Z")
        await pilot.pause()
        assert app.tree_pane.root.data == root
        # judge the three top branches blind
        await pilot.press("B")
        await pilot.pause()
        app.clear_notifications()
        await pilot.pause()
        text = screen_text(app)
        assert "BLIND" in text and "%" not in text
        assert not any(p.name in text for p in app.session.personas)
        await pilot.press("B")
        await pilot.pause()
        # by entropy, the most certain first; then only the likelier half
        await pilot.press("o", "o", "o")
        await pilot.pause()
        entropy = app.session.mean_entropies(kids)
        assert [n.data for n in app.tree_pane.root.children] == sorted(
            kids, key=lambda k: entropy[k] or 0.0
        )
        assert "sort entropy" in screen_text(app)
        await pilot.press("K")
        await pilot.pause()
        cut = sorted(v or 0.0 for v in entropy.values())[1]
        app.screen.query_one(Input).value = f"entropy <= {cut:.6f}"
        await pilot.press("enter")
        await pilot.pause()
        kept = {n.data for n in app.tree_pane.root.children}
        on_path = set(app.path_ids)  # the branch the reader is in stays shown
        assert kept == {
            k for k in kids if (entropy[k] or 0.0) <= float(f"{cut:.6f}") or k in on_path
        }
        await pilot.press("K")
        await pilot.pause()
        app.screen.query_one(Input).value = ""
        await pilot.press("enter")
        await pilot.pause()
        # export, from the app
        await export_in_app(pilot, exported)  # to loom-json, from the app
        seen.update(kids=kids, grand=grand)
        await pilot.press("q")

    run(app, body)
    loom.close()
    kids, grand = seen["kids"], seen["grand"]

    # imported: the branches read in the app are read; the others are not
    copy = tmp_path / "copy.loom"
    Loom.from_document(copy, read_document(exported)).close()
    again = make_app(Loom.open(copy), engine)

    async def reopened(pilot: Pilot[int]) -> None:
        unread, _ = again.session.unread()
        assert unread == set(kids[1:])  # the hoisted branch and all under it were read
        assert all(again.session.is_read(g) for g in grand)
        assert again.tree_pane.root.data == again.session.root_id  # no hoist in an export
        for k in kids[1:]:
            assert "•" in str(again.tree_pane.node_for(k).label)  # type: ignore[union-attr]
        assert "•" not in str(again.tree_pane.node_for(kids[0]).label)  # type: ignore[union-attr]

    run(again, reopened)
