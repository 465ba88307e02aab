"""Bayes over personas in log space: posteriors, trajectories, calibration bias, evidence.

Pure numpy. Shapes: P personas, T tokens, B branches. Log-likelihoods may be -inf (a hypothesis
that cannot have produced a token): that persona's posterior becomes exactly 0, never NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def as_log_prior(priors: Sequence[float] | FloatArray) -> FloatArray:
    p = np.asarray(priors, dtype=np.float64)
    if p.ndim != 1 or p.size == 0 or not np.all(p > 0) or not np.all(np.isfinite(p)):
        raise ValueError("priors must be a non-empty vector of positive finite numbers")
    return np.asarray(np.log(p / p.sum()), dtype=np.float64)


def log_normalise(log_weights: npt.ArrayLike) -> FloatArray:
    """Subtract the log-sum-exp over the last axis, treating -inf exactly.

    A row where every hypothesis is impossible (all -inf) carries no usable evidence; it is
    returned as uniform rather than NaN so one bad row cannot poison a trajectory.
    """
    w = np.asarray(log_weights, dtype=np.float64)
    m = np.max(w, axis=-1, keepdims=True)
    dead = ~np.isfinite(m)
    safe_m = np.where(dead, 0.0, m)
    with np.errstate(divide="ignore", invalid="ignore"):
        lse = safe_m + np.log(np.sum(np.exp(w - safe_m), axis=-1, keepdims=True))
        out = w - lse
    if np.any(dead):
        out = np.where(dead, -np.log(w.shape[-1]), out)
    return np.asarray(out, dtype=np.float64)


def posterior(log_prior: FloatArray, logliks: npt.ArrayLike) -> FloatArray:
    """P(persona | evidence) ∝ prior × likelihood, over the last axis (broadcasts over rows)."""
    return np.exp(log_normalise(log_prior + np.asarray(logliks, dtype=np.float64)))


def sequential_posteriors(log_prior: FloatArray, step_logliks: npt.ArrayLike) -> FloatArray:
    """Posterior after each step of a sequence (tokens of a node, or nodes of a path).

    Row 0 is the prior; row k is the posterior after steps 1..k. Because each step's likelihood
    is conditioned on the steps before it (chain rule), the cumulative sum is exact.
    """
    steps = np.asarray(step_logliks, dtype=np.float64).reshape(-1, log_prior.size)
    with np.errstate(invalid="ignore"):
        cum = np.cumsum(steps, axis=0)
    cum = np.where(np.isnan(cum), -np.inf, cum)  # -inf + -inf stays -inf; only inf-inf is NaN
    rows = np.vstack([np.zeros((1, log_prior.size)), cum])
    return np.exp(log_normalise(log_prior + rows))


def max_shift(before: FloatArray, after: FloatArray) -> float:
    """How far a posterior moved: max over personas of |Δp| (0..1)."""
    return float(np.max(np.abs(np.asarray(after) - np.asarray(before))))


def fit_prior_matching_bias(
    log_prior: FloatArray,
    logliks: FloatArray,
    n_tokens: npt.ArrayLike,
    *,
    iterations: int = 500,
    tolerance: float = 1e-6,
) -> FloatArray:
    """Per-persona bias b (nats per token) such that, over a set of branches, the mean posterior
    computed from `logliks - n_tokens × b` equals the prior.

    Why: a description shifts the likelihood of *any* text by a roughly per-token amount (it
    shares words with it, or it is just a likelier preface for this genre). That shift is a
    property of the description, not of the branch, so it is removed by one number per persona.
    The fixed point is the prior-shift EM of Saerens et al. (2002), solved in the bias instead
    of the prior. It is transductive: it assumes the set really is mixed in prior proportions.
    """
    ll = np.asarray(logliks, dtype=np.float64)
    n = np.asarray(n_tokens, dtype=np.float64).reshape(-1, 1)
    bias = np.zeros(log_prior.size)
    if ll.shape[0] < 2 or log_prior.size < 2:
        return bias
    scale = max(float(np.mean(n)), 1.0)
    target = np.exp(log_prior)
    for _ in range(iterations):
        post = posterior(log_prior, ll - n * bias)
        mean = np.clip(post.mean(axis=0), 1e-12, None)
        step = np.log(mean / target) / scale
        # Damped: the map is monotone but can overshoot when few branches dominate.
        bias = bias + 0.8 * step
        bias -= bias.mean()  # only differences between personas matter
        if float(np.max(np.abs(mean - target))) < tolerance:
            break
    return bias


def token_contributions(token_logliks: npt.ArrayLike) -> FloatArray:
    """Each token's push on the log posterior of each persona: its log-likelihood minus the mean
    over personas. Summed over tokens these give the log posterior odds (up to the prior), so a
    token's contribution is its share of the decision. -inf rows stay -inf for the impossible
    personas (and +inf is avoided by centring on the finite personas only)."""
    t = np.asarray(token_logliks, dtype=np.float64)
    if t.ndim != 2:
        raise ValueError("token log-likelihoods must be [tokens, personas]")
    finite = np.isfinite(t)
    counts = np.maximum(finite.sum(axis=1, keepdims=True), 1)
    centre = np.where(finite, t, 0.0).sum(axis=1, keepdims=True) / counts
    return np.asarray(t - centre, dtype=np.float64)


def token_spread(token_logliks: npt.ArrayLike) -> FloatArray:
    """Largest pairwise log-likelihood ratio at each token: how much it discriminates (may be
    inf when one persona cannot produce the token)."""
    t = np.asarray(token_logliks, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        spread = np.max(t, axis=1) - np.min(t, axis=1)
    return np.where(np.isnan(spread), 0.0, spread)
