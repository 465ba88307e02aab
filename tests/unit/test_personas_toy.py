"""The arithmetic, on the Waluigi essay's toy model with exact likelihoods.

luigi always emits "A", waluigi "A" or "B" with ½ each, prior ½/½: after n "A"s
P(waluigi) = 1/(1+2ⁿ); after one "B" it is exactly 1.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from support.personas import A, B, ToyEngine, toy_set

from loom.personas.bayes import (
    as_log_prior,
    fit_prior_matching_bias,
    log_normalise,
    posterior,
    sequential_posteriors,
)
from loom.personas.scoring import PersonaScorer
from loom.personas.trajectory import trajectory_from_logliks


def scorer(calibration: str = "none") -> tuple[ToyEngine, PersonaScorer]:
    engine = ToyEngine()
    return engine, PersonaScorer(engine, toy_set(), calibration=calibration)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 10, 40])
def test_after_n_as_waluigi_is_one_over_one_plus_two_to_the_n(n: int) -> None:
    _, s = scorer()
    [score] = s.score([], [[A] * n])
    assert score.raw_posterior["waluigi"] == pytest.approx(1 / (1 + 2**n), rel=1e-12)
    assert score.posterior["waluigi"] == pytest.approx(1 / (1 + 2**n), rel=1e-12)
    assert score.loglik["luigi"] == 0.0
    assert score.loglik["waluigi"] == pytest.approx(n * math.log(0.5))


@pytest.mark.parametrize("n_before", [0, 1, 7, 60])
def test_one_b_makes_waluigi_exactly_one(n_before: int) -> None:
    _, s = scorer()
    [score] = s.score([], [[A] * n_before + [B] + [A] * 3])
    assert score.raw_posterior == {"luigi": 0.0, "waluigi": 1.0}
    assert score.loglik["luigi"] == -math.inf
    assert not any(math.isnan(v) for v in score.raw_posterior.values())


def test_token_trajectory_is_sequential_bayes() -> None:
    with np.errstate(divide="ignore"):
        lp = np.log([[1.0, 0.5], [1.0, 0.5], [1.0, 0.5], [0.0, 0.5], [1.0, 0.5]])
    rows = sequential_posteriors(as_log_prior([0.5, 0.5]), lp)
    assert rows[:, 1] == pytest.approx([0.5, 1 / 3, 1 / 5, 1 / 9, 1.0, 1.0])
    assert rows[4, 0] == 0.0


def test_log_space_survives_underflow_and_all_impossible() -> None:
    # 2000 "A"s: 2^-2000 underflows a float, the log-space posterior does not.
    p = posterior(as_log_prior([0.5, 0.5]), [0.0, 2000 * math.log(0.5)])
    assert p[0] == 1.0 and 0.0 <= p[1] < 1e-300
    # Evidence impossible under every hypothesis is no evidence: uniform, never NaN.
    assert np.allclose(np.exp(log_normalise([-math.inf, -math.inf])), [0.5, 0.5])


def test_uneven_prior() -> None:
    engine = ToyEngine()
    s = PersonaScorer(engine, toy_set(prior_luigi=0.9), calibration="none")  # type: ignore[arg-type]
    [score] = s.score([], [[A] * 2])
    # odds waluigi:luigi = (0.1 × ¼) : (0.9 × 1)
    assert score.raw_posterior["waluigi"] == pytest.approx(0.025 / 0.925)


def test_siblings_share_one_call_per_persona_and_the_null_is_reused() -> None:
    engine, s = scorer()
    branches = [[A, A], [A, B], [B]]
    stored = [np.log([0.75, 0.75]), np.log([0.75, 0.25]), np.log([0.25])]
    s.score([ord("Q")], branches, null=stored)
    assert len(engine.calls) == 2  # luigi + waluigi; the stored null costs nothing
    prefixes = [c[0] for c in engine.calls]
    assert all(p[-1] == ord("Q") and p[0] in (ord("L"), ord("W")) for p in prefixes)
    assert all(c[1] == branches for c in engine.calls)
    engine.calls.clear()
    s.score([ord("Q")], branches, null=[None, None, None])
    assert len(engine.calls) == 3
    assert engine.calls[-1][0] == [ord("Q")]  # the null prefix is the bare context


def test_pmi_against_the_null() -> None:
    _, s = scorer()
    [score] = s.score([], [[A, A]])
    # luigi: log 1 - log ¾ per token; waluigi: log ½ - log ¾
    assert score.pmi["luigi"] == pytest.approx(-math.log(0.75))
    assert score.pmi["waluigi"] == pytest.approx(math.log(0.5 / 0.75))


def test_evidence_names_the_b_as_the_decisive_token() -> None:
    _, s = scorer()
    [score] = s.score([], [[A, A, B, A]], texts=[["A", "A", "B", "A"]])
    top = score.evidence[0]
    assert (top.index, top.text, top.favours, top.against) == (2, "B", "waluigi", "luigi")
    assert top.llr == math.inf
    rest = score.evidence[1]
    assert rest.favours == "luigi" and rest.llr == pytest.approx(math.log(2))


def test_prior_matching_bias_removes_a_constant_per_token_shift() -> None:
    # Persona 0's description makes every token 0.3 nats likelier, whatever the branch says:
    # raw posteriors all favour it; the fitted bias recovers the shift and the prior mean.
    rng = np.random.default_rng(0)
    n = np.full(40, 20.0)
    signal = rng.normal(0, 2.0, 40)
    ll = np.stack([0.3 * n + signal / 2, -signal / 2], axis=1)
    log_prior = as_log_prior([0.5, 0.5])
    assert posterior(log_prior, ll)[:, 0].mean() > 0.9
    bias = fit_prior_matching_bias(log_prior, ll, n)
    assert bias[0] - bias[1] == pytest.approx(0.3, abs=0.02)
    calibrated = posterior(log_prior, ll - n[:, None] * bias)
    assert calibrated.mean(axis=0) == pytest.approx([0.5, 0.5], abs=1e-4)
    assert np.array_equal(calibrated[:, 0] > 0.5, signal > 0)


def test_calibration_needs_a_set() -> None:
    _, s = scorer("prior")
    [score] = s.score([], [[A, A]])
    assert score.bias == {"luigi": 0.0, "waluigi": 0.0}  # one branch: nothing to match


def test_path_trajectory_and_collapse_mark() -> None:
    log_prior = as_log_prior([0.5, 0.5])
    # root, then nodes "AA", "A", "B"
    ll = np.array([[0.0, 2 * math.log(0.5)], [0.0, math.log(0.5)], [-math.inf, math.log(0.5)]])
    traj = trajectory_from_logliks(["luigi", "waluigi"], log_prior, [1, 2, 3, 4], ll, [2, 1, 1])
    assert traj.series("waluigi") == pytest.approx([0.5, 1 / 5, 1 / 9, 1.0])
    assert [s.delta for s in traj.steps] == pytest.approx([0, 0.3, 1 / 5 - 1 / 9, 8 / 9])
    assert [(m.node_id, m.kind, m.persona) for m in traj.marks] == [(4, "collapse", "waluigi")]
    assert traj.marks[0].delta == pytest.approx(8 / 9)
    strict = trajectory_from_logliks(
        ["luigi", "waluigi"], log_prior, [1, 2, 3, 4], ll, [2, 1, 1], collapse_threshold=0.25
    )
    assert [m.node_id for m in strict.marks] == [2, 4]
