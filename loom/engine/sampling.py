"""Sampler settings and the choice of one token from one logits row.

Truncation follows llama.cpp's order and semantics: top-k, then top-p (on the distribution
renormalised over what top-k kept), then min-p (relative to the most likely token), all on the raw
distribution; the temperature then reshapes what survived. Temperature 0 is greedy. Each branch
owns a numpy Generator derived from (seed, branch index) and draws exactly one uniform per sampled
token, so a branch's tokens depend only on its own logits and its own seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from loom.engine.errors import EngineError
from loom.engine.logits import BLOCK, F32, RowStats, block_bounds

# Windows (nats below the max) tried in turn for top-p alone: the nucleus of a 262k-token row
# usually lies within a few nats, and sorting a window is far cheaper than sorting the row.
_TOP_P_WINDOWS = (3.0, 6.0, 9.0, 12.0, 18.0, 27.0)


class SamplerSettingsError(EngineError, ValueError):
    """A sampler setting out of its range (the message names it)."""


@dataclass(frozen=True)
class SamplerSettings:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    max_tokens: int = 64
    stop: Sequence[str] = field(default_factory=tuple)
    seed: int | None = None

    def __post_init__(self) -> None:
        # a list passed by a caller is frozen into a tuple so settings stay hashable and immutable
        object.__setattr__(self, "stop", tuple(s for s in self.stop if s))
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise SamplerSettingsError(f"temperature must be ≥ 0, not {self.temperature}")
        if self.top_k < 0:
            raise SamplerSettingsError(f"top-k must be ≥ 0 (0 is off), not {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise SamplerSettingsError(f"top-p must be in (0, 1], not {self.top_p}")
        if not 0 <= self.min_p <= 1:
            raise SamplerSettingsError(f"min-p must be in [0, 1], not {self.min_p}")
        if self.max_tokens < 0:
            raise SamplerSettingsError(f"max-tokens must be ≥ 0, not {self.max_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def truncates(self) -> bool:
        return self.top_k > 0 or self.top_p < 1 or self.min_p > 0

    @property
    def full_vocab_temperature(self) -> float:
        """The T at which the analysis pre-sums blocks (1.0 unless a full-vocab draw at T≠1)."""
        if self.greedy or self.truncates:
            return 1.0
        return self.temperature


def branch_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of branch `index`: independent of how many branches run beside it."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed & (2**63 - 1), index])))


def new_seed() -> int:
    """A fresh seed for a request that gave none, reported back so the branch can be reproduced."""
    return int(np.random.SeedSequence().generate_state(1, np.uint32)[0])


def _sorted_prefix(row: F32, cand: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """`cand` (ascending ids) sorted by logit, descending; a stable sort keeps ties in id order."""
    return cand[np.argsort(-row[cand], kind="stable")]


def _top_k_row(row: F32, stats: RowStats, r: int, k: int) -> npt.NDArray[np.int64]:
    """Exact top-k of one row, most likely first. The k-th largest block maximum is a floor for
    the k-th largest logit (the k best blocks' maxima are k distinct logits), so only the
    logits at or above it are sorted."""
    if stats.top_ids.shape[1] >= k:
        return stats.top_ids[r, :k].astype(np.int64)
    bmax = stats.block_max[r]
    floor = np.partition(bmax, len(bmax) - k)[len(bmax) - k] if k <= len(bmax) else -np.inf
    return _sorted_prefix(row, np.flatnonzero(row >= floor))[:k]


def _truncated_candidates(
    row: F32, stats: RowStats, r: int, s: SamplerSettings
) -> npt.NDArray[np.int64]:
    """The surviving token ids, most likely first."""
    m = float(stats.maxes[r])
    lse = float(stats.lse[r])
    threshold = -math.inf
    if s.min_p > 0:
        threshold = m + math.log(s.min_p)
    ref_mass = 1.0
    if s.top_k > 0:
        cand = _top_k_row(row, stats, r, s.top_k)
        if s.top_p < 1:
            ref_mass = float(np.exp(row[cand].astype(np.float64) - lse).sum())
    elif s.top_p < 1:
        cand = _nucleus_window(row, m, lse, s.top_p, threshold)
    else:
        cand = _sorted_prefix(row, np.flatnonzero(row >= threshold))
    if s.top_p < 1 and len(cand) > 1:
        cum = np.cumsum(np.exp(row[cand].astype(np.float64) - lse))
        # after top-k, top-p is relative to what top-k kept (llama.cpp renormalises there)
        cut = int(np.searchsorted(cum, s.top_p * ref_mass, side="left")) + 1
        cand = cand[:cut]
    if threshold > -math.inf:
        cand = cand[row[cand] >= threshold]
    return cand if len(cand) else np.asarray([int(np.argmax(row))], np.int64)


def _nucleus_window(
    row: F32, m: float, lse: float, top_p: float, threshold: float
) -> npt.NDArray[np.int64]:
    """A sorted prefix of the row that surely contains the top-p nucleus: the tokens within the
    narrowest window below the max whose raw mass reaches top_p (or that reaches min-p's
    threshold, which cuts the nucleus anyway). One scan of the row at a wide window, then the
    narrower windows are tried on that window's few thousand tokens."""
    for outer in _TOP_P_WINDOWS[3:]:
        floor = max(m - outer, threshold)
        cand = np.flatnonzero(row >= floor)
        vals = row[cand]
        p = np.exp(vals.astype(np.float64) - lse)
        if p.sum() >= top_p or floor == threshold:
            break
    else:
        return _sorted_prefix(row, np.flatnonzero(row >= threshold))
    for width in _TOP_P_WINDOWS:
        inner = max(m - width, threshold)
        keep = vals >= inner
        if p[keep].sum() >= top_p or inner == threshold or width >= outer:
            return _sorted_prefix(row, cand[keep])
    return _sorted_prefix(row, cand)


def sample_row(
    row: F32,
    stats: RowStats,
    r: int,
    settings: SamplerSettings,
    rng: np.random.Generator,
    bounds: npt.NDArray[np.int64] | None = None,
) -> int:
    """Choose the next token from logits `row` (row `r` of `stats`)."""
    if settings.greedy:
        if stats.top_ids.shape[1]:
            return int(stats.top_ids[r, 0])
        return int(np.argmax(row))
    t = settings.temperature
    u = float(rng.random())
    if settings.truncates:
        cand = _truncated_candidates(row, stats, r, settings)
        w = np.exp((row[cand].astype(np.float64) - float(row[cand[0]])) / t)
        cum = np.cumsum(w)
        i = int(np.searchsorted(cum, u * cum[-1], side="right"))
        return int(cand[min(i, len(cand) - 1)])
    # the whole vocabulary: pick a block by its pre-summed mass, then a token inside it
    if bounds is None:
        bounds = block_bounds(row.shape[0], BLOCK)
    bsum = stats.exp_block_sums[r]
    cum_b = np.cumsum(bsum)
    target = u * cum_b[-1]
    b = min(int(np.searchsorted(cum_b, target, side="right")), len(bsum) - 1)
    before = float(cum_b[b - 1]) if b else 0.0
    lo, hi = int(bounds[b]), int(bounds[b + 1])
    w = np.exp(
        (row[lo:hi].astype(np.float64) - float(stats.maxes[r])) / float(stats.temperatures[r])
    )
    cum = np.cumsum(w)
    # rescale into this block's own sum so float32 pre-sums and float64 sums never disagree
    inner = (target - before) / max(float(bsum[b]), 1e-300) * cum[-1]
    i = int(np.searchsorted(cum, inner, side="right"))
    return lo + min(i, hi - lo - 1)
