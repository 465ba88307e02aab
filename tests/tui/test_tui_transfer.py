"""Export and import in the app: scope (whole loom, subtree, path), progress in the status bar
while a worker streams the file, an import into a new loom that the app then offers to open, and
bad input that leaves the app alive and nothing on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.tui import (
    ids_by_text,
    isolated_config,
    make_app,
    model_node,
    notices,
    run,
    sample_loom,
    settle,
)
from textual.message import Message
from textual.pilot import Pilot
from textual.widgets import Input

from loom.engine.fake import FakeBackend
from loom.store.loom import Loom
from loom.store.tokenizer import FunctionTokenizer
from loom.tui.app import LoomApp
from loom.tui.messages import TransferProgress
from loom.tui.screens.dialogs import ChoiceScreen, PromptScreen

__all__ = ["isolated_config"]  # an autouse fixture, imported so it applies here


@pytest.fixture
def loom_path(tmp_path: Path) -> Path:
    path = tmp_path / "sample.loom"
    sample_loom(path).close()
    return path


def open_app(loom_path: Path) -> tuple[LoomApp, dict[str, int]]:
    fake = FakeBackend()
    loom = Loom.open(loom_path, tokenizer=FunctionTokenizer(fake.tokens_for))
    return make_app(loom, fake), ids_by_text(loom)


def exported_ids(path: Path) -> set[int]:
    return {int(n["id"]) for n in json.loads(path.read_text())["nodes"]}


async def answer(pilot: Pilot[int], value: str) -> None:
    """Fill the prompt on screen with `value` and accept it."""
    screen = pilot.app.screen
    assert isinstance(screen, PromptScreen)
    screen.query_one(Input).value = value
    await pilot.press("enter")


@pytest.mark.parametrize(
    ("scope_index", "expected"),
    [(0, {"root", "A", "A1", "A2", "B", "C", "C1"}), (1, {"A", "A1", "A2"}), (2, {"root", "A"})],
)
def test_export_of_the_loom_a_subtree_or_the_path(
    loom_path: Path, tmp_path: Path, scope_index: int, expected: set[str]
) -> None:
    app, ids = open_app(loom_path)
    target = tmp_path / "out.json"

    async def body(pilot: Pilot[int]) -> None:
        app.go_to(ids["A"])
        await pilot.pause()
        await pilot.press("E", "enter")  # loom-json
        assert isinstance(app.screen, ChoiceScreen)  # what to export: the current node is A
        await pilot.press(*(["down"] * scope_index), "enter")
        await answer(pilot, str(target))
        await settle(pilot)
        assert f"exported {len(expected)} nodes to {target}" in notices(app)
        assert "saved" in str(app.status.render())

    run(app, body)
    assert exported_ids(target) == {ids[name] for name in expected}


def test_export_from_the_root_asks_no_scope(loom_path: Path, tmp_path: Path) -> None:
    app, _ids = open_app(loom_path)
    target = tmp_path / "all.json"

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("E", "enter")
        await answer(pilot, str(target))  # straight to the file: the whole loom
        await settle(pilot)
        assert "exported 7 nodes" in notices(app)

    run(app, body)
    assert len(exported_ids(target)) == 7


def big_loom(path: Path, n_nodes: int) -> None:
    fake = FakeBackend()
    loom = Loom.create(path, prompt="Once", tokenizer=FunctionTokenizer(fake.tokens_for))
    parent = loom.root_id
    for i in range(n_nodes // 4):
        made = loom.add_children(parent, [fake_node(i * 4 + j) for j in range(4)])
        parent = made[i % 4]
    loom.close()


def fake_node(seed: int) -> Any:
    return model_node([seed % 50, (seed * 7) % 50, 3])


def test_export_and_import_report_progress_and_the_import_opens(tmp_path: Path) -> None:
    """A loom of 400 nodes: the worker's progress reaches the status bar in steps (not only
    0 and 100 %), then the import's, and the imported loom is the one the app asks to open."""
    source = tmp_path / "big.loom"
    big_loom(source, 400)
    app = make_app(Loom.open(source), FakeBackend())
    exported = tmp_path / "big.json"
    imported = tmp_path / "again.loom"
    seen: list[tuple[str, int, int]] = []

    def hook(message: Message) -> None:
        if isinstance(message, TransferProgress):
            seen.append((message.verb, message.done, message.total))

    async def body(pilot: Pilot[int]) -> None:
        app.go_to(app.session.root_id)
        await pilot.press("E", "enter")
        await answer(pilot, str(exported))
        await settle(pilot)
        assert "exported 401 nodes" in notices(app)
        await pilot.press("ctrl+o")
        await answer(pilot, str(exported))
        screen = app.screen
        assert isinstance(screen, PromptScreen)
        # next to this loom, named after the file, never an existing name (big.loom is taken)
        assert screen.query_one(Input).value == str(tmp_path.resolve() / "big-2.loom")
        await answer(pilot, str(imported))
        await settle(pilot)
        assert f"imported 401 nodes into {imported}" in notices(app)
        assert isinstance(app.screen, ChoiceScreen)
        await pilot.press("enter")  # open it now
        await pilot.pause()

    run(app, body, message_hook=hook)
    assert app.open_next == imported
    for verb in ("exporting", "importing"):
        steps = {done * 100 // total for v, done, total in seen if v == verb}
        assert len(steps) >= 5 and max(steps) == 100, (verb, sorted(steps))
    with Loom.open(imported, readonly=True) as again, Loom.open(source, readonly=True) as orig:
        assert again.stats()["nodes"] == orig.stats()["nodes"] == 401
        texts = sorted(n.text for n in again.to_document(events=False).nodes)
        assert texts == sorted(n.text for n in orig.to_document(events=False).nodes)


def test_bad_imports_are_one_notice_and_leave_nothing(loom_path: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"format": "loom-json", "version": 2, "nodes": [{"id": 0, "te')
    taken = tmp_path / "taken.loom"
    taken.write_bytes(b"mine")
    app, _ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        for source, target in (
            (tmp_path / "missing.json", tmp_path / "a.loom"),
            (corrupt, tmp_path / "b.loom"),
            (loom_path, taken),  # an existing file is never replaced
        ):
            await pilot.press("ctrl+o")
            await answer(pilot, str(source))
            if isinstance(app.screen, PromptScreen):
                await answer(pilot, str(target))
            await settle(pilot)
        assert notices(app).count("Not imported") == 3
        assert app.open_next is None and not app.exporting

    run(app, body)
    assert not (tmp_path / "a.loom").exists() and not (tmp_path / "b.loom").exists()
    assert taken.read_bytes() == b"mine"
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("sample.loom-"))
    assert left == ["corrupt.json", "sample.loom", "taken.loom"]  # no temporary file either
