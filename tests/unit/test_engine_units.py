"""Pure helpers of the engine: per-token texts, stop strings, the KV-cache books (no model)."""

from __future__ import annotations

import pytest

from loom.engine.engine import keep_recent
from loom.engine.kvcache import REUSE_ALIGN, NoFreeSlot, SequenceCache, common_prefix
from loom.engine.text import find_stop, incomplete_tail, piece_text, stream_texts


def test_split_characters_go_to_the_completing_token() -> None:
    euro = "€".encode()  # 3 bytes
    pieces = [b"price ", euro[:1], euro[1:2], euro[2:], b"5"]
    texts = stream_texts(pieces)
    assert texts == ["price ", "", "", "€", "5"]
    assert "".join(texts) == "price €5"


def test_dangling_fragment_is_flushed_and_carry_is_used() -> None:
    euro = "€".encode()
    assert stream_texts([b"a", euro[:2]]) == ["a", "\ufffd"]
    assert stream_texts([euro[2:], b"!"], carry=euro[:2]) == ["€", "!"]
    assert incomplete_tail(b"ok" + euro[:2]) == euro[:2]
    assert incomplete_tail(b"ok" + euro) == b""
    assert incomplete_tail(b"") == b""


def test_piece_text_escapes_fragments() -> None:
    assert piece_text(b" hello") == " hello"
    assert piece_text(b"\xe2") == "\\xe2"


def test_find_stop_takes_the_earliest() -> None:
    assert find_stop("abc\n\ndef###", ["###", "\n\n"]) == 3
    assert find_stop("abc", ["x"]) is None
    assert find_stop("a\nb\n", ["\n"], start=2) == 3


def test_keep_recent() -> None:
    ids = list(range(100))
    assert keep_recent(ids, n_ctx=50, reserve=9) == list(range(60, 100))
    assert keep_recent(ids, n_ctx=50, reserve=9, bos=False) == list(range(59, 100))
    assert keep_recent(ids, n_ctx=10, reserve=20) == []


class FakeMemory:
    def __init__(self) -> None:
        self.seqs: dict[int, list[int]] = {}
        self.log: list[tuple[str, int, int, int]] = []

    def seq_rm(self, seq: int) -> None:
        self.seqs.pop(seq, None)
        self.log.append(("rm", seq, -1, -1))

    def seq_cp(self, src: int, dst: int, n_tokens: int) -> None:
        self.seqs[dst] = self.seqs[src][:n_tokens]
        self.log.append(("cp", src, dst, n_tokens))


def _cache(n: int = 3) -> tuple[SequenceCache, FakeMemory]:
    mem = FakeMemory()
    return SequenceCache(n, mem), mem


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0


def test_fork_reuses_the_longest_aligned_prefix() -> None:
    cache, mem = _cache()
    a = list(range(10, 30))
    cache.set(0, a)
    mem.seqs[0] = a
    cache.set(1, a[:6])
    mem.seqs[1] = a[:6]
    wanted = [*a[:13], 99, 98]
    seq, n = cache.fork(wanted, limit=len(wanted) - 1, pinned=set())
    assert n == 13 - 13 % REUSE_ALIGN == 12
    assert seq == 2 and mem.seqs[2] == a[:12]
    assert cache.tokens(2) == a[:12]
    assert cache.tokens(0) == a  # the source stays cached


def test_fork_respects_the_limit_and_copes_with_no_match() -> None:
    cache, mem = _cache()
    cache.set(0, [1, 2, 3, 4, 5, 6, 7, 8, 9])
    mem.seqs[0] = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    _, n = cache.fork([1, 2, 3, 4, 5, 6, 7, 8, 9], limit=8, pinned=set())
    assert n == 8
    seq, n = cache.fork([7, 7, 7], limit=2, pinned=set())
    assert n == 0 and cache.tokens(seq) == []


def test_lru_eviction_skips_pinned_slots() -> None:
    cache, mem = _cache(3)
    for seq in range(3):
        cache.set(seq, [seq])
        mem.seqs[seq] = [seq]
    cache.touch(0)  # 1 is now the least recently used
    assert cache.acquire(pinned={1}) == 2
    assert 2 not in cache.residents and 1 in cache.residents
    with pytest.raises(NoFreeSlot):
        cache.acquire(pinned={0, 1, 2})
    assert cache.evict_one(pinned={0}) is True
    assert set(cache.residents) == {0}


def test_best_match_prefers_the_most_recent_on_ties() -> None:
    cache, _ = _cache()
    cache.set(0, [1, 2, 3])
    cache.set(1, [1, 2, 3])
    assert cache.best_match([1, 2, 3, 4], 10) == (1, 3)
    cache.touch(0)
    assert cache.best_match([1, 2, 3, 4], 10) == (0, 3)
    assert cache.best_match([9], 10) == (None, 0)
