"""Which persona a node voices, as the user sees it, and filters over that.

A hand label (`manual_persona`) is kept apart from the model's posterior and always wins.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol, TypeVar

from loom.store.model import LabelSource, PersonaLabel

FilterMode = Literal["hide", "only"]


@dataclass(frozen=True)
class PersonaFilter:
    """Show only, or hide, the branches voicing a persona with at least `threshold` confidence."""

    persona: str
    mode: FilterMode
    threshold: float

    def describe(self) -> str:
        verb = "only" if self.mode == "only" else "hiding"
        return f"{verb} {self.persona} (≥ {self.threshold:.0%})"


class Labelled(Protocol):
    """Anything carrying both labels: `Node`, or a store header that exposes them."""

    @property
    def persona(self) -> PersonaLabel | None: ...

    @property
    def manual_persona(self) -> str | None: ...


L = TypeVar("L", bound=Labelled)


class EffectiveLabel(NamedTuple):
    """Unpacks as `name, source, confidence = effective_label(node)`."""

    name: str | None  # None: unlabelled, or scored but undecided
    source: LabelSource | None  # "human" (manual), "model", or None when never labelled
    confidence: float  # 1.0 for a hand label; the posterior of `name` (or of the best) otherwise


def effective_label(node: Labelled) -> EffectiveLabel:
    if node.manual_persona is not None:
        return EffectiveLabel(node.manual_persona, "human", 1.0)
    label = node.persona
    if label is None:
        return EffectiveLabel(None, None, 0.0)
    if label.label is not None:
        # Imported labels may come without a posterior; a bare label is taken at its word.
        return EffectiveLabel(label.label, label.source, label.posterior.get(label.label, 1.0))
    best = max(label.posterior.values(), default=0.0)
    return EffectiveLabel(None, label.source, best)


def persona_confidence(node: Labelled, persona: str) -> float:
    """How sure we are that `node` voices `persona` (0..1): 1/0 for a hand label."""
    if node.manual_persona is not None:
        return 1.0 if node.manual_persona == persona else 0.0
    label = node.persona
    if label is None:
        return 0.0
    if persona in label.posterior:
        return label.posterior[persona]
    return 1.0 if label.label == persona else 0.0


def voices(node: Labelled, persona: str, min_confidence: float = 0.5) -> bool:
    # A hand label is a decision, not an estimate: the threshold does not apply to it.
    if node.manual_persona is not None:
        return node.manual_persona == persona
    conf = persona_confidence(node, persona)
    return conf > 0.0 and conf >= min_confidence


def filter_nodes(
    nodes: Iterable[L], persona: str, min_confidence: float = 0.5, mode: FilterMode = "hide"
) -> list[L]:
    """`only`: keep the nodes voicing `persona`; `hide`: drop them. Order is kept."""
    if mode not in ("hide", "only"):
        raise ValueError(f"mode must be 'hide' or 'only', not {mode!r}")
    keep_voicing = mode == "only"
    return [n for n in nodes if voices(n, persona, min_confidence) == keep_voicing]
