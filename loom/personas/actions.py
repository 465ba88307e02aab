"""What the CLI and the TUI do with personas on a loom: label nodes, prune by persona.

Labelling is two steps so that the model's work can run in a worker while the loom is written
only from the thread that opened it: `plan_labels` scores (it reads the loom and calls the
engine), `write_labels` stores what it found as one undo step. `label_nodes` does both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loom.engine.backend import Backend
from loom.engine.vocabulary import ids_for, own_tokens
from loom.personas.bayes import FloatArray, log_normalise
from loom.personas.labels import voices
from loom.personas.marks import (
    DEFAULT_COLLAPSE_THRESHOLD,
    CollapseMark,
    collapse_mark,
    mode_collapse_mark,
)
from loom.personas.scoring import (
    DEFAULT_CALIBRATION,
    BranchLogliks,
    Calibration,
    PersonaScore,
    PersonaScorer,
)
from loom.personas.sets import PersonaSet
from loom.store.loom import Loom
from loom.store.model import NodeId, PersonaLabel
from loom.store.tokenizer import FunctionTokenizer
from loom.store.views import NodeHeader
from loom.tokens import TokenArray

DEFAULT_LABEL_THRESHOLD = 0.6
# Prior-matching calibration needs a mixed set; below this many branches a bias fitted on
# earlier runs (stored on labelled nodes) is preferred to one fitted on too little.
MIN_CALIBRATION_SET = 6

Progress = Callable[[int, int], None]


@dataclass
class LabelRun:
    """What a labelling found (`plan_labels`) and, once written, what it did."""

    persona_set: PersonaSet
    scores: dict[NodeId, PersonaScore] = field(default_factory=dict)
    labels: dict[NodeId, PersonaLabel] = field(default_factory=dict)
    marks: list[CollapseMark] = field(default_factory=list)
    bias: dict[str, float] = field(default_factory=dict)
    engine_calls: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for the CLI, e.g. "labelled 8 nodes: luigi 3, waluigi 4, undecided 1; …"."""
        counts: dict[str, int] = {}
        for label in self.labels.values():
            key = label.label or "undecided"
            counts[key] = counts.get(key, 0) + 1
        kinds = [m.kind for m in self.marks]
        parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        return (
            f"labelled {len(self.labels)} nodes"
            + (f": {parts}" if parts else "")
            + f"; collapse {kinds.count('collapse')}, mode collapse {kinds.count('mode_collapse')}"
            + f"; {self.engine_calls} engine calls in {self.seconds:.1f} s"
        )


def label_nodes(
    loom: Loom, engine: Backend, persona_set: PersonaSet, *args: Any, **options: Any
) -> LabelRun:
    """Score nodes against `persona_set` and store the posteriors as model labels: both steps,
    `plan_labels` (which takes the same arguments) and `write_labels`."""
    run = plan_labels(loom, engine, persona_set, *args, **options)
    write_labels(loom, run)
    return run


def write_labels(loom: Loom, run: LabelRun) -> None:
    """Store a run's labels, and the persona set they were scored with, as one undo step."""
    with loom.batch():
        loom.set_personas(run.persona_set.personas)
        for node_id, label in run.labels.items():
            loom.set_persona(node_id, label)


