"""Helpers shared by the persona tests (no tests here): the seed's toy model as a fake engine."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from loom.personas.sets import PersonaSet
from loom.store.loom import Loom
from loom.store.model import Persona
from loom.tokens import TokenArray

A, B = ord("A"), ord("B")
LUIGI_MARK, WALUIGI_MARK = ord("L"), ord("W")


def char_tokens(text: str) -> TokenArray:
    """One token per character, id = code point (readable in failures)."""
    return TokenArray.from_ids([ord(c) for c in text], list(text))


class CharTokenizer:
    def tokenize(self, text: str) -> TokenArray:
        return char_tokens(text)


class ToyEngine:
    """The seed's toy model with exact likelihoods (seeds/000, comment thread):

    luigi always says "A"; waluigi says "A" or "B" with ½ each. A description framed before the
    context selects the simulacrum ("L…" luigi, "W…" waluigi); with no description (the null) the
    model is their ½/½ mixture. Any other token costs the same under every hypothesis.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], list[list[int]]]] = []

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def score(
        self, prefix_ids: Sequence[int], continuations: Sequence[Sequence[int]]
    ) -> list[npt.NDArray[np.float32]]:
        self.calls.append((list(prefix_ids), [list(c) for c in continuations]))
        who = prefix_ids[0] if prefix_ids else None
        return [np.array([self._lp(who, t) for t in c], dtype=np.float64) for c in continuations]

    @staticmethod
    def _lp(who: int | None, token: int) -> float:
        if token not in (A, B):
            return math.log(0.01)
        if who == LUIGI_MARK:
            return 0.0 if token == A else -math.inf
        if who == WALUIGI_MARK:
            return math.log(0.5)
        return math.log(0.75) if token == A else math.log(0.25)


def toy_set(prior_luigi: float = 0.5) -> PersonaSet:
    return PersonaSet(
        personas=[
            Persona("luigi", "L: always says A", "green", prior_luigi),
            Persona("waluigi", "W: says A or B", "magenta", 1.0 - prior_luigi),
        ],
        title="toy",
        prompt="Q",
    )


def toy_loom(tmp_path: Path, name: str = "toy.loom") -> Loom:
    return Loom.create(
        tmp_path / name,
        title="toy",
        prompt="Q",
        prompt_tokens=char_tokens("Q"),
        tokenizer=CharTokenizer(),
    )


def add(loom: Loom, parent: int, text: str) -> int:
    return loom.add_child(parent, text, author="model", tokens=char_tokens(text))
