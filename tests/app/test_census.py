"""The census on the Waluigi essay's toy world, where the truth is computable."""

from __future__ import annotations

import threading

import pytest
from support.engines import default_gguf, engine
from support.personas import A, ToyWorld, planted_tokens, toy_set

from loom.app.census import (
    UNDECIDED,
    CensusError,
    CensusSettings,
    progress_units,
    run_census,
    wilson,
)
from loom.engine.engine import Engine
from loom.personas.sets import load_persona_set

__all__ = ["default_gguf", "engine"]  # fixtures


def census(world: ToyWorld, seed: int, **kw: object) -> object:
    settings = CensusSettings(seed=seed, **{"rollouts": 32, "tokens": 8, **kw})  # type: ignore[arg-type]
    return run_census(world, toy_set(), 1, [ord("Q")], settings)


def test_wilson_intervals() -> None:
    assert wilson(0, 10)[0] == 0.0 and 0.25 < wilson(0, 10)[1] < 0.35
    low, high = wilson(5, 10)
    assert low < 0.5 < high and high - low == pytest.approx(2 * (0.5 - low))
    assert wilson(10, 10)[1] == pytest.approx(1.0)
    for n in (1, 2, 3, 7, 9, 24, 96):  # rounding never leaves the share outside its interval
        for k in (0, n):
            low, high = wilson(k, n)
            assert low <= k / n <= high
    assert wilson(0, 0) == (0.0, 1.0)


def test_the_95_percent_intervals_cover_the_truth_in_nine_runs_out_of_ten() -> None:
    world = ToyWorld(p_waluigi=0.3)
    tokens = 8
    truth = {"waluigi": 0.3 * (1 - 2**-tokens), "luigi": 1 - 0.3 * (1 - 2**-tokens)}
    covered = {"waluigi": 0, "luigi": 0}
    runs = 200
    for seed in range(runs):
        shares = census(world, seed, tokens=tokens).shares  # type: ignore[attr-defined]
        assert shares[UNDECIDED].count == 0  # 8 "A"s are luigi's at the 0.6 threshold
        for name, p in truth.items():
            covered[name] += shares[name].low <= p <= shares[name].high
    assert covered["waluigi"] >= 0.9 * runs and covered["luigi"] >= 0.9 * runs


def test_what_a_census_reports() -> None:
    result = census(ToyWorld(p_waluigi=0.5), 7, tokens=16)
    data = result.to_json()  # type: ignore[attr-defined]
    assert (data["node"], data["rollouts"], data["tokens"], data["seed"]) == (1, 32, 16, 7)
    assert set(data["personas"]) == {"luigi", "waluigi", UNDECIDED}
    waluigi = data["personas"]["waluigi"]
    assert {"share", "low", "high", "mean_posterior", "collapse"} <= set(waluigi)
    assert waluigi["low"] <= waluigi["share"] <= waluigi["high"]
    assert sum(p["count"] for p in data["personas"].values()) == 32
    rollouts = result.rollouts  # type: ignore[attr-defined]
    for index in waluigi["examples"]:  # the typical ones are labelled so
        assert rollouts[index].label == "waluigi" and "B" in rollouts[index].text
    assert len(waluigi["examples"]) == 3
    # luigi's rollouts are nothing but "A" (16 of them: a loop), which the census reports
    assert data["personas"]["luigi"]["collapse"] == 1.0
    assert data["personas"]["waluigi"]["collapse"] < 1.0
    assert all(r.tokens.ids[0] in (A, ord("B")) and len(r.tokens) == 16 for r in rollouts)


def test_a_seed_reproduces_a_census_and_another_seed_differs() -> None:
    world = ToyWorld(p_waluigi=0.5)
    first = [r.text for r in census(world, 3).rollouts]  # type: ignore[attr-defined]
    again = [r.text for r in census(world, 3).rollouts]  # type: ignore[attr-defined]
    other = [r.text for r in census(world, 4).rollouts]  # type: ignore[attr-defined]
    assert first == again and first != other


def test_rollouts_come_in_batches_and_a_cancel_keeps_those_done() -> None:
    world = ToyWorld()
    cancel = threading.Event()
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        cancel.set()  # after the first batch (the toy world reports no steps within one)

    settings = CensusSettings(rollouts=40, tokens=4, batch=16, seed=1)
    result = run_census(world, toy_set(), 1, [ord("Q")], settings, cancel=cancel, progress=progress)
    # a unit per token of each rollout and one for its labelling: 16 × 5 of 40 × 5
    assert seen == [(80, 200)] and len(result.rollouts) == 16 and result.cancelled


