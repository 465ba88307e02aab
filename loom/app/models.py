"""Two models on one loom: which model wrote what, and how each model's branches split among the
personas.

A session holds a primary model (the one `g` generates with, that tokenizes human text and scores
persona labels) and optionally a second one. Either writes children; each node's generation record
names its writer. The questions asked here are the user's: which models wrote this loom, in what
order to show them (a stable index the views turn into a colour), and — the base-versus-assistant
question — what share of each model's branches voices each persona under the same context.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from loom.personas.labels import effective_label
from loom.store.loom import Loom, ModelUse
from loom.store.views import NodeHeader
from loom.text import cut

Role = Literal["primary", "second", ""]
SHORT_NAME_CHARS = 24  # a model name in a tree row or a chip
UNDECIDED = "undecided"  # scored, but no persona reached the threshold
UNLABELLED = "unlabelled"  # not scored yet


class SecondModelError(Exception):
    """The second model cannot be used (not loaded, cannot load); the message says why."""


def short_name(model: str) -> str:
    """A model's name cut for a row or a chip (the full name is in the inspector and legend)."""
    return cut(model, SHORT_NAME_CHARS)


@dataclass(frozen=True)
class LegendEntry:
    """One model of the legend: its name, its place (the colour the views give it), whether it is
    loaded now and as which, and how many nodes of the loom it wrote."""

    name: str
    index: int
    role: Role
    nodes: int


def model_legend(used: Sequence[ModelUse], primary: str, second: str) -> list[LegendEntry]:
    """The loaded models first (primary, then second), then the other models that wrote the loom,
    most nodes first; each with a stable index (its colour). Names, not hashes, tell models apart
    here: that is what the records and the screen show."""
    nodes: dict[str, int] = {}
    for use in used:
        nodes[use.name] = nodes.get(use.name, 0) + use.nodes
    order: list[tuple[str, Role]] = []
    if primary:
        order.append((primary, "primary"))
    if second and second != primary:
        order.append((second, "second"))
    loaded = {name for name, _role in order}
    order.extend((name, "") for name in nodes if name not in loaded)
    return [LegendEntry(name, i, role, nodes.get(name, 0)) for i, (name, role) in enumerate(order)]


@dataclass
class ModelPersonaSplit:
    """How one model's branches split among personas: node counts per persona (plus
    `UNDECIDED`, `UNLABELLED`)."""

    model: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def labelled(self) -> int:
        """Branches with a persona (the denominator of `share`)."""
        return sum(n for name, n in self.counts.items() if name not in (UNDECIDED, UNLABELLED))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def share(self, persona: str) -> float | None:
        """The share of the labelled branches voicing `persona` (None: none labelled)."""
        labelled = self.labelled
        return self.counts.get(persona, 0) / labelled if labelled else None


@dataclass
class PersonaComparison:
    """Each model's persona split over one subtree, with the model that computed the labels."""

    root: int
    splits: list[ModelPersonaSplit]
    scorer: str  # the model that labels ("" when none is loaded)

    def split_of(self, model: str) -> ModelPersonaSplit | None:
        return next((s for s in self.splits if s.model == model), None)


def persona_comparison(
    headers: Iterable[NodeHeader], root: int, scorer: str, models: Sequence[str] = ()
) -> PersonaComparison:
    """Count, per writing model, the personas of the model-written nodes among `headers` but
    `root` (pruned ones too: what a model wrote does not change when the user hides it). `models`
    come first in that order (the loaded ones), the rest by name."""
    splits: dict[str, ModelPersonaSplit] = {m: ModelPersonaSplit(m) for m in models}
    for h in headers:
        if h.model is None or h.id == root:
            continue
        split = splits.setdefault(h.model, ModelPersonaSplit(h.model))
        if h.persona is None and h.manual_persona is None:
            key = UNLABELLED
        else:
            key = effective_label(h).name or UNDECIDED
        split.counts[key] = split.counts.get(key, 0) + 1
    ordered = [splits[m] for m in models] + [
        splits[m] for m in sorted(splits) if m not in set(models)
    ]
    return PersonaComparison(root, ordered, scorer)


def subtree_headers(loom: Loom, root: int) -> list[NodeHeader]:
    """`root` and every node under it (pruned ones too), read a level at a time."""
    out: list[NodeHeader] = []
    level = [loom.header(root)]
    while level:
        out.extend(level)
        level = [c for h in level for c in loom.children(h.id, include_pruned=True)]
    return out
