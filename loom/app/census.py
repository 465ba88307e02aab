"""The simulacra census: how often each persona speaks next from a place in the tree.

A node's future is a distribution over simulacra. A census samples it: R rollouts of L tokens from
the node (batched, every batch from an empty KV cache so a seed reproduces it exactly), each
labelled with the loom's persona set, give each persona's share of the futures with a 95 % Wilson
interval, its mean posterior, the share of its rollouts that fell into a repetition loop or
collapsed onto it, its mean token logprob, and its most typical rollouts. A census at a token
does the same after each of the alternatives the model weighed there ("what if this token had
been ' B'?"), by forcing the alternative as the rollouts' first token.

Labels here are argmax posteriors above a confidence threshold, else "undecided". The posterior
is prior × likelihood under each persona's description, calibrated with the bias the loom's own
labelling fitted (stored with its labels) when there is one: a census must not be calibrated on
itself, or every share would be pulled to the prior.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from loom.engine.backend import Backend
from loom.engine.results import Branch, StepUpdate
from loom.engine.sampling import SamplerSettings, new_seed
from loom.intervals import wilson
from loom.personas.actions import label_of
from loom.personas.marks import DEFAULT_COLLAPSE_THRESHOLD
from loom.personas.scoring import PersonaScorer
from loom.personas.sets import PersonaSet
from loom.store.model import Memory
from loom.tokens import TokenArray, mean_logprob

UNDECIDED = "undecided"
EXAMPLES = 3  # representative rollouts kept per persona

Progress = Callable[[int, int], None]


class CensusError(ValueError):
    """A census that cannot be run as asked; the message says why (one line, for a person)."""


@dataclass(frozen=True)
class CensusSettings:
    rollouts: int = 32  # R
    tokens: int = 48  # L, per rollout
    seed: int | None = None  # None: drawn, and recorded
    batch: int = 16  # rollouts decoded together (at most the engine's sequences)
    temperature: float = 1.0  # the model's own distribution: a census estimates it
    top_p: float = 1.0
    threshold: float = 0.6  # posterior a label needs; below it a rollout is "undecided"
    collapse_threshold: float = DEFAULT_COLLAPSE_THRESHOLD
    # Every batch from an empty KV cache, so that a seed reproduces the census bit for bit; a
    # fork map turns it off to share a point's prefix across its outcomes.
    fresh: bool = True

    def check(self) -> None:
        if not 1 <= self.rollouts <= 4096:
            raise CensusError(f"rollouts must be between 1 and 4096, not {self.rollouts}")
        if not 1 <= self.tokens <= 1024:
            raise CensusError(f"tokens per rollout must be between 1 and 1024, not {self.tokens}")
        if not 1 <= self.batch <= 256:
            raise CensusError(f"the batch must be between 1 and 256, not {self.batch}")
        if not 0 < self.threshold <= 1:
            raise CensusError(f"the label threshold must be in (0, 1], not {self.threshold}")


@dataclass
class Rollout:
    """One sampled future: its tokens (the forced first token included), what it voices."""

    index: int
    tokens: TokenArray
    batch_seed: int
    batch_index: int
    label: str  # a persona's name or UNDECIDED
    posterior: dict[str, float]
    repetition: bool  # ends in a repetition loop
    collapse: bool  # moved the path posterior by more than the collapse threshold
    forced: list[int] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.tokens.text

    @property
    def mean_logprob(self) -> float | None:
        return mean_logprob(self.tokens.logprobs)


@dataclass(frozen=True)
class PersonaShare:
    name: str
    count: int
    share: float
    low: float
    high: float
    mean_posterior: float  # over all rollouts (for UNDECIDED: the mean of the best posterior)
    collapse: float  # of its rollouts, the share in a loop or collapsed onto it
    mean_logprob: float | None
    examples: tuple[int, ...]  # rollout indices, most typical first

    def to_json(self) -> dict[str, Any]:
        return {
            "share": self.share,
            "low": self.low,
            "high": self.high,
            "count": self.count,
            "mean_posterior": self.mean_posterior,
            "collapse": self.collapse,
            "mean_logprob": self.mean_logprob,
            "examples": list(self.examples),
        }


@dataclass
class Census:
    """The outcome of R rollouts from one place (after one forced token, for a token census)."""

    node_id: int
    settings: CensusSettings
    seed: int
    names: tuple[str, ...]
    rollouts: list[Rollout]
    calibration: str  # "stored" (the loom's own bias) or "none"
    forced: list[int] = field(default_factory=list)
    cancelled: bool = False

    @property
    def shares(self) -> dict[str, PersonaShare]:
        return summarise(self.rollouts, self.names)

    def distribution(self) -> dict[str, float]:
        """The share of every outcome (each persona and UNDECIDED), summing to 1."""
        n = len(self.rollouts)
        return {k: v.count / n if n else 0.0 for k, v in self.shares.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "rollouts": len(self.rollouts),
            "tokens": self.settings.tokens,
            "seed": self.seed,
            "personas": {name: share.to_json() for name, share in self.shares.items()},
        }


def summarise(rollouts: Sequence[Rollout], names: Sequence[str]) -> dict[str, PersonaShare]:
    """Each persona's share of the rollouts (and the undecided ones'), with intervals."""
    n = len(rollouts)
    out: dict[str, PersonaShare] = {}
    for name in [*names, UNDECIDED]:
        mine = [r for r in rollouts if r.label == name]
        low, high = wilson(len(mine), n)
        if name == UNDECIDED:
            mean_posterior = _mean([max(r.posterior.values(), default=0.0) for r in mine])
            typical = sorted(mine, key=lambda r: max(r.posterior.values(), default=0.0))
        else:
            mean_posterior = _mean([r.posterior.get(name, 0.0) for r in rollouts])
            typical = sorted(mine, key=lambda r: -r.posterior.get(name, 0.0))
        logprobs = [lp for r in mine if (lp := r.mean_logprob) is not None]
        out[name] = PersonaShare(
            name=name,
            count=len(mine),
            share=len(mine) / n if n else 0.0,
            low=low,
            high=high,
            mean_posterior=mean_posterior,
            collapse=_mean([1.0 if r.repetition or r.collapse else 0.0 for r in mine]),
            mean_logprob=_mean(logprobs) if logprobs else None,
            examples=tuple(r.index for r in typical[:EXAMPLES]),
        )
    return out


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def batch_seed(seed: int, batch: int) -> int:
    """The seed of one batch of rollouts, derived from the census seed."""
    return int(np.random.SeedSequence([seed & (2**63 - 1), batch]).generate_state(1, np.uint32)[0])


def run_census(
    backend: Backend,
    persona_set: PersonaSet,
    node_id: int,
    context_ids: Sequence[int],
    settings: CensusSettings,
    *,
    start_posterior: npt.ArrayLike | None = None,
    bias: npt.ArrayLike | None = None,
    forced: Sequence[int] = (),
    top_logprobs: int = 5,
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
) -> Census:
    """R rollouts after `context_ids` (and `forced`), labelled with `persona_set`.

    `start_posterior`: the path posterior at the node (its prior for the collapse mark; default the
    set's prior). `bias`: the calibration bias the loom fitted (None: uncalibrated). Cancelling
    between batches keeps the rollouts done so far (`cancelled`).
    """
    settings.check()
    if not persona_set.personas:
        raise CensusError("a census needs a persona set (load one first)")
    seed = settings.seed if settings.seed is not None else new_seed()
    scorer = PersonaScorer(backend, persona_set, calibration="none")
    names = scorer.names
    prior = np.exp(scorer.log_prior)
    before = prior if start_posterior is None else np.asarray(start_posterior, dtype=np.float64)
    b = None if bias is None else np.asarray(bias, dtype=np.float64)
    context = [int(t) for t in context_ids]
    census = Census(
        node_id=node_id,
        settings=settings,
        seed=seed,
        names=names,
        rollouts=[],
        calibration="none" if b is None else "stored",
        forced=[int(t) for t in forced],
    )
    total = settings.rollouts
    units = progress_units(settings)
    steps = settings.tokens + 1  # a rollout's units: its tokens, then its labelling
    batch_size = min(settings.batch, total)
    for number, start in enumerate(range(0, total, batch_size)):
        if cancel is not None and cancel.is_set():
            census.cancelled = True
            break
        n = min(batch_size, total - start)
        this_seed = batch_seed(seed, number)
        sampler = SamplerSettings(
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.tokens,
            seed=this_seed,
        )

        def stepped(update: StepUpdate, start: int = start, n: int = n) -> None:
            if progress is not None:
                progress(start * steps + n * min(update.step + 1, settings.tokens), units)

        branches = backend.generate(
            context,
            n,
            sampler,
            top_logprobs=top_logprobs,
            forced=list(forced) or None,
            cancel=cancel,
            fresh=settings.fresh,
            on_step=stepped,
        )
        if any(branch.finish_reason == "cancelled" for branch in branches):
            # A rollout cut short is not a sample of L tokens: only completed ones are kept.
            census.cancelled = True
            break
        census.rollouts.extend(
            _label(scorer, context, branches, start, this_seed, before, b, settings, census.forced)
        )
        if progress is not None:
            progress(len(census.rollouts) * steps, units)
    return census


def progress_units(settings: CensusSettings) -> int:
    """The scale `run_census` reports progress on: a unit per token of every rollout, and one
    per rollout for its labelling (so a bar moves while a batch is generated, not only after)."""
    return settings.rollouts * (settings.tokens + 1)


def _label(
    scorer: PersonaScorer,
    context: list[int],
    branches: list[Branch],
    first_index: int,
    seed: int,
    before: npt.NDArray[np.float64],
    bias: npt.NDArray[np.float64] | None,
    settings: CensusSettings,
    forced: list[int],
) -> list[Rollout]:
    """Score one batch of rollouts under every persona (the rollouts' own logprobs are the null:
    they were generated from the bare context) and label them."""
    kept = [b for b in branches if len(b.tokens)]
    ids = [[int(t) for t in b.tokens.ids] for b in kept]
    logliks = scorer.logliks(context, ids, [b.tokens.logprobs for b in kept]) if kept else []
    out = []
    for offset, (branch, ll) in enumerate(zip(kept, logliks, strict=True)):
        score = scorer.build(ll, branch.tokens.texts, bias)
        label, _marks, _after = label_of(
            0, score, before, [*context, *ids[offset]], settings.threshold,
            settings.collapse_threshold,
        )  # fmt: skip
        out.append(
            Rollout(
                index=first_index + offset,
                tokens=branch.tokens,
                batch_seed=seed,
                batch_index=int(branch.index),
                label=label.label or UNDECIDED,
                posterior=score.posterior,
                repetition=label.mode_collapse,
                collapse=label.collapse,
                forced=forced,
            )
        )
    return out


@dataclass
class CensusOutcome:
    """One census of a CensusResult: of the node's own future, or after one alternative token."""

    census: Census
    token_id: int | None = None  # the forced alternative (None: the node's own future)
    text: str = ""
    p: float = 1.0  # the model's probability of that alternative there


@dataclass
class CensusResult:
    """What `loom census` runs and the loom keeps: a census of a node, or one per alternative at
    one of its tokens (`token_index`, into the node's own tokens)."""

    node_id: int
    outcomes: list[CensusOutcome]
    seed: int
    token_index: int | None = None
    model: str = ""
    model_sha256: str = ""
    seq: int | None = None  # the log's event, once stored
    memory: list[Memory] = field(default_factory=list)  # the hidden context the rollouts read

    @property
    def settings(self) -> CensusSettings:
        return self.outcomes[0].census.settings

    @property
    def cancelled(self) -> bool:
        return any(o.census.cancelled for o in self.outcomes)

    def to_json(self) -> dict[str, Any]:
        """The `loom census --json` object (one `personas`, or one per alternative)."""
        if self.token_index is None:
            data = self.outcomes[0].census.to_json()
            data["seed"] = self.seed
            return data
        first = self.outcomes[0].census
        return {
            "node": self.node_id,
            "rollouts": first.settings.rollouts,
            "tokens": first.settings.tokens,
            "seed": self.seed,
            "token_index": self.token_index,
            "alternatives": [
                {
                    "token": o.text,
                    "p": o.p,
                    "personas": {n: s.to_json() for n, s in o.census.shares.items()},
                }
                for o in self.outcomes
            ],
        }

    def payload(self) -> dict[str, Any]:
        """The census as the store logs it (`loom.store.events.CENSUS`)."""
        settings = self.settings
        return {
            "node": self.node_id,
            "seed": self.seed,
            "token_index": self.token_index,
            "model": self.model,
            "model_sha256": self.model_sha256,
            **({"memory": [m.to_json() for m in self.memory]} if self.memory else {}),
            "names": list(self.outcomes[0].census.names),
            "calibration": self.outcomes[0].census.calibration,
            "settings": {
                "rollouts": settings.rollouts,
                "tokens": settings.tokens,
                "batch": settings.batch,
                "temperature": settings.temperature,
                "top_p": settings.top_p,
                "threshold": settings.threshold,
            },
            "outcomes": [
                {
                    "forced": o.census.forced,
                    "text": o.text,
                    "p": o.p,
                    "seed": o.census.seed,
                    "rollouts": [
                        {
                            "tokens": r.tokens,
                            "label": r.label,
                            "posterior": r.posterior,
                            "repetition": r.repetition,
                            "collapse": r.collapse,
                            "batch_seed": r.batch_seed,
                            "batch_index": r.batch_index,
                        }
                        for r in o.census.rollouts
                    ],
                }
                for o in self.outcomes
            ],
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any], seq: int | None = None) -> CensusResult:
        """A census read back from the log (its rollouts' tokens already TokenArrays)."""
        raw = payload.get("settings") or {}
        settings = CensusSettings(
            rollouts=int(raw.get("rollouts", 32)),
            tokens=int(raw.get("tokens", 48)),
            batch=int(raw.get("batch", 16)),
            temperature=float(raw.get("temperature", 1.0)),
            top_p=float(raw.get("top_p", 1.0)),
            threshold=float(raw.get("threshold", 0.6)),
        )
        names = tuple(str(n) for n in payload.get("names") or [])
        outcomes = []
        for o in payload["outcomes"]:
            forced = [int(t) for t in o.get("forced") or []]
            rollouts = [
                Rollout(
                    index=i,
                    tokens=r["tokens"],
                    batch_seed=int(r.get("batch_seed", 0)),
                    batch_index=int(r.get("batch_index", i)),
                    label=str(r["label"]),
                    posterior={str(k): float(v) for k, v in r["posterior"].items()},
                    repetition=bool(r.get("repetition")),
                    collapse=bool(r.get("collapse")),
                    forced=forced,
                )
                for i, r in enumerate(o["rollouts"])
            ]
            census = Census(
                node_id=int(payload["node"]),
                settings=settings,
                seed=int(o.get("seed", payload.get("seed", 0))),
                names=names,
                rollouts=rollouts,
                calibration=str(payload.get("calibration", "none")),
                forced=forced,
            )
            token = forced[0] if forced else None
            outcomes.append(CensusOutcome(census, token, str(o.get("text", "")), float(o["p"])))
        return cls(
            node_id=int(payload["node"]),
            outcomes=outcomes,
            seed=int(payload.get("seed", 0)),
            token_index=payload.get("token_index"),
            model=str(payload.get("model", "")),
            model_sha256=str(payload.get("model_sha256", "")),
            seq=seq,
            memory=[Memory.from_json(m) for m in payload.get("memory") or []],
        )