@pytest.mark.model
def test_progress_moves_while_a_batch_is_generated(engine: Engine) -> None:
    """On the real model: the bar moves with every token step of a batch, then with its
    labelling, and ends at its full scale (not one report per batch)."""
    persona_set = load_persona_set("croissant")
    settings = CensusSettings(rollouts=4, tokens=8, batch=4, seed=3)
    seen: list[tuple[int, int]] = []
    context = engine.tokenize(persona_set.prompt)
    run_census(engine, persona_set, 1, context, settings, progress=lambda d, t: seen.append((d, t)))
    units = progress_units(settings)
    assert units == 4 * 9 and {t for _d, t in seen} == {units}
    done = [d for d, _t in seen]
    assert done == sorted(done) and done[-1] == units
    assert len([d for d in done if 0 < d < units]) >= 4  # within the one batch


def test_a_census_after_a_token_forces_it_first() -> None:
    world = ToyWorld(p_waluigi=0.0, fork=ord("B"))
    result = run_census(
        world, toy_set(), 1, [ord("Q")], CensusSettings(rollouts=8, tokens=4, seed=2),
        forced=[ord("B")],
    )  # fmt: skip
    assert all(r.text.startswith("B") and r.label == "waluigi" for r in result.rollouts)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (CensusSettings(rollouts=0), "rollouts must be between 1 and 4096"),
        (CensusSettings(tokens=0), "tokens per rollout must be between 1 and 1024"),
        (CensusSettings(threshold=0), "threshold must be in"),
    ],
)
def test_bad_settings_are_one_line(settings: CensusSettings, message: str) -> None:
    with pytest.raises(CensusError, match=message):
        run_census(ToyWorld(), toy_set(), 1, [ord("Q")], settings)


def test_no_persona_set_says_how_to_load_one() -> None:
    from loom.personas.sets import PersonaSet

    with pytest.raises(CensusError, match="persona set"):
        run_census(ToyWorld(), PersonaSet(personas=[]), 1, [ord("Q")], CensusSettings())


# --- the fork map ---------------------------------------------------------------------------


def planted_path() -> tuple[object, list[int], list[int]]:
    """A path of 6 model tokens "QAAAAA" whose token 3 could have been the forking "F"."""
    tokens = planted_tokens("QAAAAA", 3)
    tokens.logprobs[0] = float("nan")  # the prompt's token: not the model's
    return tokens, [1] * 6, list(range(6))


def test_the_fork_map_finds_a_planted_forking_token() -> None:
    from loom.app.forks import fork_map

    tokens, owners, positions = planted_path()
    world = ToyWorld(p_waluigi=0.0, fork=ord("F"))  # luigi's story, unless "F" is said
    result = fork_map(
        world, toy_set(), 1, tokens, owners, positions, budget=3000, rollouts=4,
        rollout_tokens=12, seed=5,
    )  # fmt: skip
    assert [p.index for p in result.forking()] == [3]
    planted = next(p for p in result.points if p.index == 3)
    assert planted.divergence(result.names) == 1.0
    assert {p.index for p in result.points} == {1, 2, 3, 4, 5}  # the prompt token is not a point
    assert result.tokens_used <= 3000 and world.generated == result.tokens_used
    # the budget left after the first pass went to the fork, where the outcomes differ
    assert planted.sampled.n > min(p.sampled.n for p in result.points)
    data = result.to_json()
    assert data["forking"] == [3] and data["points"][2]["outcomes"][1]["token"] == "F"


def test_a_fork_map_needs_model_tokens_and_a_budget() -> None:
    import numpy as np

    from loom.app.forks import ForkMapError, fork_map
    from loom.tokens import TokenArray

    human = TokenArray.from_ids([A, A], ["A", "A"])
    with pytest.raises(ForkMapError, match="needs tokens the model sampled"):
        fork_map(ToyWorld(), toy_set(), 1, human, [1, 1], [0, 1], budget=100)
    tokens, owners, positions = planted_path()
    with pytest.raises(ForkMapError, match="budget must be above 0"):
        fork_map(ToyWorld(), toy_set(), 1, tokens, owners, positions, budget=0)
    with pytest.raises(ForkMapError, match="does not cover one point"):
        fork_map(ToyWorld(), toy_set(), 1, tokens, owners, positions, budget=10)
    assert np.isnan(tokens.logprobs[0])


# --- through the Session, kept in the loom ------------------------------------------------------


