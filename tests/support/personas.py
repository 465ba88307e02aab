"""Helpers shared by the persona tests (no tests here): the Waluigi essay's toy model as a fake
engine that scores (`ToyEngine`) and one that also writes (`ToyWorld`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    """The Waluigi essay's toy model with exact likelihoods (from its comment thread):

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


class ToyInfo:
    name = "toy world"
    sha256 = ""


class ToyWorld(ToyEngine):
    """The toy model that also writes, with a persona mix whose truth is known.

    Each rollout is voiced by waluigi with probability `p_waluigi`, else by luigi; luigi writes
    "A"s, waluigi "A" or "B" with ½ each. Labelling L tokens with the toy set (threshold above
    1/(1+2^L)) calls a rollout waluigi exactly when it holds a "B", so the true share of waluigi
    labels is p_waluigi × (1 − 2^-L). `fork`: a token that, anywhere in the prefix or forced, makes
    every rollout waluigi's — a planted forking token. Token logprobs are the bare context's
    (the ½/½ mixture: ¾ for "A", ¼ for "B"), as a real engine's are.
    """

    n_ctx = 4096
    info = ToyInfo()

    def __init__(self, p_waluigi: float = 0.3, fork: int | None = None) -> None:
        super().__init__()
        self.p_waluigi = p_waluigi
        self.fork = fork
        self.generated = 0

    def tokens_for(self, text: str) -> TokenArray:
        return char_tokens(text)

    def generate(
        self,
        prefix_ids: Sequence[int],
        n: int,
        settings: Any,
        *,
        top_logprobs: int = 5,
        forced: Sequence[int] | None = None,
        on_step: Any = None,
        cancel: Any = None,
        fresh: bool = False,
    ) -> list[Any]:
        from loom.engine.results import Branch
        from loom.engine.sampling import branch_rng

        forced = list(forced or [])
        planted = self.fork is not None and self.fork in [*prefix_ids, *forced]
        out = []
        for i in range(n):
            rng = branch_rng(settings.seed, i)
            waluigi = planted or rng.random() < self.p_waluigi
            ids = list(forced)
            for _ in range(settings.max_tokens):
                ids.append(B if waluigi and rng.random() < 0.5 else A)
            self.generated += len(ids) - len(forced)
            lps = [math.log(0.75) if t == A else math.log(0.25) for t in ids]
            tokens = TokenArray(
                ids=np.asarray(ids, dtype=np.int32),
                texts=[chr(t) for t in ids],
                logprobs=np.asarray(lps, dtype=np.float32),
                top_ids=np.tile(np.asarray([A, B], dtype=np.int32), (len(ids), 1)),
                top_logprobs=np.tile(
                    np.asarray([math.log(0.75), math.log(0.25)], dtype=np.float32), (len(ids), 1)
                ),
                top_texts={A: "A", B: "B"},
                entropy=np.full(len(ids), 0.5623, dtype=np.float32),
            )
            out.append(Branch(tokens, tokens.text, "length", settings.seed, i, len(forced)))
        return out


def planted_tokens(text: str, fork_at: int) -> TokenArray:
    """Model tokens of `text` (each p 0.85, "C" the other choice) whose token `fork_at` could
    have been the forking "F" of ToyWorld(fork=ord("F"))."""
    n = len(text)
    top_ids = np.tile(np.asarray([A, ord("C")], dtype=np.int32), (n, 1))
    top_lps = np.tile(np.log(np.asarray([0.85, 0.15], dtype=np.float32)), (n, 1))
    top_ids[fork_at] = [A, ord("F")]
    return TokenArray(
        ids=np.asarray([ord(c) for c in text], dtype=np.int32),
        texts=list(text),
        logprobs=np.log(np.full(n, 0.85, dtype=np.float32)),
        top_ids=top_ids,
        top_logprobs=top_lps,
        top_texts={A: "A", ord("C"): "C", ord("F"): "F"},
        entropy=np.full(n, 0.4, dtype=np.float32),
    )
