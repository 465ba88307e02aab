"""The fork map of a path: at which tokens the story's persona outcome forks.

For each model-written token of a path, the alternatives the model gave at least `p_min` get a
small census each (a few rollouts after forcing that token), and so does the token that was
sampled. The total variation distance between the sampled token's outcome distribution and an
alternative's says how much that token decided; a token where it is large is a **forking token**
(Bigelow et al., "Forking Paths in Neural Text Generation", ICLR 2025, did this offline for one
task; here it runs interactively under a token budget).

Coarse to fine: a first pass gives every candidate (most uncertain tokens first) a few rollouts
per outcome, with part of the budget; the rest goes, a few rollouts at a time, to the points whose
outcomes differ most, so the large distances are the well-measured ones.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from loom.app.census import UNDECIDED, CensusSettings, batch_seed, run_census
from loom.engine.backend import Backend
from loom.engine.sampling import new_seed
from loom.personas.sets import PersonaSet
from loom.tokens import TokenArray

COARSE_SHARE = 0.6  # of the budget the first pass may use
FORKING_TV = 0.5  # total variation distance that makes a forking token


class ForkMapError(ValueError):
    """A fork map that cannot be made as asked; the message says why (one line)."""


@dataclass
class Outcome:
    """The rollouts after one token at a point: how many were labelled with each persona."""

    token_id: int
    text: str
    p: float  # the model's probability of this token there
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    def distribution(self, names: Sequence[str]) -> dict[str, float]:
        n = self.n
        return {k: (self.counts.get(k, 0) / n if n else 0.0) for k in [*names, UNDECIDED]}


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    keys = set(p) | set(q)
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys)


@dataclass
class ForkPoint:
    index: int  # in the path's tokens
    node_id: int
    sampled: Outcome
    alternatives: list[Outcome]
    entropy: float

    def divergence(self, names: Sequence[str]) -> float:
        """The largest distance between the sampled token's outcome and an alternative's."""
        mine = self.sampled.distribution(names)
        return max(
            (total_variation(mine, alt.distribution(names)) for alt in self.alternatives),
            default=0.0,
        )

    @property
    def outcomes(self) -> list[Outcome]:
        return [self.sampled, *self.alternatives]


@dataclass
class ForkMap:
    node_id: int
    names: tuple[str, ...]
    points: list[ForkPoint]
    seed: int
    budget: int
    tokens_used: int
    rollout_tokens: int
    cancelled: bool = False

    def forking(self, threshold: float = FORKING_TV) -> list[ForkPoint]:
        return [p for p in self.points if p.divergence(self.names) >= threshold]

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "seed": self.seed,
            "budget": self.budget,
            "tokens_used": self.tokens_used,
            "rollout_tokens": self.rollout_tokens,
            "forking": [p.index for p in self.forking()],
            "points": [
                {
                    "index": p.index,
                    "node": p.node_id,
                    "entropy": p.entropy,
                    "divergence": p.divergence(self.names),
                    "outcomes": [
                        {
                            "token": o.text,
                            "p": o.p,
                            "sampled": o is p.sampled,
                            "rollouts": o.n,
                            "personas": o.distribution(self.names),
                        }
                        for o in p.outcomes
                    ],
                }
                for p in self.points
            ],
        }


def candidates(
    path: TokenArray, owners: Sequence[int], positions: Sequence[int], p_min: float
) -> list[ForkPoint]:
    """The points worth a look: model tokens with an alternative the model gave ≥ `p_min`, the
    most uncertain (highest entropy) first."""
    points = []
    for i in positions:
        if np.isnan(path.logprobs[i]):
            continue  # not a model token: nothing was weighed there
        sampled_id = int(path.ids[i])
        alts = [a for a in path.top(i) if a.id != sampled_id and np.exp(a.logprob) >= p_min]
        if not alts:
            continue
        entropy = float(path.entropy[i]) if path.entropy is not None else float("nan")
        points.append(
            ForkPoint(
                index=int(i),
                node_id=int(owners[i]),
                sampled=Outcome(sampled_id, path.texts[i], float(np.exp(path.logprobs[i]))),
                alternatives=[Outcome(a.id, a.text, float(np.exp(a.logprob))) for a in alts],
                entropy=entropy,
            )
        )
    points.sort(key=lambda p: -(p.entropy if not np.isnan(p.entropy) else 0.0))
    return points


def fork_map(
    backend: Backend,
    persona_set: PersonaSet,
    node_id: int,
    path: TokenArray,
    owners: Sequence[int],
    positions: Sequence[int],
    *,
    budget: int,
    p_min: float = 0.05,
    rollouts: int = 4,
    rollout_tokens: int = 24,
    seed: int | None = None,
    bias: npt.ArrayLike | None = None,
    threshold: float = 0.6,
    cancel: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    context_before: Callable[[int], list[int]] | None = None,
) -> ForkMap:
    """The fork map of `path` (its tokens, `owners[i]` the node of token i) at `positions`;
    `context_before(i)` is what a rollout at token i reads (default: the path's first i ids; the
    session passes its prompts, which add the memory in effect)."""
    if budget <= 0:
        raise ForkMapError(f"the token budget must be above 0, not {budget}")
    if not 1 <= rollouts <= 64 or not 1 <= rollout_tokens <= 512:
        raise ForkMapError("rollouts per outcome must be 1..64 and rollout tokens 1..512")
    points = candidates(path, owners, positions, p_min)
    if not points:
        raise ForkMapError(
            "this path has no model tokens with alternatives to weigh: a fork map needs tokens "
            "the model sampled (a census works on any node)"
        )
    seed = seed if seed is not None else new_seed()
    names = tuple(persona_set.names)
    result = ForkMap(node_id, names, [], seed, budget, 0, rollout_tokens)
    ids = [int(t) for t in path.ids]
    cost = rollouts * rollout_tokens  # one batch of rollouts after one token
    rounds = 0

    def sample(point: ForkPoint, outcome: Outcome) -> None:
        nonlocal rounds
        settings = CensusSettings(
            rollouts=rollouts,
            tokens=rollout_tokens,
            seed=batch_seed(seed, rounds),
            batch=rollouts,
            threshold=threshold,
            fresh=False,  # the prefix is shared by the outcomes of a point: reuse its KV
        )
        rounds += 1
        context = ids[: point.index] if context_before is None else context_before(point.index)
        census = run_census(
            backend, persona_set, node_id, context, settings, bias=bias,
            forced=[outcome.token_id], top_logprobs=1,
        )  # fmt: skip
        for r in census.rollouts:
            outcome.counts[r.label] = outcome.counts.get(r.label, 0) + 1
        result.tokens_used += sum(len(r.tokens) - len(r.forced) for r in census.rollouts)
        if progress is not None:
            progress(min(result.tokens_used, budget), budget)

    def stopped() -> bool:
        if cancel is not None and cancel.is_set():
            result.cancelled = True
        return result.cancelled

    # Coarse: every candidate, most uncertain first, within part of the budget.
    for point in points:
        if stopped() or result.tokens_used + cost * len(point.outcomes) > budget * COARSE_SHARE:
            break
        for outcome in point.outcomes:
            sample(point, outcome)
        result.points.append(point)
    if not result.points and not stopped():
        raise ForkMapError(
            f"a budget of {budget} tokens does not cover one point "
            f"({cost * len(points[0].outcomes)} tokens): raise it"
        )

    # Fine: more rollouts where the outcomes differ most (and are measured least), as long as the
    # budget lasts.
    def promise(p: ForkPoint) -> float:
        return p.divergence(names) + 1.0 / math.sqrt(min(o.n for o in p.outcomes) or 1)

    while not stopped():
        point = max(result.points, key=promise)
        if result.tokens_used + cost * len(point.outcomes) > budget:
            break
        for outcome in point.outcomes:
            sample(point, outcome)
    result.points.sort(key=lambda p: p.index)
    return result
