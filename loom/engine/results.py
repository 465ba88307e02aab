"""What generation returns: one Branch per continuation, and the per-step streaming update."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from loom.tokens import TokenArray

FinishReason = Literal["length", "stop", "eos", "cancelled"]


@dataclass
class Branch:
    """One continuation. `tokens` starts with the forced tokens (if any), then the sampled ones.

    `text` is the branch's text, cut exactly at a stop string; `tokens` keep a token that straddles
    the stop string whole (so token ids stay exact) and drop the tokens after it. `seed` and `index`
    reproduce the branch: same model, prefix, settings, seed and index give the same tokens —
    bit for bit when the request started from an empty KV cache (`from_empty_cache`); otherwise
    logits may differ in the last bits on some CPUs (see loom.engine.engine).
    """

    tokens: TokenArray
    text: str
    finish_reason: FinishReason
    seed: int
    index: int
    n_forced: int = 0
    stop: str | None = None
    note: str | None = None  # e.g. a remote server that could not give token ids
    # Prompt tokens (BOS included) reused from the KV cache rather than decoded; None: unknown.
    cached_prefix: int | None = None
    from_empty_cache: bool | None = None  # the KV cache held nothing when the request began


@dataclass
class StepUpdate:
    """New tokens of one step: (branch index, token id, text, raw logprob) for every branch that
    produced one. Step 0 also carries the forced tokens. Streamed text is not yet stop-trimmed."""

    step: int
    new: list[tuple[int, int, str, float]] = field(default_factory=list)
