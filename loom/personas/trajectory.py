"""The posterior along a path, root to node: the story of a branch settling or collapsing.

Each node's likelihood is conditioned on everything before it, so the posterior after node k is
prior × Π_{j≤k} P(node_j | description + path before j): a running product (chain rule). The root
is the prompt — the setting, not evidence — so the trajectory starts at the prior there.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from loom.personas.bayes import FloatArray, log_normalise, max_shift, posterior
from loom.personas.marks import (
    DEFAULT_COLLAPSE_THRESHOLD,
    CollapseMark,
    collapse_mark,
    mode_collapse_mark,
)
from loom.personas.scoring import PersonaScorer
from loom.store.loom import Loom
from loom.store.model import NodeId


@dataclass(frozen=True)
class TrajectoryStep:
    node_id: NodeId
    posterior: dict[str, float]  # calibrated, after the path root..node
    raw_posterior: dict[str, float]  # the same without calibration
    node_posterior: dict[str, float]  # from this node's tokens alone (calibrated)
    delta: float  # max over personas of |Δp| against the previous step


@dataclass
class Trajectory:
    names: tuple[str, ...]
    steps: list[TrajectoryStep]
    marks: list[CollapseMark] = field(default_factory=list)

    def series(self, name: str) -> list[float]:
        """P(name) after each step, root first: a sparkline's data."""
        return [s.posterior.get(name, float("nan")) for s in self.steps]


def trajectory_from_logliks(
    names: Sequence[str],
    log_prior: FloatArray,
    node_ids: Sequence[NodeId],
    logliks: npt.ArrayLike,
    n_tokens: Sequence[int],
    bias: FloatArray | None = None,
    *,
    collapse_threshold: float = DEFAULT_COLLAPSE_THRESHOLD,
) -> Trajectory:
    """Pure: `node_ids[0]` is the root (unscored); `logliks[k]` is node_ids[k+1]'s [P] vector."""
    names = tuple(names)
    ll = np.asarray(logliks, dtype=np.float64).reshape(-1, len(names))
    if ll.shape[0] != len(node_ids) - 1:
        raise ValueError("one log-likelihood row per node after the root")
    b = np.zeros(len(names)) if bias is None else np.asarray(bias, dtype=np.float64)
    cal = ll - np.asarray(n_tokens, dtype=np.float64).reshape(-1, 1) * b
    prior = np.exp(log_prior)
    steps = [TrajectoryStep(node_ids[0], _d(names, prior), _d(names, prior), _d(names, prior), 0.0)]
    marks: list[CollapseMark] = []
    cum_cal = np.array(log_prior, dtype=np.float64)
    cum_raw = np.array(log_prior, dtype=np.float64)
    prev = prior
    for k, node_id in enumerate(node_ids[1:]):
        cum_cal = log_normalise(cum_cal + cal[k])
        cum_raw = log_normalise(cum_raw + ll[k])
        now = np.exp(cum_cal)
        steps.append(
            TrajectoryStep(
                node_id=node_id,
                posterior=_d(names, now),
                raw_posterior=_d(names, np.exp(cum_raw)),
                node_posterior=_d(names, posterior(log_prior, cal[k])),
                delta=max_shift(prev, now),
            )
        )
        mark = collapse_mark(node_id, _d(names, prev), _d(names, now), collapse_threshold)
        if mark is not None:
            marks.append(mark)
        prev = now
    return Trajectory(names=names, steps=steps, marks=marks)


def score_trajectory(
    scorer: PersonaScorer,
    loom: Loom,
    node_id: NodeId,
    *,
    bias: FloatArray | None = None,
    collapse_threshold: float = DEFAULT_COLLAPSE_THRESHOLD,
) -> Trajectory:
    """Score the path root..node afresh: one engine call per persona for the whole path (the
    nodes after the root form one continuation; its per-token logprobs are split per node)."""
    path = loom.path_nodes(node_id)
    full = loom.path_tokens(node_id)
    root_len = len(loom.path_tokens(path[0].id))
    lengths = [len(n.tokens) for n in path[1:]]
    # Stored node tokens can lag an edit made without a tokenizer; path_tokens is authoritative.
    if root_len + sum(lengths) != len(full):
        lengths = [
            len(loom.path_tokens(n.id)) - len(loom.path_tokens(p.id))
            for p, n in itertools.pairwise(path)
        ]
    ids = [int(t) for t in full.ids]
    cont = ids[root_len:]
    nulls = np.asarray(full.logprobs[root_len:], dtype=np.float64)
    [branch] = scorer.logliks(ids[:root_len], [cont], [nulls])
    bounds = np.cumsum([0, *lengths])
    rows = [branch.token_logprobs[a:b].sum(axis=0) for a, b in itertools.pairwise(bounds)]
    traj = trajectory_from_logliks(
        scorer.names,
        scorer.log_prior,
        [n.id for n in path],
        np.array(rows).reshape(len(lengths), len(scorer.names)),
        lengths,
        bias,
        collapse_threshold=collapse_threshold,
    )
    for k, node in enumerate(path[1:]):
        end = root_len + int(bounds[k + 1])
        mark = mode_collapse_mark(node.id, ids[:end], lengths[k])
        if mark is not None:
            traj.marks.append(mark)
    return traj


def stored_trajectory(loom: Loom, node_id: NodeId) -> Trajectory:
    """The trajectory as last labelled (no engine): each step reads the node's stored label.
    Unlabelled nodes have empty posteriors; marks come from the stored flags."""
    headers = [*loom.ancestors(node_id), loom.header(node_id)]
    names: tuple[str, ...] = tuple(p.name for p in loom.personas)
    steps: list[TrajectoryStep] = []
    marks: list[CollapseMark] = []
    prev: dict[str, float] = {}
    for h in headers:
        label = h.persona
        now = dict(label.path_posterior) if label is not None else {}
        if h.parent is None and not now and names:
            now = _prior(loom)
        delta = (
            max((abs(now.get(n, 0.0) - prev.get(n, 0.0)) for n in now), default=0.0)
            if prev and now
            else 0.0
        )
        steps.append(
            TrajectoryStep(
                node_id=h.id,
                posterior=now,
                raw_posterior=dict(label.raw_posterior) if label is not None else {},
                node_posterior=dict(label.posterior) if label is not None else {},
                delta=delta,
            )
        )
        if label is not None and label.collapse:
            risen = max(now, key=lambda n: now[n] - prev.get(n, 0.0)) if now else None
            marks.append(CollapseMark(h.id, "collapse", persona=risen, delta=delta))
        if label is not None and label.mode_collapse:
            marks.append(CollapseMark(h.id, "mode_collapse"))
        prev = now or prev
    return Trajectory(names=names, steps=steps, marks=marks)


def _prior(loom: Loom) -> dict[str, float]:
    personas = loom.personas
    total = sum(p.prior for p in personas)
    return {p.name: p.prior / total for p in personas} if total > 0 else {}


def _d(names: Sequence[str], values: npt.ArrayLike) -> dict[str, float]:
    return {n: float(v) for n, v in zip(names, np.asarray(values).reshape(-1), strict=True)}
