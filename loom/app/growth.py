"""Guided growth: the loom grows itself under a budget, by a policy, while a person watches.

Each step picks a place on the frontier of a subtree, generates N children there and labels them
with the loom's persona set, and writes both as **one automatic step** (`Loom.batch(auto=…)`):
one undo removes it, replay shows it as automatic. Three policies:

- `explore`: expand the leaf whose persona posterior is most uncertain (highest entropy);
- `hunt:NAME`: best-first toward a persona: expand the leaf most likely to be voicing NAME;
- `fork`: split at the highest-entropy model token on the frontier that has not been forked yet,
  and grow the branch of its likeliest alternative (a counterfactual branch, automatically).

The model work of a step (`GrowthStep.compute`) is a worker's; writing it (`GrowthStep.save`) is
the loom owner's: the app runs one step at a time, the CLI in a loop (`grow`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from loom.app.census import batch_seed
from loom.app.generation import GenerationResult
from loom.app.navigation import View
from loom.engine.sampling import SamplerSettings
from loom.personas.actions import label_of, stored_bias, stored_path_posterior
from loom.personas.scoring import PersonaScorer
from loom.store.model import Memory, PersonaLabel

if TYPE_CHECKING:
    from loom.app.session import Session

PolicyKind = Literal["explore", "hunt", "fork"]
FRONTIER_VIEW = View(include_pruned=False)


class GrowthError(ValueError):
    """Guided growth that cannot run as asked; the message says why (one line)."""


@dataclass(frozen=True)
class GrowthPolicy:
    kind: PolicyKind
    persona: str | None = None

    @property
    def name(self) -> str:
        return f"hunt:{self.persona}" if self.kind == "hunt" else self.kind

    @classmethod
    def parse(cls, text: str, persona_names: list[str]) -> GrowthPolicy:
        kind, _, persona = text.strip().partition(":")
        if kind in ("explore", "fork") and not persona:
            return cls(kind)  # type: ignore[arg-type]
        if kind == "hunt":
            if persona not in persona_names:
                known = ", ".join(persona_names) or "none: load a persona set"
                raise GrowthError(f"hunt needs a persona of the loom's set (hunt:NAME; {known})")
            return cls("hunt", persona)
        raise GrowthError(f"unknown policy {text!r}: explore, hunt:NAME or fork")


@dataclass(frozen=True)
class GrowthPlan:
    """Where one step grows: children of `parent`, or, for a fork, of the head of `parent`
    split at its token `split_at`, starting with the alternative `forced`."""

    parent: int
    reason: str
    split_at: int | None = None
    forced: tuple[int, ...] = ()


@dataclass
class Growth:
    """A run of guided growth: its policy, budget and what it has done so far."""

    session: Session
    policy: GrowthPolicy
    root: int  # the subtree that grows
    n: int
    settings: SamplerSettings
    budget_tokens: int | None = None
    budget_seconds: float | None = None
    tokens: int = 0
    steps: int = 0
    started: float = field(default_factory=time.monotonic)
    forked: set[tuple[int, int]] = field(default_factory=set)  # (node, token) already split

    def __post_init__(self) -> None:
        if self.session.persona_set is None:
            raise GrowthError(
                "guided growth labels what it grows: load a persona set first "
                "(`loom label --personas SET.toml`, or ctrl+l in the app)"
            )
        if self.budget_tokens is None and self.budget_seconds is None:
            raise GrowthError("give a budget: tokens or seconds")
        if (self.budget_tokens is not None and self.budget_tokens <= 0) or (
            self.budget_seconds is not None and self.budget_seconds <= 0
        ):
            raise GrowthError("the budget must be above 0")
        if not 1 <= self.n <= 64:
            raise GrowthError(f"children per step must be between 1 and 64, not {self.n}")

    @property
    def spent(self) -> bool:
        if self.budget_tokens is not None and self.tokens >= self.budget_tokens:
            return True
        elapsed = time.monotonic() - self.started
        return self.budget_seconds is not None and elapsed >= self.budget_seconds

    def plan(self) -> GrowthPlan | None:
        """The next step's place (None: the policy has nowhere left to go)."""
        session = self.session
        persona_set = session.persona_set
        assert persona_set is not None
        names = persona_set.names
        prior = np.asarray([p.prior for p in persona_set.normalised().personas])
        leaves = _frontier(session, self.root)
        if self.policy.kind == "fork":
            return self._fork(leaves)

        def posterior(node: int) -> npt.NDArray[np.float64]:
            return stored_path_posterior(session.loom, node, names, prior)

        if self.policy.kind == "explore":
            scored = [(_entropy(posterior(leaf)), leaf) for leaf in leaves]
            value, leaf = max(scored, key=lambda s: (s[0], -s[1]))
            return GrowthPlan(leaf, f"explore: posterior entropy {value:.2f}")
        target = names.index(self.policy.persona or "")
        scored = [(float(posterior(leaf)[target]), leaf) for leaf in leaves]
        value, leaf = max(scored, key=lambda s: (s[0], -s[1]))
        return GrowthPlan(leaf, f"hunt {self.policy.persona}: P = {value:.2f}")

    def _fork(self, leaves: list[int]) -> GrowthPlan | None:
        best: tuple[float, int, int, int] | None = None
        for leaf in leaves:
            tokens = self.session.node(leaf).tokens
            if tokens.entropy is None:
                continue
            for i in range(1, len(tokens)):  # at 0 nothing is split off
                if math.isnan(float(tokens.logprobs[i])) or (leaf, i) in self.forked:
                    continue
                alternatives = [a for a in tokens.top(i) if a.id != int(tokens.ids[i])]
                entropy = float(tokens.entropy[i])
                if alternatives and (best is None or entropy > best[0]):
                    best = (entropy, leaf, i, alternatives[0].id)
        if best is None:
            return None
        entropy, leaf, index, alt = best
        self.forked.add((leaf, index))
        return GrowthPlan(leaf, f"fork: token {index} of #{leaf}, entropy {entropy:.2f}",
                          split_at=index, forced=(alt,))  # fmt: skip

    def compute(self, plan: GrowthPlan, cancel: threading.Event | None = None) -> GrowthStep:
        """Generate and label one step (a worker's job: reads the loom, runs the model)."""
        session = self.session
        persona_set = session.persona_set
        backend = session.require_generation()
        assert persona_set is not None
        prompt = session.prompt(plan.parent, cut=plan.split_at)
        context = prompt.ids
        settings = self.settings
        if settings.seed is not None:  # one seed for the run, a seed of its own for each step
            settings = replace(settings, seed=batch_seed(settings.seed, self.steps))
        result = session.run_generation(
            context, self.n, settings, forced=list(plan.forced) or None, cancel=cancel
        )
        names = persona_set.names
        prior = np.asarray([p.prior for p in persona_set.normalised().personas])
        before = stored_path_posterior(session.loom, plan.parent, names, prior)
        bias = stored_bias(session.loom, names)
        scorer = PersonaScorer(backend, persona_set, calibration="none")
        kept = [b for b in result.branches if len(b.tokens)]
        ids = [[int(t) for t in b.tokens.ids] for b in kept]
        labels: list[PersonaLabel | None] = []
        with session.engine_lock:
            logliks = scorer.logliks(context, ids, [b.tokens.logprobs for b in kept])
        for branch, ll, branch_ids in zip(kept, logliks, ids, strict=True):
            score = scorer.build(ll, branch.tokens.texts, bias)
            label, _marks, _after = label_of(0, score, before, [*context, *branch_ids])
            labels.append(label)
        result.branches = kept
        return GrowthStep(plan, result, labels, prompt.memory)


