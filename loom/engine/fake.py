"""A deterministic stand-in for the engine, for UI tests and benchmarks that don't test generation.

It speaks the `Backend` protocol (backend.py) over a toy vocabulary of words, with probabilities
that vary from token to token so shading shows. Everything that generates or scores for real is
tested on the real default model; this exists so that UI tests of layout, keys and streaming do
not depend on what a model samples.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from loom.engine.results import Branch, FinishReason, StepUpdate
from loom.engine.sampling import SamplerSettings
from loom.tokens import TokenArray

VOCAB = [" the", " cat", " sat", " on", " a", " mat", ".", " and", " dog", " ran", "\n", " away"]


@dataclass
class FakeInfo:
    name: str = "fake-model"
    sha256: str = "0" * 64
    path: str = "fake.gguf"


def fake_tokens(ids: Sequence[int], k: int = 5, *, scored: bool = True) -> TokenArray:
    """A TokenArray over VOCAB with made-up but stable probabilities and top-k alternatives."""
    n = len(ids)
    texts = [VOCAB[i % len(VOCAB)] for i in ids]
    if not scored:
        return TokenArray.from_ids(list(ids), texts)
    logprobs = np.asarray([-0.1 - (i * 7 % 11) * 0.35 for i in range(n)], dtype=np.float32)
    top_ids = np.zeros((n, k), dtype=np.int32)
    top_lps = np.zeros((n, k), dtype=np.float32)
    for row, token in enumerate(ids):
        # The token at its logprob and k-1 others sharing the rest of the mass (so the top-k
        # sums to less than 1, as a real distribution's does); most likely first.
        rest = 1.0 - math.exp(float(logprobs[row]))
        others = [a for a in range(len(VOCAB)) if a != token][: k - 1]
        pairs = [(float(logprobs[row]), token)] + [
            (math.log(rest * 0.6 / 2**j), a) for j, a in enumerate(others)
        ]
        pairs.sort(reverse=True)
        top_ids[row] = [a for _, a in pairs]
        top_lps[row] = [lp for lp, _ in pairs]
    entropy = np.asarray([0.5 + (i % 5) * 0.3 for i in range(n)], dtype=np.float32)
    return TokenArray(
        ids=np.asarray(ids, dtype=np.int32),
        texts=texts,
        logprobs=logprobs,
        top_ids=top_ids,
        top_logprobs=top_lps,
        top_texts={i: VOCAB[i] for i in range(len(VOCAB))},
        entropy=entropy,
    )


class FakeBackend:
    def __init__(self, n_ctx: int = 2048, delay_s: float = 0.0) -> None:
        self.n_ctx = n_ctx
        self.info = FakeInfo()
        self.delay_s = delay_s  # per step, to test streaming and cancel

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        return [int(i) for i in self.tokens_for(text).ids]

    def tokens_for(self, text: str) -> TokenArray:
        """Exact pieces of `text` (each a word with its leading space); ids from VOCAB or 0."""
        pieces = re.findall(r"\s*\S+|\s+", text)
        ids = [VOCAB.index(p) if p in VOCAB else 0 for p in pieces]
        return TokenArray.from_ids(ids, pieces)

    def generate(
        self,
        prefix_ids: Sequence[int],
        n: int,
        settings: SamplerSettings,
        *,
        top_logprobs: int = 5,
        forced: Sequence[int] | None = None,
        on_step: Callable[[StepUpdate], None] | None = None,
        cancel: threading.Event | None = None,
        fresh: bool = False,  # no cache to empty
    ) -> list[Branch]:
        forced = list(forced or [])
        length = len(forced) + int(settings.max_tokens)
        produced: list[list[int]] = [[] for _ in range(n)]
        for step in range(length):
            if cancel is not None and cancel.is_set():
                break
            new = []
            for b in range(n):
                token = forced[step] if step < len(forced) else (len(prefix_ids) + b + step) % 7
                produced[b].append(token)
                new.append((b, token, VOCAB[token], -0.5))
            if on_step is not None:
                on_step(StepUpdate(step, new))
            if self.delay_s:
                time.sleep(self.delay_s)
        finish: FinishReason = "cancelled" if cancel is not None and cancel.is_set() else "length"
        branches = []
        for b in range(n):
            tokens = fake_tokens(produced[b], top_logprobs)
            branches.append(Branch(tokens, tokens.text, finish, 1234, b, n_forced=len(forced)))
        return branches

    def score(
        self, prefix_ids: Sequence[int], continuations: Sequence[Sequence[int]]
    ) -> list[npt.NDArray[np.float32]]:
        """Made-up but stable logprobs: the same as `fake_tokens` gives the same ids."""
        return [fake_tokens(list(c)).logprobs for c in continuations]

    def read(
        self, prefix_ids: Sequence[int], continuations: Sequence[Sequence[int]], top_logprobs: int
    ) -> list[TokenArray]:
        """Made-up but stable readings, as `fake_tokens` gives them."""
        return [fake_tokens(list(c), top_logprobs) for c in continuations]
