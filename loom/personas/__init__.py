"""Persona sets and Bayesian labelling of branches. Never imports textual or rich.

Modules: `sets` (TOML persona sets), `bayes` (log-space arithmetic), `scoring` (the engine-using
scorer), `trajectory` (the posterior along a path), `marks` (collapse and mode collapse),
`labels` (effective label, filters), `actions` (label_nodes, prune_siblings_voicing).
See docs/personas.md.
"""

from loom.personas.labels import EffectiveLabel, effective_label, filter_nodes, voices
from loom.personas.marks import CollapseMark, find_tail_repetition
from loom.personas.sets import (
    PersonaSet,
    PersonaSetError,
    load_persona_set,
    normalise_priors,
    save_persona_set,
)

__all__ = [
    "CollapseMark",
    "EffectiveLabel",
    "PersonaSet",
    "PersonaSetError",
    "effective_label",
    "filter_nodes",
    "find_tail_repetition",
    "load_persona_set",
    "normalise_priors",
    "save_persona_set",
    "voices",
]
