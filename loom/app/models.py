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

from loom.engine.models import ModelInfo
from loom.store.loom import ModelLabelCount, ModelUse
from loom.text import cut

Role = Literal["primary", "second", ""]
SHORT_NAME_CHARS = 24  # a model name in the legend or the persona panel
CHIP_CHARS = 12  # a model's chip on a tree row
UNDECIDED = "undecided"  # scored, but no persona reached the threshold
UNLABELLED = "unlabelled"  # not scored yet


class SecondModelError(Exception):
    """The second model cannot be used (not loaded, cannot load); the message says why."""


def short_name(model: str) -> str:
    """A model's name cut for a row or a chip (the full name is in the inspector and legend)."""
    return cut(model, SHORT_NAME_CHARS)


def chip_names(models: Sequence[str]) -> dict[str, str]:
    """A short chip per model for the tree rows: the fewest leading words of each name that
    still tell the models apart ("Gemma", "Smollm2"), cut to CHIP_CHARS."""
    words = {m: m.split() or [m] for m in models}
    longest = max((len(w) for w in words.values()), default=1)
    for n in range(1, longest + 1):
        chips = {m: cut(" ".join(w[:n]), CHIP_CHARS) for m, w in words.items()}
        if len(set(chips.values())) == len(chips):
            return chips
    return {m: cut(m, CHIP_CHARS) for m in models}


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
    counts: Iterable[ModelLabelCount], root: int, scorer: str, models: Sequence[str] = ()
) -> PersonaComparison:
    """Each writing model's persona split from the store's counts (`Loom.model_label_counts`):
    a hand label wins over the model's, as everywhere. Pruned nodes count too: what a model wrote
    does not change when the user hides it. `models` come first in that order (the loaded ones),
    the rest by name."""
    splits: dict[str, ModelPersonaSplit] = {m: ModelPersonaSplit(m) for m in models}
    for row in counts:
        split = splits.setdefault(row.model, ModelPersonaSplit(row.model))
        if row.manual_persona is not None:
            key = row.manual_persona
        elif not row.scored:
            key = UNLABELLED
        else:
            key = row.label or UNDECIDED
        split.counts[key] = split.counts.get(key, 0) + row.nodes
    ordered = [splits[m] for m in models] + [
        splits[m] for m in sorted(splits) if m not in set(models)
    ]
    return PersonaComparison(root, ordered, scorer)


@dataclass(frozen=True)
class ModelRow:
    """One line of `loom models`: a model found on disk, a model a loom used, or both."""

    info: ModelInfo | None  # None: the loom used it, but no such file is here
    used: ModelUse | None  # None: the loom did not use it (or no loom was asked about)

    @property
    def name(self) -> str:
        return self.info.name if self.info is not None else self.used.name if self.used else ""


def models_table(found: Sequence[ModelInfo], used: Sequence[ModelUse] = ()) -> list[ModelRow]:
    """The models found, each with its use by a loom (matched by sha256 when the loom recorded
    one, else by name), then the models the loom used that are not found here."""
    rows = [ModelRow(info, None) for info in found]
    for use in used:
        match = next(
            (
                i
                for i, row in enumerate(rows)
                if row.info is not None
                and row.used is None
                and (use.sha256 == _sha_of(row.info) if use.sha256 else use.name == row.info.name)
            ),
            None,
        )
        if match is None:
            rows.append(ModelRow(None, use))
        else:
            rows[match] = ModelRow(rows[match].info, use)
    return rows


def _sha_of(info: ModelInfo) -> str:
    try:
        return info.sha256  # remembered across runs by path, size and mtime
    except OSError:
        return ""
