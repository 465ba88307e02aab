"""Branch statistics: of a node's own tokens and of the whole path to it (the `s` panel)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from loom.store.model import Node
from loom.tokens import TokenArray, cumulative_logprob, known_logprobs, mean_logprob


@dataclass(frozen=True)
class TokenStat:
    index: int  # in the path (or node) token array
    node_id: int
    text: str
    logprob: float


@dataclass(frozen=True)
class SpanStats:
    n_tokens: int
    n_scored: int  # tokens with a logprob (model-written or scored)
    cum_logprob: float | None
    mean_logprob: float | None
    lowest: TokenStat | None
    mean_entropy: float | None

    @property
    def perplexity(self) -> float | None:
        return None if self.mean_logprob is None else math.exp(-self.mean_logprob)


@dataclass(frozen=True)
class BranchStats:
    node: SpanStats
    path: SpanStats  # from the root to the node


def span_stats(tokens: TokenArray, owners: Sequence[int]) -> SpanStats:
    """Statistics of a token span; `owners[i]` is the node that token i belongs to."""
    lps = np.asarray(tokens.logprobs, dtype=np.float64)
    n_scored = len(known_logprobs(lps))
    lowest = None
    if n_scored:
        idx = int(np.nanargmin(lps))
        lowest = TokenStat(idx, int(owners[idx]), tokens.texts[idx], float(lps[idx]))
    mean_entropy = None
    if tokens.entropy is not None:
        ent = np.asarray(tokens.entropy, dtype=np.float64)
        if (~np.isnan(ent)).any():
            mean_entropy = float(np.nanmean(ent))
    return SpanStats(
        n_tokens=len(tokens),
        n_scored=n_scored,
        cum_logprob=cumulative_logprob(lps),
        mean_logprob=mean_logprob(lps),
        lowest=lowest,
        mean_entropy=mean_entropy,
    )


def branch_stats(path: Sequence[Node]) -> BranchStats:
    """The statistics of the last node of `path` (root first) and of the path as a whole."""
    owners = [n.id for n in path for _ in range(len(n.tokens))]
    own = path[-1]
    return BranchStats(
        node=span_stats(own.tokens, [own.id] * len(own.tokens)),
        path=span_stats(TokenArray.concat([n.tokens for n in path]), owners),
    )