@pytest.fixture
def toy_session(tmp_path: object) -> object:
    from support.personas import toy_loom

    from loom.app.session import Session

    loom = toy_loom(tmp_path)  # type: ignore[arg-type]
    loom.set_personas(toy_set().personas)
    session = Session(loom, ToyWorld(p_waluigi=0.5))  # type: ignore[arg-type]
    yield session
    loom.close()


def test_a_census_is_kept_replayed_exported_and_undone(
    toy_session: object, tmp_path: object
) -> None:
    from loom.app.census import CensusResult
    from loom.formats import read_document, render_document
    from loom.store.history import read_history
    from loom.store.loom import Loom

    s = toy_session
    root = s.root_id  # type: ignore[attr-defined]
    result = s.run_census(root, CensusSettings(rollouts=8, tokens=6, seed=1))  # type: ignore[attr-defined]
    seq = s.save_census(result)  # type: ignore[attr-defined]
    (kept,) = s.censuses(root)  # type: ignore[attr-defined]
    assert isinstance(kept, CensusResult) and kept.seq == seq
    assert kept.to_json() == result.to_json()  # every figure survives the log
    assert [r.text for r in kept.outcomes[0].census.rollouts] == [
        r.text for r in result.outcomes[0].census.rollouts
    ]
    assert s.children(root) == []  # the rollouts stay out of the tree  # type: ignore[attr-defined]
    _, steps = read_history(s.events())  # type: ignore[attr-defined]
    assert steps[-1].kind == "census" and "census of 8 rollouts" in steps[-1].summary
    # carried by loom-json, and read back by an import
    text = render_document(s.to_document(), "loom-json")  # type: ignore[attr-defined]
    copy = Loom.from_document(tmp_path / "copy.loom", read_document(text.encode()))  # type: ignore[operator]
    with copy:
        (again,) = copy.censuses(root)
        assert CensusResult.from_payload(again.payload).to_json() == result.to_json()
    s.undo()  # type: ignore[attr-defined]
    assert s.censuses(root) == []  # type: ignore[attr-defined]
    s.redo()  # type: ignore[attr-defined]
    assert len(s.censuses(root)) == 1  # type: ignore[attr-defined]


def test_a_rollout_promoted_into_the_tree_is_a_model_node_that_remembers_its_census(
    toy_session: object,
) -> None:
    s = toy_session
    root = s.root_id  # type: ignore[attr-defined]
    result = s.run_census(root, CensusSettings(rollouts=4, tokens=5, seed=9))  # type: ignore[attr-defined]
    s.save_census(result)  # type: ignore[attr-defined]
    node = s.promote_rollout(result, 0, 2)  # type: ignore[attr-defined]
    promoted = s.node(node)  # type: ignore[attr-defined]
    rollout = result.outcomes[0].census.rollouts[2]
    assert promoted.parent == root and promoted.author == "model"
    assert promoted.text == rollout.text and list(promoted.tokens.ids) == list(rollout.tokens.ids)
    assert promoted.meta["from_census"] == result.seq and promoted.meta["rollout"] == 2
    # the census's reading of it is its label (undecided: scored, no label)
    assert promoted.persona is not None and promoted.persona.source == "model"
    assert promoted.persona.posterior == rollout.posterior
    assert promoted.persona.label == (None if rollout.label == UNDECIDED else rollout.label)
    assert promoted.persona.mode_collapse == rollout.repetition
    gen = promoted.generation
    assert (gen.seed, gen.batch_index, gen.batch_size) == (
        rollout.batch_seed,
        rollout.batch_index,
        4,
    )