def plan_labels(
    loom: Loom,
    engine: Backend,
    persona_set: PersonaSet,
    node_ids: Sequence[NodeId] | None = None,
    threshold: float = DEFAULT_LABEL_THRESHOLD,
    *,
    collapse_threshold: float = DEFAULT_COLLAPSE_THRESHOLD,
    calibration: Calibration = DEFAULT_CALIBRATION,
    progress: Progress | None = None,
    context_of: Callable[[NodeId], Sequence[int]] | None = None,
) -> LabelRun:
    """Score nodes against `persona_set`: the labels to write, nothing written yet.

    `node_ids` None labels every node (but the root) without a label from this persona set.
    Unlabelled ancestors of the targets are labelled too: the path posterior (trajectory) and the
    collapse mark of a node need its parent's. A node's label is the argmax persona when its
    posterior reaches `threshold`, else None ("scored, undecided"). Reads the loom (any thread may)
    and calls the engine; writes nothing. `context_of(parent)` is what the model reads before a
    child of `parent` (default: the parent's path; the application passes its prompts, which
    hold the hidden context in effect).
    """
    started = time.perf_counter()
    names = persona_set.names
    tokens_for = getattr(engine, "tokens_for", None)
    if loom.tokenizer is None and tokens_for is not None:
        # Text edited without a model has no tokens yet; the store completes them on read.
        loom.tokenizer = FunctionTokenizer(tokens_for)
    scorer = PersonaScorer(engine, persona_set, calibration=calibration)
    targets = _targets(loom, names, node_ids)
    groups: dict[NodeId, list[NodeHeader]] = {}
    for h in targets:
        assert h.parent is not None
        groups.setdefault(h.parent, []).append(h)

    logliks: dict[NodeId, BranchLogliks] = {}
    texts: dict[NodeId, list[str]] = {}
    path_ids: dict[NodeId, list[int]] = {}
    done = 0
    for parent, members in groups.items():
        # The scorer reads every node as its own tokens: those another model wrote (another
        # vocabulary), and text edited without a model, are tokenized from their text by it.
        context = ids_for(engine, [(n.text, n.tokens) for n in loom.path_nodes(parent)])
        read = context if context_of is None else list(context_of(parent))
        branch_ids: list[list[int]] = []
        nulls = []
        for h in members:
            node = loom.node(h.id)
            own = own_tokens(engine, node.text, node.tokens)
            branch_ids.append([int(t) for t in own.ids])
            nulls.append(_null_logprobs(loom, engine, h.id, own))
            texts[h.id] = own.texts
            path_ids[h.id] = [*context, *branch_ids[-1]]
        for h, ll in zip(members, scorer.logliks(read, branch_ids, nulls), strict=True):
            logliks[h.id] = ll
        done += len(members)
        if progress is not None:
            progress(done, len(targets))

    bias = _bias(loom, scorer, list(logliks.values()))
    run = LabelRun(persona_set, bias=dict(zip(names, map(float, bias), strict=True)))
    prior = np.exp(scorer.log_prior)
    # Parents outside this run contribute their stored path posterior.
    target_ids = {h.id for h in targets}
    path_post: dict[NodeId, FloatArray] = {
        p: stored_path_posterior(loom, p, names, prior) for p in groups if p not in target_ids
    }
    # Parents first: a node's path posterior starts from its parent's.
    for h in sorted(targets, key=lambda x: x.depth):
        assert h.parent is not None
        score = scorer.build(logliks[h.id], texts[h.id], bias)
        label, marks, path_post[h.id] = label_of(
            h.id, score, path_post[h.parent], path_ids[h.id], threshold, collapse_threshold
        )
        run.scores[h.id] = score
        run.labels[h.id] = label
        run.marks.extend(marks)
    run.engine_calls = scorer.engine_calls
    run.seconds = time.perf_counter() - started
    return run


def _null_logprobs(loom: Loom, engine: Backend, node_id: NodeId, own: TokenArray) -> Any:
    """A node's logprobs under the bare context: its own (sampled) ones, or for text the model
    did not write, this model's reading of it (`loom score`) when it read these very tokens;
    else NaN, and the scorer reads them in one more call."""
    if not np.isnan(own.logprobs).any():
        return own.logprobs
    scores = loom.node(node_id).scores
    name = str(engine.info.name) if scores else ""
    for score in reversed(scores):
        if score.model == name and np.array_equal(score.tokens.ids, own.ids):
            return score.tokens.logprobs
    return own.logprobs


def label_of(
    node_id: NodeId,
    score: PersonaScore,
    before: FloatArray,
    path_ids: Sequence[int],
    threshold: float = DEFAULT_LABEL_THRESHOLD,
    collapse_threshold: float = DEFAULT_COLLAPSE_THRESHOLD,
) -> tuple[PersonaLabel, list[CollapseMark], FloatArray]:
    """The label of a scored node, its marks, and the path posterior after it, from the path
    posterior `before` it (its parent's) and `path_ids` (the token ids root..node)."""
    names = list(score.names)
    cal_ll = np.array([score.calibrated_loglik()[n] for n in names])
    with np.errstate(divide="ignore"):
        after = np.exp(log_normalise(np.log(before) + cal_ll))
    marks = [
        m
        for m in (
            collapse_mark(node_id, _d(names, before), _d(names, after), collapse_threshold),
            mode_collapse_mark(node_id, path_ids, score.n_tokens),
        )
        if m is not None
    ]
    label = PersonaLabel(
        label=score.label(threshold),
        source="model",
        posterior=score.posterior,
        raw_posterior=score.raw_posterior,
        path_posterior=_d(names, after),
        collapse=any(m.kind == "collapse" for m in marks),
        mode_collapse=any(m.kind == "mode_collapse" for m in marks),
        bias=score.bias,
    )
    return label, marks, after


