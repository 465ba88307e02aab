"""Generation as the application sees it: streamed token batches, the result of one run, and the
one conversion between the engine's sampler settings and the record kept with every node.

Token batches reach a UI at most `BATCH_INTERVAL_S` apart (~30 a second): per-token posting halves
throughput (measured). `TokenBatcher` runs on the worker thread only, so it needs no lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from loom.engine.results import Branch, StepUpdate
from loom.engine.sampling import SamplerSettings
from loom.store.model import GenerationSettings, Memory

BATCH_INTERVAL_S = 1 / 30


class GenerationUnavailable(Exception):
    """Generation was asked for but can't run; the message says why (shown to the user)."""


@dataclass(frozen=True)
class StreamedToken:
    branch: int
    token_id: int
    text: str
    logprob: float


class TokenBatcher:
    """Collects the engine's per-step updates and hands them on in batches, ~30 per second."""

    def __init__(
        self, deliver: Callable[[list[StreamedToken]], None], interval: float = BATCH_INTERVAL_S
    ) -> None:
        self._deliver = deliver
        self._interval = interval
        self._pending: list[StreamedToken] = []
        self._last = time.monotonic()
        self.total = 0

    def on_step(self, update: StepUpdate) -> None:
        for branch, token_id, text, logprob in update.new:
            self._pending.append(StreamedToken(int(branch), int(token_id), str(text), logprob))
        self.total += len(update.new)
        now = time.monotonic()
        if now - self._last >= self._interval:
            self.flush()
            self._last = now

    def flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self._deliver(batch)


@dataclass
class GenerationResult:
    branches: list[Branch]
    elapsed_s: float
    n_tokens: int
    cancelled: bool
    error: str | None = None  # the server went away mid-generation: branches are partial
    model: str = ""  # the model that wrote the branches ("": the session's primary)
    model_sha256: str = ""

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0


def generation_record(
    settings: SamplerSettings,
    *,
    model: str,
    model_sha256: str,
    branch: Branch | None = None,
    batch_id: str | None = None,
    batch_size: int | None = None,
    forced: Sequence[int] = (),
    memory: Sequence[Memory] = (),
) -> GenerationSettings:
    """What is kept with a generated node: enough to re-run it (`sampler_settings_of`), with
    the memories the model read."""
    return GenerationSettings(
        model=model,
        model_sha256=model_sha256,
        temperature=float(settings.temperature),
        top_p=float(settings.top_p),
        top_k=int(settings.top_k),
        min_p=float(settings.min_p),
        seed=branch.seed if branch is not None else settings.seed,
        max_tokens=int(settings.max_tokens),
        batch_id=batch_id,
        batch_index=None if branch is None else int(branch.index),
        batch_size=batch_size,
        stop=list(settings.stop),
        forced_tokens=[int(t) for t in forced],
        cached_prefix=None if branch is None else branch.cached_prefix,
        from_empty_cache=None if branch is None else branch.from_empty_cache,
        memory=list(memory),
    )


def sampler_settings_of(record: GenerationSettings) -> SamplerSettings:
    """The sampler settings a node was generated with (the inverse of `generation_record`)."""
    return SamplerSettings(
        temperature=record.temperature,
        top_k=record.top_k,
        top_p=record.top_p,
        min_p=record.min_p,
        max_tokens=record.max_tokens,
        stop=tuple(record.stop),
        seed=record.seed if record.seed is not None else 0,
    )