def census_lines(result: CensusResult) -> list[str]:
    """What `loom census` prints: a table per outcome, then typical rollouts."""
    from loom.text import quoted

    settings = result.settings
    where = f"node {result.node_id}"
    if result.token_index is not None:
        where += f", at its token {result.token_index}"
    out = [
        f"census of {where}: {settings.rollouts} rollouts × {settings.tokens} tokens, "
        f"seed {result.seed}, calibration {result.outcomes[0].census.calibration}"
        + (" (cancelled: the rollouts done so far)" if result.cancelled else "")
    ]
    for outcome in result.outcomes:
        census = outcome.census
        if outcome.token_id is not None:
            out.append(f"after {quoted(outcome.text, 20)} (p {outcome.p:.3f}):")
        out.append(
            f"  {'persona':<14} {'share':>6}  {'95% interval':<15} {'posterior':>9}  "
            f"{'loop/coll.':>10}  {'logprob':>7}"
        )
        shares = census.shares
        for name, share in shares.items():
            logprob = "" if share.mean_logprob is None else f"{share.mean_logprob:7.2f}"
            out.append(
                f"  {name:<14} {share.share:6.0%}  [{share.low:4.0%}, {share.high:4.0%}]   "
                f"{share.mean_posterior:9.2f}  {share.collapse:10.0%}  {logprob:>7}"
            )
        for name, share in shares.items():
            for index in share.examples[:2]:
                out.append(f"    {name}: {quoted(census.rollouts[index].text, 70)}")
    return out


