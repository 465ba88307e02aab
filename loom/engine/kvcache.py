"""Which KV-cache sequence holds which token prefix: the cache that follows the loom's tree.

Every llama.cpp sequence id (a "slot") that still holds decoded tokens is remembered with exactly
the tokens in it. A request looks for the slot sharing the longest common prefix with what it
needs, copies that slot's first tokens into a fresh slot (llama_memory_seq_cp: metadata only, cells
are shared in the unified cache) and decodes only the rest. Slots are evicted least recently used
when the request needs more slots or the cache runs out of cells; slots in use by the running
request are pinned. This module only keeps the books; the engine makes the llama calls through
`MemoryOps`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# Reuse stops at a multiple of 4 positions. llama.cpp's CPU matmuls take batch rows in groups of 4
# (repacked Q4_K gemm) and the leftover rows through another kernel whose rounding differs; decoding
# the suffix from an aligned position gives every row the same group as a fresh decode from 0, so a
# cache hit reproduces a fresh prompt's logits (it costs at most 3 re-decoded tokens in one batch).
REUSE_ALIGN = 4


class MemoryOps(Protocol):
    def seq_rm(self, seq: int) -> None: ...

    def seq_cp(self, src: int, dst: int, n_tokens: int) -> None: ...


@dataclass
class Resident:
    seq: int
    tokens: list[int]
    last_used: int


class NoFreeSlot(Exception):
    """Every slot is pinned by the running request."""


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    x = np.asarray(a[:n], dtype=np.int64)
    y = np.asarray(b[:n], dtype=np.int64)
    diff = np.flatnonzero(x != y)
    return int(diff[0]) if len(diff) else n


class SequenceCache:
    def __init__(self, n_slots: int, memory: MemoryOps) -> None:
        self.n_slots = n_slots
        self.memory = memory
        self.residents: dict[int, Resident] = {}
        self._clock = 0

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def clear(self) -> None:
        for seq in list(self.residents):
            self.drop(seq)

    def best_match(self, tokens: Sequence[int], limit: int) -> tuple[int | None, int]:
        """The resident slot sharing the longest prefix with `tokens` (at most `limit` tokens)."""
        best: Resident | None = None
        best_len = 0
        for res in self.residents.values():
            n = min(common_prefix(res.tokens, tokens), limit)
            # longest wins; among equals the most recently used (it is the likeliest to stay)
            if n > 0 and (
                n > best_len
                or (best is not None and n == best_len and res.last_used > best.last_used)
            ):
                best, best_len = res, n
        return (best.seq if best is not None else None), best_len

    def acquire(self, pinned: set[int]) -> int:
        """A free slot, evicting the least recently used unpinned resident if none is free."""
        for seq in range(self.n_slots):
            if seq not in self.residents and seq not in pinned:
                return seq
        if not self.evict_one(pinned):
            raise NoFreeSlot
        return self.acquire(pinned)

    def evict_one(self, pinned: set[int]) -> bool:
        """Drop the least recently used unpinned resident; False if there is none."""
        victims = [r for r in self.residents.values() if r.seq not in pinned]
        if not victims:
            return False
        self.drop(min(victims, key=lambda r: r.last_used).seq)
        return True

    def drop(self, seq: int) -> None:
        self.residents.pop(seq, None)
        self.memory.seq_rm(seq)

    def fork(self, tokens: Sequence[int], limit: int, pinned: set[int]) -> tuple[int, int]:
        """A new slot holding the longest cached prefix of `tokens` (≤ limit): (slot, n reused).

        The source slot is left as it was, so the cached node stays cached."""
        src, n = self.best_match(tokens, limit)
        n -= n % REUSE_ALIGN
        if src is not None:
            self.touch(src)
            pinned = pinned | {src}
        dst = self.acquire(pinned)
        self.memory.seq_rm(dst)
        if src is not None and n > 0:
            self.memory.seq_cp(src, dst, n)
        self.set(dst, list(tokens[:n]))
        return dst, n

    def copy(self, src: int, dst: int) -> None:
        """Make `dst` hold everything `src` holds."""
        self.memory.seq_rm(dst)
        self.memory.seq_cp(src, dst, len(self.residents[src].tokens))
        self.set(dst, list(self.residents[src].tokens))

    def set(self, seq: int, tokens: list[int]) -> None:
        self.residents[seq] = Resident(seq, tokens, self._tick())

    def touch(self, seq: int) -> None:
        if seq in self.residents:
            self.residents[seq].last_used = self._tick()

    def tokens(self, seq: int) -> list[int]:
        return self.residents[seq].tokens
