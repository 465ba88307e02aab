"""The census on the Waluigi essay's toy world, where the truth is computable."""

from __future__ import annotations

import threading

import pytest
from support.personas import A, ToyWorld, toy_set

from loom.app.census import UNDECIDED, CensusError, CensusSettings, run_census, wilson


def census(world: ToyWorld, seed: int, **kw: object) -> object:
    settings = CensusSettings(seed=seed, **{"rollouts": 32, "tokens": 8, **kw})  # type: ignore[arg-type]
    return run_census(world, toy_set(), 1, [ord("Q")], settings)


def test_wilson_intervals() -> None:
    assert wilson(0, 10)[0] == 0.0 and 0.25 < wilson(0, 10)[1] < 0.35
    low, high = wilson(5, 10)
    assert low < 0.5 < high and high - low == pytest.approx(2 * (0.5 - low))
    assert wilson(10, 10)[1] == pytest.approx(1.0)
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
        cancel.set()  # after the first batch

    settings = CensusSettings(rollouts=40, tokens=4, batch=16, seed=1)
    result = run_census(world, toy_set(), 1, [ord("Q")], settings, cancel=cancel, progress=progress)
    assert seen == [(16, 40)] and len(result.rollouts) == 16 and result.cancelled


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
    import numpy as np

    from loom.tokens import TokenArray

    ids = [ord(c) for c in "QAAAAA"]
    n = len(ids)
    top_ids = np.tile(np.asarray([A, ord("C")], dtype=np.int32), (n, 1))
    top_lps = np.tile(np.log(np.asarray([0.85, 0.15], dtype=np.float32)), (n, 1))
    top_ids[3] = [A, ord("F")]  # the planted alternative, at token 3
    entropy = np.full(n, 0.4, dtype=np.float32)
    tokens = TokenArray(
        ids=np.asarray(ids, dtype=np.int32),
        texts=list("QAAAAA"),
        logprobs=np.log(np.full(n, 0.85, dtype=np.float32)),
        top_ids=top_ids,
        top_logprobs=top_lps,
        top_texts={A: "A", ord("C"): "C", ord("F"): "F"},
        entropy=entropy,
    )
    tokens.logprobs[0] = float("nan")  # the prompt's token: not the model's
    return tokens, [1] * n, list(range(n))


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