def test_a_census_at_a_token_weighs_each_alternative(toy_session: object) -> None:
    from support.personas import B, add

    from loom.engine.sampling import SamplerSettings

    s = toy_session
    human = add(s.loom, s.root_id, "AA")  # type: ignore[attr-defined]
    with pytest.raises(CensusError, match="no alternatives recorded"):
        s.run_census(human, CensusSettings(rollouts=2, tokens=2), token_index=1)  # type: ignore[attr-defined]
    with pytest.raises(CensusError, match="has 2 tokens: no token 5"):
        s.run_census(human, CensusSettings(rollouts=2, tokens=2), token_index=5)  # type: ignore[attr-defined]
    settings = SamplerSettings(max_tokens=3, seed=1)
    result = s.run_generation(s.prefix_ids(s.root_id), 1, settings)  # type: ignore[attr-defined]
    (node,) = s.save_branches(s.root_id, result, settings)  # type: ignore[attr-defined]
    world = s.backend  # type: ignore[attr-defined]
    world.fork = B  # "B" first: waluigi for sure
    census = s.run_census(node, CensusSettings(rollouts=6, tokens=6, seed=3), token_index=0)  # type: ignore[attr-defined]
    data = census.to_json()
    assert data["token_index"] == 0 and [a["token"] for a in data["alternatives"]] == ["A", "B"]
    after_a, after_b = data["alternatives"]
    assert after_a["p"] == pytest.approx(0.75) and after_b["p"] == pytest.approx(0.25)
    assert after_b["personas"]["waluigi"]["share"] == 1.0
    assert after_a["personas"]["waluigi"]["share"] < 1.0  # "A" first leaves luigi possible
    seq = s.save_census(census)  # type: ignore[attr-defined]
    promoted = s.promote_rollout(s.censuses(node)[0], 1, 0)  # type: ignore[attr-defined]
    # a rollout after the first token is a counterfactual branch: the node was not split at 0,
    # the branch is its sibling and starts with "B"
    assert s.node(promoted).parent == s.root_id and s.node(promoted).text.startswith("B")  # type: ignore[attr-defined]
    assert seq > 0


def test_a_transition_table_from_the_labelled_nodes(toy_session: object) -> None:
    from loom.app.census import transition_table
    from loom.store.model import PersonaLabel

    s = toy_session
    s.backend.p_waluigi = 1.0  # type: ignore[attr-defined]
    root = s.root_id  # type: ignore[attr-defined]
    from support.personas import add

    w = add(s.loom, root, "B")  # type: ignore[attr-defined]
    s.loom.set_persona(w, PersonaLabel("waluigi", "model", {"luigi": 0.0, "waluigi": 1.0}))  # type: ignore[attr-defined]
    pairs, fresh = s.plan_transitions(root, CensusSettings(rollouts=8, tokens=8, seed=2))  # type: ignore[attr-defined]
    assert [label for label, _ in pairs] == ["waluigi"] and len(fresh) == 1
    for result in fresh:
        s.save_census(result)  # type: ignore[attr-defined]
    again, more = s.plan_transitions(root, CensusSettings(rollouts=8, tokens=8))  # type: ignore[attr-defined]
    assert more == [] and again[0][1].seq == fresh[0].seq  # the stored census is reused
    table = transition_table(pairs)
    (to_waluigi,) = [t for t in table.row("waluigi") if t.target == "waluigi"]
    assert to_waluigi.n == 8 and to_waluigi.share > 0.9  # waluigi is absorbing in this world


def test_guided_growth_grows_by_its_policy_one_undo_step_at_a_time(toy_session: object) -> None:
    from loom.app.growth import Growth, GrowthError, GrowthPolicy, grow
    from loom.engine.sampling import SamplerSettings

    s = toy_session
    root = s.root_id  # type: ignore[attr-defined]
    names = ["luigi", "waluigi"]
    with pytest.raises(GrowthError, match="hunt needs a persona"):
        GrowthPolicy.parse("hunt:mario", names)
    settings = SamplerSettings(max_tokens=4, seed=11)
    growth = Growth(s, GrowthPolicy.parse("hunt:waluigi", names), root, 2, settings,  # type: ignore[arg-type]
                    budget_tokens=24)  # fmt: skip
    steps: list[list[int]] = []
    grow(growth, on_step=lambda step, ids: steps.append(ids))
    assert growth.tokens >= 24 and len(steps) == growth.steps == 3
    autos = [e for e in s.events() if e.kind == "group" and e.payload.get("auto")]  # type: ignore[attr-defined]
    assert [e.payload["auto"] for e in autos] == ["hunt:waluigi"] * 3
    for ids in steps:  # every child labelled as it was written
        assert all(s.header(i).persona is not None for i in ids)  # type: ignore[attr-defined]
    # best-first toward waluigi: each step grows under the likeliest waluigi leaf so far
    parents = [s.node(ids[0]).parent for ids in steps[1:]]  # type: ignore[attr-defined]
    leaf_p = [s.header(p).persona.path_posterior["waluigi"] for p in parents]  # type: ignore[attr-defined]
    assert all(p >= 0.5 for p in leaf_p)
    # one undo removes exactly one step
    before = len(s.subtree_ids(root))  # type: ignore[attr-defined]
    s.undo()  # type: ignore[attr-defined]
    assert len(s.subtree_ids(root)) == before - 2  # type: ignore[attr-defined]
    with pytest.raises(GrowthError, match="budget must be above 0"):
        Growth(s, GrowthPolicy("explore"), root, 2, settings, budget_tokens=0)  # type: ignore[arg-type]