@dataclass(frozen=True)
class Transition:
    """Of the rollouts from nodes labelled `source`, the share labelled `target` L tokens on."""

    source: str
    target: str
    count: int
    n: int

    @property
    def share(self) -> float:
        return self.count / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.count, self.n)


@dataclass
class TransitionTable:
    """ "Is waluigi absorbing?" as a table: rows are the labels of the nodes censused, columns
    the labels of their rollouts."""

    names: tuple[str, ...]
    nodes: dict[str, list[int]]  # source label -> the nodes censused
    counts: dict[str, dict[str, int]]  # source -> target -> rollouts

    def row(self, source: str) -> list[Transition]:
        counts = self.counts.get(source, {})
        n = sum(counts.values())
        return [Transition(source, t, counts.get(t, 0), n) for t in [*self.names, UNDECIDED]]

    def to_json(self) -> dict[str, Any]:
        return {
            source: {
                "nodes": self.nodes[source],
                "to": {
                    t.target: {
                        "share": t.share,
                        "low": t.interval[0],
                        "high": t.interval[1],
                        "count": t.count,
                        "n": t.n,
                    }
                    for t in self.row(source)
                },
            }
            for source in self.nodes
        }


def transition_table(labelled: Sequence[tuple[str, CensusResult]]) -> TransitionTable:
    """Aggregate node censuses (each with its node's label) into a transition table."""
    names: tuple[str, ...] = labelled[0][1].outcomes[0].census.names if labelled else ()
    nodes: dict[str, list[int]] = {}
    counts: dict[str, dict[str, int]] = {}
    for source, result in labelled:
        nodes.setdefault(source, []).append(result.node_id)
        row = counts.setdefault(source, {})
        for rollout in result.outcomes[0].census.rollouts:
            row[rollout.label] = row.get(rollout.label, 0) + 1
    return TransitionTable(names, nodes, counts)


def transition_lines(table: TransitionTable) -> list[str]:
    """The table as text: one row per source label, a share and interval per target."""
    targets = [*table.names, UNDECIDED]
    corner = "from / to"
    out = [f"{corner:<14}" + "".join(f"{t:>22}" for t in targets) + "   nodes"]
    for source in table.nodes:
        cells = "".join(
            f"{f'{t.share:.0%} [{t.interval[0]:.0%}, {t.interval[1]:.0%}]':>22}"
            for t in table.row(source)
        )
        out.append(f"{source:<14}{cells}   {len(table.nodes[source])}")
    return out