def persona_set_from_loom(loom: Loom) -> PersonaSet | None:
    """The persona set stored in a loom (by `loom new --personas` or an earlier `loom label`),
    for `loom label PATH` without `--personas`; None if it has none. The framing is not stored:
    the default is used."""
    personas = loom.personas
    return PersonaSet(personas=list(personas), title=loom.title) if personas else None


def prune_siblings_voicing(
    loom: Loom,
    node_id: NodeId,
    persona: str,
    threshold: float = 0.5,
    *,
    include_self: bool = False,
) -> list[NodeId]:
    """Prune the siblings of `node_id` (and the node itself if `include_self`) that voice
    `persona` with at least `threshold` confidence (a hand label always counts). One undo step
    restores them all (`Loom.batch()`). Returns the pruned ids."""
    candidates = loom.siblings(node_id, include_pruned=False)
    if include_self:
        me = loom.header(node_id)
        if not me.pruned:
            candidates.append(me)
    doomed = [h.id for h in candidates if voices(h, persona, threshold)]
    if doomed:
        with loom.batch():
            for i in doomed:
                loom.prune(i)
    return doomed


def _targets(loom: Loom, names: list[str], node_ids: Sequence[NodeId] | None) -> list[NodeHeader]:
    """Requested nodes plus their ancestors that lack a label from this persona set."""
    if node_ids is None:
        wanted = [h for h in _all_headers(loom) if h.parent is not None and not _labelled(h, names)]
    else:
        wanted = [h for h in loom.headers(list(node_ids)) if h.parent is not None]
    out: dict[NodeId, NodeHeader] = {h.id: h for h in wanted}
    for h in wanted:
        for a in loom.ancestors(h.id):
            if a.parent is not None and a.id not in out and not _labelled(a, names):
                out[a.id] = a
    return list(out.values())


def _all_headers(loom: Loom) -> list[NodeHeader]:
    # Iterative: deep trees must not hit the recursion limit.
    out: list[NodeHeader] = []
    stack = [loom.header(loom.root_id)]
    while stack:
        h = stack.pop()
        out.append(h)
        stack.extend(reversed(loom.children(h.id)))
    return out


def _labelled(h: NodeHeader, names: list[str]) -> bool:
    """Labelled by the model with this very persona set (a label from another set is stale)."""
    p = h.persona
    return p is not None and set(p.path_posterior) == set(names)


def _bias(loom: Loom, scorer: PersonaScorer, logliks: list[BranchLogliks]) -> FloatArray:
    if scorer.calibration == "none":
        return np.zeros(len(scorer.names))
    if len(logliks) < MIN_CALIBRATION_SET:
        stored = stored_bias(loom, scorer.names)
        if stored is not None:
            return stored
    return scorer.fit_bias(logliks)


def stored_bias(loom: Loom, names: Sequence[str]) -> FloatArray | None:
    """The median bias of earlier runs with this persona set (labels carry the bias they used)."""
    rows = [
        [h.persona.bias[n] for n in names]
        for h in _all_headers(loom)
        if h.persona is not None and set(h.persona.bias) == set(names)
    ]
    return np.median(np.array(rows), axis=0) if rows else None


def stored_path_posterior(
    loom: Loom, node_id: NodeId, names: list[str], prior: FloatArray
) -> FloatArray:
    h = loom.header(node_id)
    if h.parent is None or h.persona is None or set(h.persona.path_posterior) != set(names):
        return prior  # the root: the prompt is the setting, not evidence
    return np.array([h.persona.path_posterior[n] for n in names])


def _d(names: Sequence[str], values: FloatArray) -> dict[str, float]:
    return {n: float(v) for n, v in zip(names, values, strict=True)}
