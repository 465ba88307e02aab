"""Hidden context in the journeys a person takes, on the real default model.

Through the `loom` command: a croissant loom, a loom memory and an author's note on a branch,
generate (labelled), census, export to loom-json, import, and regenerate on the imported copy —
identical, after the memories there were changed. In the app: `Y` sets the loom's memory, `g`
generates and labels under it, the status bar follows the path, export from the app, replay
steps over the memory event, and the import carries the memory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.cli import (
    CROISSANT,
    cli_env,
    event_kinds,
    ids_of,
    ok,
    run_loom,
)
from support.engines import default_gguf, engine
from support.tui import (
    export_in_app,
    isolated_config,
    make_app,
    run,
    settle,
    type_text,
    until,
)
from textual.pilot import Pilot

from loom.cli import main as loom_cli
from loom.formats import read_document
from loom.store.loom import Loom
from loom.store.model import Memory
from loom.store.replay import state_at
from loom.tui.screens.memory import MemoryScreen

pytestmark = pytest.mark.model
__all__ = ["default_gguf", "engine", "isolated_config"]  # fixtures

SETTING = "Scene: a Paris bakery at dawn. Bob, the patriot, is on trial for eating a croissant.\n"
NOTE = " [Bob is furious] "


def test_memory_through_the_cli_journey(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home")
    work = tmp_path / "work"
    work.mkdir()
    path = work / "c.loom"

    def loom(*args: Any) -> str:
        return ok(run_loom(*args, cwd=work, env=env)).stdout

    loom("new", path, "--personas", CROISSANT)
    loom("memory", path, "--text", SETTING)
    kids = ids_of(ok(run_loom("generate", path, "-n", "2", "--max-tokens", "8", "--seed", "4",
                              cwd=work, env=env)))  # fmt: skip
    loom("memory", path, "--node", str(kids[0]), "--text", NOTE, "--depth", "4")
    branch = ("--node", str(kids[0]), "-n", "2", "--max-tokens", "8", "--seed", "5")
    deeper = ids_of(ok(run_loom("generate", path, *branch, cwd=work, env=env)))
    loom("label", path)
    census = json.loads(loom("census", path, "--node", str(deeper[0]), "-r", "4", "-l", "6",
                             "--seed", "1", "--json"))  # fmt: skip
    assert sum(p["share"] for p in census["personas"].values()) == pytest.approx(1.0, abs=0.01)
    with Loom.open(path, readonly=True) as lm:
        assert all(lm.header(k).persona is not None for k in [*kids, *deeper])
        [stored] = lm.censuses(deeper[0])
        assert [Memory.from_json(m) for m in stored.payload["memory"]] == [
            Memory(SETTING),
            Memory(NOTE, 4, node=kids[0]),
        ]
        assert event_kinds(lm.events()).count("memory") == 2

    exported = work / "c.json"
    loom("export", path, "--format", "loom-json", "-o", exported)
    copy = work / "copy.loom"
    loom("import", exported, "-o", copy)
    shown = loom("memory", copy, "--node", str(deeper[1]))
    assert f"loom (before) + inherited from #{kids[0]} (note at 4)" in shown
    # Changed memories in the copy do not change what its nodes were generated with.
    loom("memory", copy, "--text", "Something else entirely.\n")
    loom("memory", copy, "--node", str(kids[0]), "--clear")
    report = loom("regenerate", copy, "--node", str(deeper[1]))
    assert "IDENTICAL" in report.splitlines()[0], report
    text = loom("show", copy, "--node", str(deeper[1]))
    assert SETTING.strip() not in text and NOTE.strip() not in text  # never shown in the tree


def test_memory_through_the_app_journey(tmp_path: Path, engine: Any, isolated_config: Path) -> None:
    isolated_config.parent.mkdir(parents=True, exist_ok=True)
    isolated_config.write_text("[generation]\nn = 2\nmax_tokens = 8\n", encoding="utf-8")
    path = tmp_path / "croissant.loom"
    exported = tmp_path / "croissant.json"
    assert loom_cli(["new", str(path), "--personas", str(CROISSANT)]) == 0
    loom = Loom.open(path)
    app = make_app(loom, engine)

    async def body(pilot: Pilot[int]) -> None:
        root = app.current
        await pilot.press("Y")
        await pilot.pause()
        assert isinstance(app.screen, MemoryScreen)
        app.screen.query_one("#scope-loom").value = True  # type: ignore[attr-defined]
        await pilot.pause()
        await type_text(pilot, "Scene: a bakery.\n")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert loom.memory(None) == Memory("Scene: a bakery.\n")
        assert "memory: loom (before)" in app.status.render().plain

        await pilot.press("g")  # generated and labelled under the memory
        await until(pilot, lambda: app.generation is None and not app.labelling
                    and len(app.last_generated) == 2, "generate + label")  # fmt: skip
        kids = list(app.last_generated)
        for kid in kids:
            assert loom.node(kid).generation.memory == [Memory("Scene: a bakery.\n")]  # type: ignore[union-attr]
            assert loom.header(kid).persona is not None
        await pilot.press("right")
        assert "memory: loom (before)" in app.status.render().plain

        await export_in_app(pilot, exported)  # to loom-json, from the app
        assert root == loom.root_id
        await pilot.press("q")

    run(app, body)
    loom.close()

    with Loom.open(path, readonly=True) as lm:
        kinds = event_kinds(lm.events())
        assert kinds.index("memory") < kinds.index("add") < kinds.index("persona")
        # The replay's state before the memory event has no memory; after it, the loom's.
        events = lm.to_document().events
        seq = next(e["seq"] for e in events if e["kind"] == "memory")
        assert "memory" not in state_at(events, seq - 1).meta
        assert state_at(events, seq).meta["memory"] == {"text": "Scene: a bakery.\n", "depth": None}

    copy = tmp_path / "copy.loom"
    Loom.from_document(copy, read_document(exported)).close()
    with Loom.open(copy, readonly=True) as lm:
        assert lm.memory(None) == Memory("Scene: a bakery.\n")
