"""Logits analysis and sampling on synthetic rows, checked against brute force (no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loom.engine.logits import Analyzer, block_bounds, log_softmax_rows, top_k_rows
from loom.engine.sampling import SamplerSettings, branch_rng, sample_row


def _rows(n: int, v: int, seed: int = 0, scale: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, v)) * scale).astype(np.float32)


@pytest.mark.parametrize("v", [1000, 1024, 5000, 262144])
@pytest.mark.parametrize("parallel", [False, True])
def test_analysis_matches_brute_force(v: int, parallel: bool) -> None:
    x = _rows(5, v, seed=v)
    x[2, 17] = 40.0  # a peaked row
    x[3, :] = 1.0  # a flat row: all ties, top-k must take the lowest ids
    stats = Analyzer(parallel=parallel).analyze(x, 7)
    ref = log_softmax_rows(x)
    lse = x[:, 0].astype(np.float64) - ref[:, 0]
    assert np.allclose(stats.lse, lse, atol=1e-5)
    entropy = -(np.exp(ref) * ref).sum(axis=1)
    assert np.allclose(stats.entropy, entropy, atol=2e-3)
    order = np.lexsort((np.broadcast_to(np.arange(v), x.shape), -x), axis=1)[:, :7]
    assert np.array_equal(stats.top_ids, order)
    assert np.allclose(stats.top_logprobs, np.take_along_axis(ref, order, 1), atol=1e-5)
    assert np.array_equal(stats.top_ids[3], np.arange(7))
    assert np.all(np.diff(stats.top_logprobs, axis=1) <= 0)
    assert np.allclose(stats.exp_block_sums.sum(axis=1), np.exp(lse - stats.maxes), rtol=1e-5)


def test_top_k_larger_than_blocks() -> None:
    x = _rows(2, 300, seed=3)
    ids, vals = top_k_rows(x, 50, block=256)
    assert np.array_equal(ids, np.argsort(-x, axis=1, kind="stable")[:, :50])
    assert np.allclose(vals, np.sort(x, axis=1)[:, ::-1][:, :50])


def _probs(x: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax_rows(x[None, :])[0])


def _truncated_reference(x: np.ndarray, s: SamplerSettings) -> np.ndarray:
    """The llama.cpp chain spelled out on a sorted row: top-k, top-p (renormalised), min-p, temp."""
    p = _probs(x)
    order = np.lexsort((np.arange(len(x)), -x))
    keep = order if s.top_k == 0 else order[: s.top_k]
    if s.top_p < 1:
        q = p[keep] / p[keep].sum()
        cut = int(np.searchsorted(np.cumsum(q), s.top_p)) + 1
        keep = keep[:cut]
    if s.min_p > 0:
        keep = keep[p[keep] >= s.min_p * p.max()]
    w = np.zeros_like(p)
    w[keep] = np.exp((x[keep].astype(np.float64) - x[keep].max()) / s.temperature)
    return w / w.sum()


@pytest.mark.parametrize(
    "settings",
    [
        SamplerSettings(temperature=1.0),
        SamplerSettings(temperature=0.7),
        SamplerSettings(temperature=1.3, top_k=5),
        SamplerSettings(temperature=1.0, top_p=0.8),
        SamplerSettings(temperature=0.9, min_p=0.1),
        SamplerSettings(temperature=1.0, top_k=8, top_p=0.7, min_p=0.05),
    ],
)
def test_sampling_follows_the_truncated_distribution(settings: SamplerSettings) -> None:
    v = 600
    x = _rows(1, v, seed=11, scale=2.0)[0]
    stats = Analyzer(parallel=False).analyze(
        x[None, :], 5, np.asarray([settings.full_vocab_temperature])
    )
    rng = branch_rng(123, 0)
    draws = 20000
    counts = np.bincount(
        [sample_row(x, stats, 0, settings, rng, block_bounds(v)) for _ in range(draws)],
        minlength=v,
    )
    expected = _truncated_reference(x, settings)
    assert counts[expected == 0].sum() == 0  # nothing outside the truncation is ever drawn
    big = expected * draws >= 30
    # each frequent token within 5 standard deviations of its expected count
    sd = np.sqrt(draws * expected[big] * (1 - expected[big]))
    assert np.all(np.abs(counts[big] - draws * expected[big]) < 5 * sd + 1)
    assert abs(counts[big].sum() / draws - expected[big].sum()) < 0.02


def test_greedy_takes_the_argmax_and_draws_nothing() -> None:
    x = _rows(1, 2000, seed=5)[0]
    stats = Analyzer(parallel=False).analyze(x[None, :], 1)
    rng = branch_rng(1, 0)
    state = rng.bit_generator.state
    assert sample_row(x, stats, 0, SamplerSettings(temperature=0), rng) == int(np.argmax(x))
    assert rng.bit_generator.state == state


def test_branch_streams_are_reproducible_and_distinct() -> None:
    a = branch_rng(42, 3).random(5)
    assert np.array_equal(a, branch_rng(42, 3).random(5))
    assert not np.array_equal(a, branch_rng(42, 4).random(5))
    assert not np.array_equal(a, branch_rng(43, 3).random(5))


@pytest.mark.parametrize(
    "kwargs",
    [{"temperature": -1}, {"top_k": -1}, {"top_p": 0}, {"min_p": 2}, {"max_tokens": -1},
     {"temperature": math.nan}],
)  # fmt: skip
def test_settings_are_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SamplerSettings(**kwargs)  # type: ignore[arg-type]


def test_settings_freeze_stop_strings() -> None:
    s = SamplerSettings(stop=["\n", ""])  # type: ignore[arg-type]
    assert s.stop == ("\n",)
    assert hash(s) == hash(SamplerSettings(stop=("\n",)))
