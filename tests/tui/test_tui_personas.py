"""Pilot tests of the persona features of the TUI: the persona panel, hand labels, tree filters,
pruning by persona, collapse marks, and (with the real model) labelling after generation.

Each asserts on the loom file (re-opened read-only) and on what the screen shows.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.store import tokenizing_loom
from support.tui import (
    engine,
    ids_by_text,
    isolated_config,
    make_app,
    notices,
    run,
    sample_loom,
    screen_text,
    settle,
    small_generations,
    tree_ids,
)
from textual.pilot import Pilot

from loom.engine.fake import FakeBackend
from loom.store.loom import Loom
from loom.store.model import Persona, PersonaLabel
from loom.store.tokenizer import FunctionTokenizer
from loom.tui.app import LoomApp
from loom.tui.screens.dialogs import ChoiceScreen
from loom.tui.screens.help import HelpScreen, help_plain_text
from loom.tui.widgets.persona_panel import PersonaPanel

__all__ = ["engine", "isolated_config", "small_generations"]  # fixtures

PERSONAS = [
    Persona("luigi", "Bob hates croissants.", "green", 0.5),
    Persona("waluigi", "Bob secretly loves croissants.", "magenta", 0.5),
]


def label(name: str | None, p_luigi: float, **kw: object) -> PersonaLabel:
    post = {"luigi": p_luigi, "waluigi": 1 - p_luigi}
    return PersonaLabel(name, "model", posterior=post, path_posterior=post, **kw)  # type: ignore[arg-type]


@pytest.fixture
def loom_path(tmp_path: Path) -> Path:
    """The sample loom with personas: A luigi 0.9, B waluigi 0.8 (collapse), C undecided 0.55,
    A1 luigi 0.7 (path), A2 waluigi 0.95 (mode collapse)."""
    path = tmp_path / "personas.loom"
    loom = sample_loom(path)
    ids = ids_by_text(loom)
    with loom.batch():
        loom.set_personas(PERSONAS)
        loom.set_persona(ids["A"], label("luigi", 0.9))
        loom.set_persona(ids["B"], label("waluigi", 0.2, collapse=True))
        loom.set_persona(ids["C"], label(None, 0.55))
        loom.set_persona(ids["A1"], label("luigi", 0.7))
        loom.set_persona(ids["A2"], label("waluigi", 0.05, mode_collapse=True))
    loom.close()
    return path


def open_app(path: Path) -> tuple[LoomApp, dict[str, int]]:
    fake = FakeBackend()
    loom = Loom.open(path, tokenizer=FunctionTokenizer(fake.tokens_for))
    return make_app(loom, fake), ids_by_text(loom)


def reopen(path: Path) -> Loom:
    return Loom.open(path, readonly=True)


def tree_line(app: LoomApp, node_id: int) -> str:
    node = app.tree_pane.node_for(node_id)
    assert node is not None, f"#{node_id} not in the tree"
    return str(node.label)


async def choose(pilot: Pilot[int], text: str) -> None:
    """Pick the option of the open ChoiceScreen whose label is `text`."""
    screen = pilot.app.screen
    assert isinstance(screen, ChoiceScreen)
    labels = [str(lbl) for lbl in screen._labels]
    index = labels.index(text)
    for _ in range(index):
        await pilot.press("down")
    await pilot.press("enter")
    await pilot.pause()


def test_panel_shows_bars_trajectory_and_marks(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        panel = app.query_one(PersonaPanel)
        assert not panel.display
        app.go_to(ids["A1"])
        await pilot.press("p")
        await pilot.pause()
        assert panel.display
        text = screen_text(app)
        assert f"Personas · node #{ids['A1']}" in text
        lines = [ln for ln in text.splitlines() if "█" in ln and "%" in ln]
        # the effective label first, its bar 70% full (14 of 20 cells), then waluigi's 30%
        assert "luigi" in lines[0] and "70%" in lines[0] and "█" * 14 + "░" * 6 in lines[0]
        assert "waluigi" in lines[1] and "30%" in lines[1]
        assert "path (root → here)" in text
        assert "score this node to see evidence" in text
        # the trajectory of luigi along root → A (0.9) → A1 (0.7): prior 50%, then ▇, then ▆
        spark = next(ln for ln in text.splitlines() if "▅█▆" in ln)
        assert "luigi" in spark
        # a node with a collapse mark says so; the toggle hides the panel again
        app.go_to(ids["B"])
        await pilot.pause()
        assert "⚡ collapse" in screen_text(app)
        await pilot.press("p")
        await pilot.pause()
        assert not panel.display

    run(app, body)


def test_collapse_glyphs_in_tree_lines(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        app.go_to(ids["A2"])
        await pilot.pause()
        assert "⚡" in tree_line(app, ids["B"])
        assert "↻" in tree_line(app, ids["A2"])
        assert "⚡" not in tree_line(app, ids["A"]) and "↻" not in tree_line(app, ids["A1"])
        assert "[waluigi]" in tree_line(app, ids["B"])
        # the reading pane marks the boundary where A2 starts (A has no mark)
        assert reading_text(app).count("↻") == 1 and "⚡" not in reading_text(app)
        app.go_to(ids["B"])
        await pilot.pause()
        assert "⚡" in reading_text(app) and "↻" not in reading_text(app)
        app.go_to(ids["C1"])
        await pilot.pause()
        assert "⚡" not in reading_text(app) and "↻" not in reading_text(app)

    run(app, body)


def reading_text(app: LoomApp) -> str:
    pane = app.reading
    return "\n".join(
        "".join(seg.text for seg in pane.render_line(y)) for y in range(pane.size.height)
    )


def test_manual_label_wins_in_chip_and_is_stored(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        app.go_to(ids["A"])
        await pilot.pause()
        assert "[luigi]" in tree_line(app, ids["A"])
        await pilot.press("a")
        await pilot.pause()
        await choose(pilot, "waluigi")
        assert "[waluigi*]" in tree_line(app, ids["A"])
        with reopen(loom_path) as loom:
            h = loom.header(ids["A"])
            assert h.manual_persona == "waluigi"
            assert h.persona is not None and h.persona.label == "luigi"  # the model's kept
        # clearing brings the model's label back
        await pilot.press("a")
        await pilot.pause()
        await choose(pilot, "clear the hand label")
        assert "[luigi]" in tree_line(app, ids["A"])
        with reopen(loom_path) as loom:
            assert loom.header(ids["A"]).manual_persona is None

    run(app, body)


def test_filters_hide_and_show_tree_lines(loom_path: Path) -> None:
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        assert {ids["A"], ids["B"], ids["C"]} <= tree_ids(app, expand=False)
        # hide waluigi: B (0.8) goes; A (luigi) and C (undecided, 0.45 < 0.6) stay
        await pilot.press("f")
        await pilot.pause()
        await choose(pilot, "hide waluigi")
        shown = tree_ids(app, expand=False)
        assert ids["B"] not in shown and {ids["A"], ids["C"]} <= shown
        # cancelling the dialog keeps the filter
        await pilot.press("f")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert ids["B"] not in tree_ids(app, expand=False)
        # only luigi (≥ 0.6): A (0.9) stays; B (0.2) and C (0.55) go
        app.action_persona_filter_only("luigi")
        await pilot.pause()
        shown = tree_ids(app, expand=False)
        assert ids["A"] in shown and ids["B"] not in shown and ids["C"] not in shown
        assert "only luigi" in screen_text(app)
        # the palette offers the same, per persona
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Show only persona waluigi", "Hide persona luigi", "Clear persona filter"} <= set(
            titles
        )
        app.action_persona_filter_clear()
        await pilot.pause()
        assert {ids["A"], ids["B"], ids["C"]} <= tree_ids(app, expand=False)

    run(app, body)


def test_prune_siblings_by_persona_and_one_undo(tmp_path: Path) -> None:
    path = tmp_path / "fan.loom"
    fake = FakeBackend()
    loom = Loom.create(path, title="fan", prompt="Bob:",
                       tokenizer=FunctionTokenizer(fake.tokens_for))  # fmt: skip
    kids = [loom.add_child(loom.root_id, f" the cat{i}", author="human") for i in range(5)]
    with loom.batch():
        loom.set_personas(PERSONAS)
        for kid, p in zip(kids, [0.9, 0.1, 0.2, 0.95, 0.3], strict=True):
            loom.set_persona(kid, label("luigi" if p > 0.5 else "waluigi", p))
    loom.close()
    loom = Loom.open(path, tokenizer=FunctionTokenizer(fake.tokens_for))
    app = make_app(loom, fake)
    waluigis = {kids[1], kids[2], kids[4]}

    async def body(pilot: Pilot[int]) -> None:
        app.go_to(kids[0])
        await pilot.pause()
        await pilot.press("x")
        await pilot.pause()
        await choose(pilot, "waluigi")
        await settle(pilot)
        with reopen(path) as lm:
            pruned = {h.id for h in lm.children(lm.root_id, include_pruned=True) if h.pruned}
        assert pruned == waluigis
        assert not (waluigis & tree_ids(app, expand=False)) and kids[0] in tree_ids(
            app, expand=False
        )
        await pilot.press("u")
        await settle(pilot)
        with reopen(path) as lm:
            assert not any(h.pruned for h in lm.children(lm.root_id, include_pruned=True))
        assert waluigis <= tree_ids(app, expand=False)

    run(app, body)


def test_keys_listed_in_help_and_palette(loom_path: Path) -> None:
    app, _ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Persona panel", "Label with personas", "Hand label", "Persona filter",
                "Prune by persona", "Load personas"} <= titles  # fmt: skip
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = help_plain_text(app.screen.help_group)
        assert "Personas" in text
        for line in ("loom.prune_persona", "loom.persona_panel", "loom.load_personas"):
            row = next(r for r in text.splitlines() if line in r)
            assert row.split()[0] in {"x", "p", "^l"}, row

    run(app, body)


def test_load_persona_set_file(tmp_path: Path) -> None:
    path = tmp_path / "plain.loom"
    sample_loom(path).close()
    app, ids = open_app(path)
    croissant = Path(__file__).parents[2] / "sessions" / "croissant.toml"

    async def body(pilot: Pilot[int]) -> None:
        app.load_personas(croissant)
        await pilot.pause()
        with reopen(path) as loom:
            assert [p.name for p in loom.personas] == ["luigi", "waluigi"]
        # without a model, labelling says why instead of failing
        app.session.set_backend(None, "no model loaded")
        assert not app.start_labelling([ids["A"]])
        await pilot.pause()
        assert "labelling needs a model: no model loaded" in notices(app)

    run(app, body)


@pytest.mark.model
def test_new_children_are_labelled_after_generation(
    tmp_path: Path, engine: object, small_generations: None
) -> None:
    """The real model: generation in a loom with the croissant persona set labels the new
    children in a worker, and the labels land in the file."""
    from loom.personas.sets import load_persona_set

    croissant = load_persona_set(Path(__file__).parents[2] / "sessions" / "croissant.toml")
    path = tmp_path / "croissant.loom"
    loom = tokenizing_loom(engine, path, title="c", prompt=croissant.prompt)
    loom.set_personas(croissant.personas)
    app = make_app(loom, engine)  # type: ignore[arg-type]

    async def body(pilot: Pilot[int]) -> None:
        await pilot.press("p")
        await pilot.press("g")
        waited = 0.0
        while app.generation is not None or app.labelling or not app.last_generated:
            await pilot.pause(0.05)
            waited += 0.05
            assert waited < 120, "timed out"
        await settle(pilot)
        new = app.last_generated
        assert len(new) == 2
        app.go_to(new[0])
        await pilot.pause()
        text = screen_text(app)
        assert "not labelled yet" not in text
        # evidence from this session's scoring is shown for the freshly labelled node
        assert "tokens that moved it most" in text

    run(app, body)
    with reopen(path) as check:
        kids = check.children(check.root_id)
        assert len(kids) == 2
        for kid in kids:
            assert kid.persona is not None and kid.persona.source == "model"
            assert set(kid.persona.posterior) == {"luigi", "waluigi"}
            assert abs(sum(kid.persona.posterior.values()) - 1) < 1e-6
            assert set(kid.persona.path_posterior) == {"luigi", "waluigi"}


def test_threshold_from_config(loom_path: Path, isolated_config: Path) -> None:
    """[personas] threshold = 0.5: C (luigi 0.55) now counts as luigi for the filter."""
    isolated_config.parent.mkdir(parents=True, exist_ok=True)
    isolated_config.write_text("[personas]\nthreshold = 0.5\n")
    app, ids = open_app(loom_path)

    async def body(pilot: Pilot[int]) -> None:
        assert app.persona_threshold == 0.5
        app.action_persona_filter_only("luigi")
        await pilot.pause()
        shown = tree_ids(app, expand=False)
        assert {ids["A"], ids["C"]} <= shown and ids["B"] not in shown

    run(app, body)
