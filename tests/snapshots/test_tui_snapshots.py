"""Snapshot tests (pytest-textual-snapshot): the main screen, the token inspector, the help
screen, the block multiverse and every shipped theme. Regenerate with --snapshot-update, then
look at the SVGs before committing them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.tui import SIZE, isolated_config, make_app, sample_loom
from textual.pilot import Pilot

from loom.engine.fake import FakeBackend
from loom.tui.app import LoomApp
from loom.tui.themes import shipped_theme_names

__all__ = ["isolated_config"]


def snapshot_app(tmp_path: Path) -> LoomApp:
    # The same file name every run: the status bar shows it.
    folder = tmp_path / "snap"
    folder.mkdir()
    app = make_app(sample_loom(folder / "sample.loom"), FakeBackend())
    # The model's reading of the hand-written root arrives from a worker at no fixed moment: a
    # screenshot must not depend on it (tests/tui/test_tui_scoring.py tests the reading).
    app.config.auto_score = False
    return app


async def settle(pilot: Pilot[Any]) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_main_screen(snap_compare: Any, tmp_path: Path) -> None:
    assert snap_compare(snapshot_app(tmp_path), press=["right", "right", "down"],
                        terminal_size=SIZE)  # fmt: skip


def test_token_inspector(snap_compare: Any, tmp_path: Path) -> None:
    assert snap_compare(snapshot_app(tmp_path), press=["right", "i", "left", "left"],
                        terminal_size=SIZE)  # fmt: skip


def test_help_screen(snap_compare: Any, tmp_path: Path) -> None:
    assert snap_compare(snapshot_app(tmp_path), press=["f1"], terminal_size=SIZE)


def test_block_multiverse(snap_compare: Any, tmp_path: Path) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await pilot.press("right", "m")
        await settle(pilot)
        await pilot.press("down", "right")

    assert snap_compare(snapshot_app(tmp_path), run_before=run_before, terminal_size=SIZE)


@pytest.mark.parametrize("theme", shipped_theme_names())
def test_each_shipped_theme(snap_compare: Any, tmp_path: Path, theme: str) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        pilot.app.theme = theme
        await pilot.press("right", "right", "i", "left")

    assert snap_compare(snapshot_app(tmp_path), run_before=run_before, terminal_size=SIZE)