@dataclass
class GrowthStep:
    plan: GrowthPlan
    result: GenerationResult
    labels: list[PersonaLabel | None]
    memory: list[Memory] = field(default_factory=list)  # what the step's model read

    def save(self, growth: Growth) -> list[int]:
        """Write the step as one automatic undo step; the new children's ids."""
        session = growth.session
        with session.loom.batch(auto=growth.policy.name):
            parent = self.plan.parent
            if self.plan.split_at is not None:
                parent = session.counterfactual_parent(parent, self.plan.split_at)
            ids = session.save_branches(
                parent,
                self.result,
                growth.settings,
                forced=list(self.plan.forced) or None,
                labels=self.labels,
                memory=self.memory,
            )
        growth.tokens += self.result.n_tokens
        growth.steps += 1
        return ids


def grow(
    growth: Growth,
    *,
    cancel: threading.Event | None = None,
    on_step: Callable[[GrowthStep, list[int]], None] | None = None,
) -> None:
    """Step until the budget is spent, the policy has nowhere to go, or `cancel` (in one thread:
    the CLI's way; the app runs `plan`/`compute`/`save` itself, the model work in a worker)."""
    while not growth.spent and not (cancel is not None and cancel.is_set()):
        plan = growth.plan()
        if plan is None:
            break
        step = growth.compute(plan, cancel)
        ids = step.save(growth)
        if on_step is not None:
            on_step(step, ids)


def _frontier(session: Session, root: int) -> list[int]:
    """The leaves of `root`'s subtree (pruned branches left out), `root` itself if it has none."""
    leaves, stack = [], [root]
    while stack:
        node = stack.pop()
        kids = session.children(node, FRONTIER_VIEW)
        if kids:
            stack.extend(k.id for k in kids)
        else:
            leaves.append(node)
    return leaves


def _entropy(p: npt.NDArray[np.float64]) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())
