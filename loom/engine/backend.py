"""The one protocol loom asks of a model, whoever runs it.

Three things speak it: the in-process engine (engine.py), a remote completion server (remote.py)
and a deterministic stand-in for UI tests and benchmarks (fake.py). The application layer and the
persona scorer only ever see a `Backend`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from loom.engine.results import Branch, StepUpdate
from loom.engine.sampling import SamplerSettings
from loom.tokens import TokenArray


class ModelIdentity(Protocol):
    """Which model writes: recorded with every generated node."""

    @property
    def name(self) -> str: ...

    @property
    def sha256(self) -> str: ...  # "" when the weights cannot be hashed here (a remote model)


class Backend(Protocol):
    @property
    def info(self) -> ModelIdentity: ...

    @property
    def n_ctx(self) -> int | None: ...  # None: the server does not say

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Token ids of `text` (special-token syntax in it is just text)."""
        ...

    def tokens_for(self, text: str) -> TokenArray:
        """Human-written text as tokens without probabilities."""
        ...

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
        fresh: bool = False,
    ) -> list[Branch]:
        """`n` continuations of `prefix_ids` (the path's tokens, without BOS)."""
        ...

    def score(
        self, prefix_ids: Sequence[int], continuations: Sequence[Sequence[int]]
    ) -> list[npt.NDArray[np.float32]]:
        """Per-token raw logprobs of each continuation after `prefix_ids`."""
        ...

    def read(
        self, prefix_ids: Sequence[int], continuations: Sequence[Sequence[int]], top_logprobs: int
    ) -> list[TokenArray]:
        """Each continuation as the model reads it after `prefix_ids` (text it did not write):
        per token the raw logprob and, where the backend can, the entropy and top alternatives."""
        ...
