"""Personas on a real loom file: labelling, manual override, filters, prune-by-persona with undo,
collapse and mode-collapse marks — all with the seed's toy model as the engine."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from support.personas import ToyEngine, add, toy_loom, toy_set

from loom.personas.actions import label_nodes, persona_set_from_loom, prune_siblings_voicing
from loom.personas.labels import effective_label, filter_nodes, voices
from loom.personas.scoring import PersonaScorer
from loom.personas.trajectory import score_trajectory, stored_trajectory
from loom.store.loom import Loom
from loom.store.model import PersonaLabel


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Loom, dict[str, int]]:
    """root "Q" ─ aa "AA" ─ a "A" ─ b "B"
    ├ long "AAAAAAAA"
    ├ ab "AB"
    └ loop "ABABABABABABAB"
    """
    loom = toy_loom(tmp_path)
    r = loom.root_id
    ids = {"aa": add(loom, r, "AA")}
    ids["a"] = add(loom, ids["aa"], "A")
    ids["b"] = add(loom, ids["a"], "B")
    ids["long"] = add(loom, r, "AAAAAAAA")
    ids["ab"] = add(loom, r, "AB")
    ids["loop"] = add(loom, r, "ABABABABABABAB")
    return loom, ids


def test_label_nodes_stores_posteriors_labels_and_trajectory(
    tree: tuple[Loom, dict[str, int]],
) -> None:
    loom, ids = tree
    run = label_nodes(loom, ToyEngine(), toy_set(), calibration="none")  # type: ignore[arg-type]
    assert set(run.labels) == set(ids.values())  # every node but the root
    assert [p.name for p in loom.personas] == ["luigi", "waluigi"]
    aa = loom.node(ids["aa"]).persona
    assert aa is not None and aa.source == "model"
    assert aa.label == "luigi" and aa.posterior["waluigi"] == pytest.approx(1 / 5)
    assert aa.raw_posterior["waluigi"] == pytest.approx(1 / 5)
    # the node alone vs the path: "A" after "AA" is 1/3 alone, 1/9 along the path
    a = loom.node(ids["a"]).persona
    assert a is not None and a.posterior["waluigi"] == pytest.approx(1 / 3)
    assert a.path_posterior["waluigi"] == pytest.approx(1 / 9)
    b = loom.node(ids["b"]).persona
    assert (
        b is not None
        and b.label == "waluigi"
        and b.path_posterior == {"luigi": 0.0, "waluigi": 1.0}
    )
    assert b.collapse and not a.collapse and not aa.collapse
    assert loom.node(ids["long"]).persona.label == "luigi"  # type: ignore[union-attr]


def test_undecided_below_threshold(tree: tuple[Loom, dict[str, int]]) -> None:
    loom, ids = tree
    label_nodes(loom, ToyEngine(), toy_set(), threshold=0.9, calibration="none")  # type: ignore[arg-type]
    aa = loom.header(ids["aa"]).persona
    assert aa is not None and aa.label is None and aa.posterior["luigi"] == pytest.approx(0.8)
    assert effective_label(loom.header(ids["aa"])) == (None, "model", pytest.approx(0.8))


def test_collapse_threshold_is_configurable_and_strict(tree: tuple[Loom, dict[str, int]]) -> None:
    loom, ids = tree
    run = label_nodes(loom, ToyEngine(), toy_set(), calibration="none", collapse_threshold=0.25)  # type: ignore[arg-type]
    collapsed = {m.node_id for m in run.marks if m.kind == "collapse"}
    # "AB": 0.5 → 1.0 is a shift of exactly 0.5; "AA": 0.5 → 0.2 is 0.3
    assert collapsed == {ids["aa"], ids["long"], ids["ab"], ids["b"], ids["loop"]}
    loom2 = tree[0]
    run2 = label_nodes(loom2, ToyEngine(), toy_set(), [ids["ab"]], calibration="none")  # type: ignore[arg-type]
    assert not [m for m in run2.marks if m.kind == "collapse"]  # 0.5 is not > 0.5


def test_mode_collapse_mark(tree: tuple[Loom, dict[str, int]]) -> None:
    loom, ids = tree
    run = label_nodes(loom, ToyEngine(), toy_set(), calibration="none")  # type: ignore[arg-type]
    loops = [m for m in run.marks if m.kind == "mode_collapse"]
    assert [(m.node_id, m.period, m.repeats, m.span) for m in loops] == [(ids["loop"], 2, 7, 14)]
    assert loom.header(ids["loop"]).persona.mode_collapse  # type: ignore[union-attr]
    assert not loom.header(ids["long"]).persona.mode_collapse  # type: ignore[union-attr]


def test_relabel_only_what_is_missing_and_single_nodes(tree: tuple[Loom, dict[str, int]]) -> None:
    loom, ids = tree
    engine = ToyEngine()
    label_nodes(loom, engine, toy_set(), calibration="none")  # type: ignore[arg-type]
    engine.calls.clear()
    assert label_nodes(loom, engine, toy_set(), calibration="none").labels == {}  # type: ignore[arg-type]
    assert engine.calls == []
    again = label_nodes(loom, engine, toy_set(), [ids["b"]], calibration="none")  # type: ignore[arg-type]
    assert list(again.labels) == [ids["b"]]  # its ancestors' stored path posteriors are reused
    assert again.labels[ids["b"]].collapse


def test_labelling_a_deep_node_labels_its_unlabelled_ancestors(tmp_path: Path) -> None:
    loom = toy_loom(tmp_path)
    x = add(loom, loom.root_id, "A")
    y = add(loom, x, "A")
    run = label_nodes(loom, ToyEngine(), toy_set(), [y], calibration="none")  # type: ignore[arg-type]
    assert set(run.labels) == {x, y}
    assert run.labels[y].path_posterior["waluigi"] == pytest.approx(1 / 5)


def test_one_group_costs_one_call_per_persona(tmp_path: Path) -> None:
    loom = toy_loom(tmp_path)
    for text in ["AA", "AB", "BA", "AAA"]:
        add(loom, loom.root_id, text)
    engine = ToyEngine()
    run = label_nodes(loom, engine, toy_set(), calibration="none")  # type: ignore[arg-type]
    # 2 personas + the null (char_tokens carry no stored logprobs, so the null is scored)
    assert run.engine_calls == len(engine.calls) == 3


def test_manual_label_is_kept_apart_and_always_wins(tree: tuple[Loom, dict[str, int]]) -> None:
    loom, ids = tree
    label_nodes(loom, ToyEngine(), toy_set(), calibration="none")  # type: ignore[arg-type]
    assert effective_label(loom.node(ids["aa"])) == ("luigi", "model", pytest.approx(0.8))
    loom.set_manual_persona(ids["aa"], "waluigi")
    for view in (loom.node(ids["aa"]), loom.header(ids["aa"])):
        assert effective_label(view) == ("waluigi", "human", 1.0)
        assert view.persona is not None and view.persona.label == "luigi"  # model label intact
        assert voices(view, "waluigi", 0.99) and not voices(view, "luigi", 0.0)
    # relabelling by the model never touches the hand label
    label_nodes(loom, ToyEngine(), toy_set(), [ids["aa"]], calibration="none")  # type: ignore[arg-type]
    assert effective_label(loom.header(ids["aa"])).name == "waluigi"
    loom.set_manual_persona(ids["aa"], None)
    assert effective_label(loom.header(ids["aa"])).source == "model"


def test_effective_label_of_unlabelled_and_imported() -> None:
    from loom.store.model import Node

    bare = Node(id=2, parent=1, author="model", text="x", created_at=0.0)
    assert effective_label(bare) == (None, None, 0.0)
    bare.persona = PersonaLabel(label="rogue", source="human")  # imported: label, no posterior
    assert effective_label(bare) == ("rogue", "human", 1.0)


def test_filters(tree: tuple[Loom, dict[str, int]]) -> None:
    loom, ids = tree
    label_nodes(loom, ToyEngine(), toy_set(), calibration="none")  # type: ignore[arg-type]
    kids = loom.children(loom.root_id)
    only = filter_nodes(kids, "waluigi", 0.6, mode="only")
    assert [h.id for h in only] == [ids["ab"], ids["loop"]]
    hidden = filter_nodes(kids, "waluigi", 0.6, mode="hide")
    assert [h.id for h in hidden] == [ids["aa"], ids["long"]]
    assert [h.id for h in filter_nodes(kids, "luigi", 0.99, mode="only")] == [ids["long"]]
    loom.set_manual_persona(ids["long"], "waluigi")  # the hand label wins over the threshold
    kids = loom.children(loom.root_id)
    assert ids["long"] in [h.id for h in filter_nodes(kids, "waluigi", 0.99, mode="only")]
    with pytest.raises(ValueError):
        filter_nodes(kids, "waluigi", 0.5, mode="invert")  # type: ignore[arg-type]


def test_prune_siblings_voicing(tree: tuple[Loom, dict[str, int]]) -> None:
    loom, ids = tree
    label_nodes(loom, ToyEngine(), toy_set(), calibration="none")  # type: ignore[arg-type]
    pruned = prune_siblings_voicing(loom, ids["aa"], "waluigi", 0.6)
    assert sorted(pruned) == sorted([ids["ab"], ids["loop"]])
    assert {h.id for h in loom.children(loom.root_id, include_pruned=False)} == {
        ids["aa"],
        ids["long"],
    }
    assert prune_siblings_voicing(loom, ids["aa"], "waluigi", 0.6) == []  # already pruned
    # the node itself is kept unless asked
    assert prune_siblings_voicing(loom, ids["long"], "luigi", 0.6) == [ids["aa"]]


def test_prune_by_persona_is_one_undo(tree: tuple[Loom, dict[str, int]]) -> None:
    loom, ids = tree
    label_nodes(loom, ToyEngine(), toy_set(), calibration="none")  # type: ignore[arg-type]
    pruned = prune_siblings_voicing(loom, ids["long"], "waluigi", 0.6, include_self=True)
    assert len(pruned) == 2
    loom.undo()
    assert all(not loom.header(i).pruned for i in ids.values())
    loom.redo()
    assert all(loom.header(i).pruned for i in pruned)


def test_a_label_run_is_one_undo(tree: tuple[Loom, dict[str, int]]) -> None:
    loom, ids = tree
    label_nodes(loom, ToyEngine(), toy_set(), calibration="none")  # type: ignore[arg-type]
    loom.undo()
    assert all(loom.header(i).persona is None for i in ids.values())
    assert loom.personas == []


def test_trajectories(tree: tuple[Loom, dict[str, int]]) -> None:
    loom, ids = tree
    scorer = PersonaScorer(ToyEngine(), toy_set(), calibration="none")  # type: ignore[arg-type]
    fresh = score_trajectory(scorer, loom, ids["b"])
    assert [s.node_id for s in fresh.steps] == [loom.root_id, ids["aa"], ids["a"], ids["b"]]
    assert fresh.series("waluigi") == pytest.approx([0.5, 1 / 5, 1 / 9, 1.0])
    assert [(m.node_id, m.kind) for m in fresh.marks] == [(ids["b"], "collapse")]
    label_nodes(loom, ToyEngine(), toy_set(), calibration="none")  # type: ignore[arg-type]
    stored = stored_trajectory(loom, ids["b"])
    assert stored.series("waluigi") == pytest.approx(fresh.series("waluigi"))
    assert [(m.node_id, m.kind, m.persona) for m in stored.marks] == [
        (ids["b"], "collapse", "waluigi")
    ]
    loop = score_trajectory(scorer, loom, ids["loop"])
    # 0.5 → 1.0 right after the prompt is a shift of exactly 0.5: not "more than" the default
    assert [m.kind for m in loop.marks] == ["mode_collapse"]
    assert not math.isnan(loop.steps[-1].delta) and np.isfinite(loop.steps[-1].delta)


def test_summary_and_stored_persona_set(tree: tuple[Loom, dict[str, int]]) -> None:
    loom, _ = tree
    assert persona_set_from_loom(loom) is None
    run = label_nodes(loom, ToyEngine(), toy_set(), calibration="none")  # type: ignore[arg-type]
    line = run.summary()
    assert line.startswith("labelled 6 nodes: luigi 3, waluigi 3")
    assert "collapse 1, mode collapse 1" in line and "\n" not in line
    stored = persona_set_from_loom(loom)
    assert stored is not None and stored.personas == toy_set().personas


def test_calibrated_run_stores_its_bias_and_small_runs_reuse_it(tmp_path: Path) -> None:
    loom = toy_loom(tmp_path)
    for text in ["AAAA", "AAAAAA", "A", "AA", "AAA", "A", "AAAAAAAA", "AAAAA"]:
        add(loom, loom.root_id, text)
    run = label_nodes(loom, ToyEngine(), toy_set())  # type: ignore[arg-type]
    assert run.bias and all(lab.bias == run.bias for lab in run.labels.values())
    mean_waluigi = np.mean([lab.posterior["waluigi"] for lab in run.labels.values()])
    assert mean_waluigi == pytest.approx(0.5, abs=1e-3)  # prior matching over the run
    late = add(loom, loom.root_id, "AA")
    small = label_nodes(loom, ToyEngine(), toy_set(), [late])  # type: ignore[arg-type]
    assert small.bias == pytest.approx(run.bias)
