"""The in-process batched engine: N branches from one prefix, one llama_decode per step.

Generation: the prefix (BOS + path tokens + forced tokens) is decoded once into one sequence,
reusing the longest prefix some resident sequence already holds (kvcache.py); that sequence is
copied to the other N-1 branch sequences (metadata only) and all branches then advance in
lock-step, one token per live branch per llama_decode. Each step's logits are analysed as one
batch (logits.py) and every branch samples from its own row with its own seeded generator
(sampling.py).

Determinism — what is guaranteed: a branch's tokens depend only on its logits and its (seed,
index) random stream. A request that starts from an empty KV cache (a fresh process, after
`clear_cache()`, or with `fresh=True`) gives bit-identical tokens and logprobs every time, in any
process, for the same model file, llama.cpp build, CPU, batch size and settings; `loom
regenerate` relies on exactly this (it clears the cache first). Anything else is *not* guaranteed
bit-identical: llama.cpp is not bit-exact across batch compositions or KV cell layouts (gemm vs
gemv row groups, attention sums over cells), and this model amplifies that rounding to about
0.05-0.1 nats median on a token's logprob; measured on AVX-512 machines, sampled tokens then
diverge after a few tokens. Re-decoding from a 4-aligned position (kvcache.REUSE_ALIGN) makes
cache hits exact on some CPUs (AVX2 here), not all. Every Branch says whether it started from an
empty cache (`from_empty_cache`) and how many prompt tokens came from the cache
(`cached_prefix`); the store records both, so regenerate can tell which case a node is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt

from loom.engine.errors import ContextOverflowError, EngineError
from loom.engine.kvcache import REUSE_ALIGN, NoFreeSlot, SequenceCache
from loom.engine.logits import Analyzer, RowStats, block_bounds
from loom.engine.models import ModelInfo, default_model_path, inspect_model
from loom.engine.probe import ensure_model_runs
from loom.engine.results import Branch, FinishReason, StepUpdate
from loom.engine.runtime import Runtime
from loom.engine.sampling import SamplerSettings, branch_rng, new_seed, sample_row
from loom.engine.text import Utf8Stream, find_stop, incomplete_tail, piece_text, stream_texts
from loom.tokens import TokenArray

StepCallback = Callable[[StepUpdate], None]
# (entry indices that produced output rows, their logits as a (rows, vocab) view)
_RowHandler = Callable[[npt.NDArray[np.int64], npt.NDArray[np.float32]], None]


def keep_recent(ids: Sequence[int], n_ctx: int, reserve: int = 0, *, bos: bool = True) -> list[int]:
    """The most recent `ids` that fit in `n_ctx` with `reserve` positions left to generate into
    (and one for BOS when the model adds it)."""
    room = n_ctx - reserve - (1 if bos else 0)
    return list(ids[-room:]) if room > 0 else []


@dataclass
class _BranchState:
    index: int
    seq: int
    rng: np.random.Generator
    stream: Utf8Stream
    pos: int  # position the pending token will be decoded at
    n_forced: int = 0
    ids: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_ids: list[npt.NDArray[np.int64]] = field(default_factory=list)
    top_logprobs: list[npt.NDArray[np.float32]] = field(default_factory=list)
    entropy: list[float] = field(default_factory=list)
    text: str = ""
    forced_text_len: int = 0
    n_sampled: int = 0
    decoded: list[int] = field(default_factory=list)
    pending: int | None = None
    finish: FinishReason | None = None
    stop_at: int | None = None
    stop: str | None = None

    @property
    def done(self) -> bool:
        return self.finish is not None


@dataclass
class _Reading:
    """What scoring learns of one continuation: per token its logprob, the entropy there and the
    k most likely tokens (k may be 0)."""

    logprobs: npt.NDArray[np.float32]
    entropy: npt.NDArray[np.float32]
    top_ids: npt.NDArray[np.int64]
    top_logprobs: npt.NDArray[np.float32]

    @classmethod
    def zeros(cls, n: int, k: int) -> _Reading:
        return cls(
            np.zeros(n, np.float32),
            np.zeros(n, np.float32),
            np.zeros((n, k), np.int64),
            np.zeros((n, k), np.float32),
        )

    def put(self, t: int, logprob: float, stats: RowStats, row: int) -> None:
        self.logprobs[t] = logprob
        self.entropy[t] = stats.entropy[row]
        if self.top_ids.shape[1]:
            self.top_ids[t] = stats.top_ids[row]
            self.top_logprobs[t] = stats.top_logprobs[row]


@dataclass
class EngineStats:
    decode_seconds: float = 0.0
    decode_calls: int = 0
    decoded_tokens: int = 0


class Engine:
    """One loaded model. Every public call holds the engine's lock: concurrent calls serialise."""

    def __init__(self, runtime: Runtime, info: ModelInfo) -> None:
        self._rt = runtime
        self._info = info
        self._lock = threading.RLock()
        self._cache = SequenceCache(runtime.n_seq_max, runtime)
        self._analyzer = Analyzer()
        self._bounds = block_bounds(runtime.n_vocab)
        self._closed = False

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        n_ctx: int = 4096,
        n_seq_max: int = 16,
        n_threads: int = 2,
        n_batch: int = 512,
        n_outputs_max: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        check: bool = True,
    ) -> Engine:
        """Load a GGUF (None: the default model, assembled on first use with `progress`).

        The header is checked first (missing / not GGUF / truncated → ModelError without touching
        llama.cpp); n_ctx is capped at the model's training context. With `check`, a model not yet
        tried with this llama.cpp build on this CPU is first tried in a child process, so that a
        native crash is an `EngineCrashError` here rather than the end of the process."""
        p = default_model_path(progress) if path is None else Path(path).expanduser()
        info = inspect_model(p)
        if check:
            ensure_model_runs(info.path)
        if info.n_ctx_train > 0:
            n_ctx = min(n_ctx, info.n_ctx_train)
        runtime = Runtime(
            info.path,
            n_ctx=n_ctx,
            n_seq_max=n_seq_max,
            n_threads=n_threads,
            n_batch=n_batch,
            n_outputs_max=n_outputs_max,
        )
        return cls(runtime, info)

    # -- description ---------------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def n_ctx(self) -> int:
        return self._rt.n_ctx

    @property
    def n_seq_max(self) -> int:
        return self._rt.n_seq_max

    @property
    def n_vocab(self) -> int:
        return self._rt.n_vocab

    @property
    def bos_id(self) -> int | None:
        return self._rt.bos_id

    @property
    def eos_id(self) -> int | None:
        return self._rt.eos_id

    @property
    def runtime(self) -> Runtime:
        """The llama.cpp handles (for the reference evaluator and the bench)."""
        return self._rt

    @property
    def stats(self) -> EngineStats:
        rt = self._rt
        return EngineStats(rt.decode_seconds, rt.decode_calls, rt.decoded_tokens)

    def reset_stats(self) -> None:
        with self._lock:
            self._check_open()
            self._rt.decode_seconds = 0.0
            self._rt.decode_calls = 0
            self._rt.decoded_tokens = 0

    def resident_prefixes(self) -> list[list[int]]:
        """Token prefixes currently held in the KV cache (BOS included), most recent last."""
        with self._lock:
            self._check_open()
            res = sorted(self._cache.residents.values(), key=lambda r: r.last_used)
            return [list(r.tokens) for r in res]

    def clear_cache(self) -> None:
        with self._lock:
            self._check_open()
            self._cache.clear()
            self._rt.clear_memory()

    # -- text ----------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Token ids of `text` (special-token syntax in the text is not parsed: it is just text)."""
        with self._lock:
            self._check_open()
            return self._rt.tokenize(text, add_special=add_bos)

    def detokenize(self, ids: Sequence[int]) -> str:
        with self._lock:
            self._check_open()
            return b"".join(self._rt.pieces(ids)).decode("utf-8", errors="replace")

    def token_texts(self, ids: Sequence[int], *, after: Sequence[int] = ()) -> list[str]:
        """Per-token display texts that join to the decoded text. `after` (the tokens before these)
        lets a character split across the boundary land on the token that completes it."""
        with self._lock:
            self._check_open()
            carry = incomplete_tail(b"".join(self._rt.pieces(list(after)[-4:])))
            return stream_texts(self._rt.pieces(ids), carry)

    def piece_text(self, token: int) -> str:
        """One token shown on its own (invalid UTF-8 fragments as \\x escapes)."""
        with self._lock:
            self._check_open()
            return piece_text(self._rt.piece(token))

    def tokens_for(self, text: str) -> TokenArray:
        """Human-written text as tokens without probabilities."""
        ids = self.tokenize(text)
        return TokenArray.from_ids(ids, self.token_texts(ids))

    def keep_recent(self, prefix_ids: Sequence[int], reserve: int = 0) -> list[int]:
        """The most recent prefix tokens that leave `reserve` positions free (see keep_recent)."""
        return keep_recent(prefix_ids, self.n_ctx, reserve, bos=self.bos_id is not None)

    def _check_ids(self, ids: Sequence[int]) -> list[int]:
        out = [int(t) for t in ids]
        bad = [t for t in out if not 0 <= t < self.n_vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} outside the vocabulary (0..{self.n_vocab - 1})")
        return out

    def _with_bos(self, prefix_ids: Sequence[int]) -> list[int]:
        ids = self._check_ids(prefix_ids)
        return ([self.bos_id] if self.bos_id is not None else []) + ids

    # -- decoding ------------------------------------------------------------------------------

    def _decode(
        self,
        tok: Sequence[int] | npt.NDArray[np.int64],
        pos: Sequence[int] | npt.NDArray[np.int64],
        seq: Sequence[int] | npt.NDArray[np.int64],
        out: Sequence[bool] | npt.NDArray[np.bool_],
        pinned: set[int],
    ) -> bool:
        """One llama_decode, evicting unpinned cached sequences while the cache lacks cells.
        False when there is no room even then."""
        while True:
            if self._rt.decode(tok, pos, seq, out) == 0:
                return True
            if not self._cache.evict_one(pinned):
                return False

    def _run(
        self,
        tok: npt.NDArray[np.int64],
        pos: npt.NDArray[np.int64],
        seq: npt.NDArray[np.int64],
        out: npt.NDArray[np.bool_],
        pinned: set[int],
        handle: _RowHandler,
    ) -> None:
        """Decode many entries in chunks of at most n_batch tokens and n_outputs_max outputs; after
        each chunk, `handle` gets the output entries' indices and their logits."""
        n = len(tok)
        rt = self._rt
        i = 0
        while i < n:
            end = min(n, i + rt.n_batch)
            outs = np.flatnonzero(out[i:end])
            if len(outs) > rt.n_outputs_max:
                end = i + int(outs[rt.n_outputs_max - 1]) + 1
            if end < n and end - i >= REUSE_ALIGN:
                # chunks of a multiple of 4 rows keep row groups aligned (see kvcache.REUSE_ALIGN)
                end -= (end - i) % REUSE_ALIGN
            outs = np.flatnonzero(out[i:end])
            if not self._decode(tok[i:end], pos[i:end], seq[i:end], out[i:end], pinned):
                raise ContextOverflowError(int(pos.max()) + 1, self.n_ctx)
            if len(outs):
                handle(outs + i, rt.logits(len(outs)))
            i = end

    def _prefill(
        self, tokens: list[int], out_from: int, k: int, temperature: float, pinned: set[int]
    ) -> tuple[
        int,
        list[tuple[float, npt.NDArray[np.int64], npt.NDArray[np.float32], float]],
        npt.NDArray[np.float32],
        RowStats,
        int,
    ]:
        """Bring `tokens` into a fresh sequence (reusing the longest cached prefix, but decoding at
        least every position from `out_from`), with logits from `out_from` on.

        Returns the sequence, one record (logprob, top ids, top logprobs, entropy) for each of
        tokens[out_from + 1:], the last row's logits and statistics, and how many tokens were
        taken from the cache instead of decoded."""
        try:
            seq, reused = self._cache.fork(tokens, out_from, pinned)
        except NoFreeSlot:
            raise RuntimeError("no free KV sequence slot (raise n_seq_max)") from None
        pinned.add(seq)
        n = len(tokens)
        idx = np.arange(reused, n, dtype=np.int64)
        tok = np.asarray(tokens, np.int64)[reused:]
        out = idx >= out_from
        records: list[tuple[float, npt.NDArray[np.int64], npt.NDArray[np.float32], float]] = []
        last: list[tuple[npt.NDArray[np.float32], RowStats]] = []

        def handle(rows: npt.NDArray[np.int64], x: npt.NDArray[np.float32]) -> None:
            positions = idx[rows]
            temps = np.where(positions == n - 1, temperature, 1.0)
            stats = self._analyzer.analyze(x, k, temps)
            for r, p in enumerate(positions):
                if p + 1 < n:
                    target = tokens[p + 1]
                    records.append(
                        (
                            float(x[r, target] - stats.lse[r]),
                            stats.top_ids[r],
                            stats.top_logprobs[r],
                            float(stats.entropy[r]),
                        )
                    )
                else:
                    last.append((x[r].copy(), stats.take(slice(r, r + 1))))

        self._run(tok, idx, np.full(len(tok), seq, np.int64), out, pinned, handle)
        self._cache.set(seq, list(tokens))
        row, stats = last[0]
        return seq, records, row, stats, reused

    # -- generation ----------------------------------------------------------------------------

    def generate(
        self,
        prefix_ids: Sequence[int],
        n: int,
        settings: SamplerSettings | None = None,
        *,
        top_logprobs: int = 5,
        forced: Sequence[int] | None = None,
        on_step: StepCallback | None = None,
        cancel: threading.Event | None = None,
        fresh: bool = False,
    ) -> list[Branch]:
        """`n` continuations of `prefix_ids` (the path's tokens, without BOS: the engine adds it).

        Every branch starts with `forced` (counterfactual branching); their logprobs are recorded
        from the model's distribution but they are not sampled. `on_step` gets each step's new
        tokens; setting `cancel` stops between steps and keeps what was generated ("cancelled").
        `fresh` empties the KV cache first, so the result is the reproducible one (see above)."""
        s = settings or SamplerSettings()
        with self._lock:
            self._check_open()
            if fresh or not self._cache.residents:
                # An empty cache is made truly empty (cells and their order reset), so that what
                # follows is computed exactly as in a new process.
                self._cache.clear()
                self._rt.clear_memory()
            return self._generate(
                prefix_ids, n, s, top_logprobs, list(forced or []), on_step, cancel
            )

    def _generate(
        self,
        prefix_ids: Sequence[int],
        n: int,
        s: SamplerSettings,
        top_logprobs: int,
        forced: list[int],
        on_step: StepCallback | None,
        cancel: threading.Event | None,
    ) -> list[Branch]:
        rt = self._rt
        if not 1 <= n <= rt.n_seq_max:
            raise ValueError(f"n must be between 1 and {rt.n_seq_max} (the engine's n_seq_max)")
        ctx = self._with_bos(prefix_ids)
        full = ctx + self._check_ids(forced)
        if not ctx:
            raise ValueError("empty prompt: the model adds no BOS, give at least one token")
        if len(full) >= self.n_ctx:
            raise ContextOverflowError(len(full), self.n_ctx)
        k = max(0, top_logprobs)
        seed = s.seed if s.seed is not None else new_seed()
        carry = incomplete_tail(b"".join(rt.pieces(ctx[-4:])))
        pinned: set[int] = set()
        from_empty = not self._cache.residents
        base, records, row0, stats0, reused = self._prefill(
            full, len(ctx) - 1, max(k, 1), s.full_vocab_temperature, pinned
        )
        states: list[_BranchState] = []
        try:
            seqs = [base]
            for _ in range(1, n):
                dst = self._cache.acquire(pinned)
                self._cache.copy(base, dst)
                pinned.add(dst)
                seqs.append(dst)
            for i, seq in enumerate(seqs):
                b = _BranchState(i, seq, branch_rng(seed, i), Utf8Stream(carry), pos=len(full))
                for tok, (lp, tids, tlps, ent) in zip(forced, records, strict=True):
                    self._record(b, tok, lp, tids[:k], tlps[:k], ent)
                b.n_forced = len(forced)
                b.forced_text_len = len(b.text)
                states.append(b)
            update = StepUpdate(
                0,
                [
                    (b.index, t, txt, lp)
                    for b in states
                    for t, txt, lp in zip(b.ids, b.texts, b.logprobs, strict=True)
                ],
            )
            for b in states:
                if s.max_tokens == 0:
                    b.finish = "length"
                elif cancel is not None and cancel.is_set():
                    b.finish = "cancelled"
                else:
                    tok = sample_row(row0, stats0, 0, s, b.rng, self._bounds)
                    self._accept(b, tok, row0, stats0, 0, k, s, update)
            if on_step is not None and update.new:
                on_step(update)
            step = 0
            while True:
                live = [b for b in states if not b.done]
                if not live:
                    break
                if cancel is not None and cancel.is_set():
                    for b in live:
                        b.finish = "cancelled"
                    break
                pending = [b.pending if b.pending is not None else 0 for b in live]
                if not self._decode(
                    pending,
                    [b.pos for b in live],
                    [b.seq for b in live],
                    np.ones(len(live), np.bool_),
                    pinned,
                ):
                    for b in live:  # the cache has no cell left even after evicting others
                        b.finish = "length"
                    break
                for b, t in zip(live, pending, strict=True):
                    b.decoded.append(t)
                    b.pos += 1
                x = rt.logits(len(live))
                temps = np.full(len(live), s.full_vocab_temperature)
                stats = self._analyzer.analyze(x, max(k, 1), temps)
                step += 1
                update = StepUpdate(step, [])
                for r, b in enumerate(live):
                    tok = sample_row(x[r], stats, r, s, b.rng, self._bounds)
                    self._accept(b, tok, x[r], stats, r, k, s, update)
                if on_step is not None and update.new:
                    on_step(update)
        finally:
            # the books must say exactly which tokens each sequence holds, even after an error
            for b in states:
                self._cache.set(b.seq, full + b.decoded)
        return [self._finish(b, seed, reused, from_empty) for b in states]

    def _record(
        self,
        b: _BranchState,
        tok: int,
        lp: float,
        tids: npt.NDArray[np.int64],
        tlps: npt.NDArray[np.float32],
        ent: float,
    ) -> str:
        text = b.stream.push(self._rt.piece(tok))
        b.ids.append(tok)
        b.offsets.append(len(b.text))
        b.texts.append(text)
        b.text += text
        b.logprobs.append(lp)
        b.top_ids.append(tids)
        b.top_logprobs.append(tlps)
        b.entropy.append(ent)
        return text

    def _accept(
        self,
        b: _BranchState,
        tok: int,
        row: npt.NDArray[np.float32],
        stats: RowStats,
        r: int,
        k: int,
        s: SamplerSettings,
        update: StepUpdate,
    ) -> None:
        """Take a sampled token into a branch and decide whether the branch ends here."""
        if self._rt.is_eog(tok):
            b.finish = "eos"
            return
        lp = float(row[tok] - stats.lse[r])
        before = len(b.text)
        text = self._record(
            b, tok, lp, stats.top_ids[r, :k], stats.top_logprobs[r, :k], float(stats.entropy[r])
        )
        update.new.append((b.index, tok, text, lp))
        b.n_sampled += 1
        b.pending = tok
        if s.stop:
            longest = max(len(x) for x in s.stop)
            start = max(b.forced_text_len, before - longest + 1)
            at = find_stop(b.text, s.stop, start)
            if at is not None:
                b.finish = "stop"
                b.stop_at = at
                b.stop = next(x for x in s.stop if b.text.startswith(x, at))
                return
        if b.n_sampled >= s.max_tokens or b.pos >= self.n_ctx:
            b.finish = "length"

    def _finish(self, b: _BranchState, seed: int, cached_prefix: int, from_empty: bool) -> Branch:
        rest = b.stream.flush()
        if rest and b.texts:
            b.texts[-1] += rest
            b.text += rest
        n = len(b.ids)
        text = b.text
        if b.stop_at is not None:
            text = b.text[: b.stop_at]
            # keep tokens that begin before the stop string (a straddling token stays whole)
            n = sum(1 for off in b.offsets if off < b.stop_at)
            n = max(n, b.n_forced)
        k = len(b.top_ids[0]) if b.top_ids else 0
        top_ids = np.asarray(b.top_ids[:n], np.int32).reshape(n, k)
        top_lps = np.asarray(b.top_logprobs[:n], np.float32).reshape(n, k)
        top_texts = {int(t): piece_text(self._rt.piece(int(t))) for t in np.unique(top_ids)}
        tokens = TokenArray(
            ids=np.asarray(b.ids[:n], np.int32),
            texts=b.texts[:n],
            logprobs=np.asarray(b.logprobs[:n], np.float32),
            top_ids=top_ids,
            top_logprobs=top_lps,
            top_texts=top_texts,
            entropy=np.asarray(b.entropy[:n], np.float32),
        )
        assert b.finish is not None
        return Branch(
            tokens,
            text,
            b.finish,
            seed,
            b.index,
            b.n_forced,
            b.stop,
            cached_prefix=cached_prefix,
            from_empty_cache=from_empty,
        )

    # -- scoring -------------------------------------------------------------------------------

    def score(
        self, prefix_ids: Sequence[int], continuations: Sequence[Sequence[int]]
    ) -> list[npt.NDArray[np.float32]]:
        """Per-token raw logprobs of each continuation after `prefix_ids` (BOS added by the engine).

        One batched pass: the prefix is decoded once (or found in the cache) and shared; the
        continuations are decoded as multi-token entries of several sequences per llama_decode, with
        logits at every position they need."""
        with self._lock:
            self._check_open()
            return self._score(prefix_ids, [[int(t) for t in c] for c in continuations])

    def read(
        self, prefix_ids: Sequence[int], continuations: Sequence[Sequence[int]], top_logprobs: int
    ) -> list[TokenArray]:
        """Each continuation as the model reads it after `prefix_ids`: per token its raw logprob,
        the entropy there and the `top_logprobs` most likely tokens — what a sampled token
        carries, for text the model did not write. The same batched pass as `score`."""
        with self._lock:
            self._check_open()
            conts = [[int(t) for t in c] for c in continuations]
            readings = self._read(prefix_ids, conts, max(0, int(top_logprobs)))
            prefix = self._with_bos(prefix_ids)
            out = []
            for c, r in zip(conts, readings, strict=True):
                top = np.unique(r.top_ids)
                top_texts = {int(t): piece_text(self._rt.piece(int(t))) for t in top}
                texts = stream_texts(
                    self._rt.pieces(c), incomplete_tail(b"".join(self._rt.pieces(prefix[-4:])))
                )
                out.append(
                    TokenArray(
                        ids=np.asarray(c, np.int32),
                        texts=texts,
                        logprobs=r.logprobs,
                        top_ids=r.top_ids.astype(np.int32),
                        top_logprobs=r.top_logprobs,
                        top_texts=top_texts,
                        entropy=r.entropy,
                    )
                )
            return out

    def _score(
        self, prefix_ids: Sequence[int], conts: list[list[int]]
    ) -> list[npt.NDArray[np.float32]]:
        return [r.logprobs for r in self._read(prefix_ids, conts, 0)]

    def _read(self, prefix_ids: Sequence[int], conts: list[list[int]], k: int) -> list[_Reading]:
        ctx = self._with_bos(prefix_ids)
        if not ctx:
            raise ValueError("empty prompt: the model adds no BOS, give at least one token")
        for c in conts:
            self._check_ids(c)
        longest = max((len(c) for c in conts), default=0)
        if len(ctx) + longest - 1 > self.n_ctx:
            raise ContextOverflowError(len(ctx) + longest - 1, self.n_ctx)
        out = [_Reading.zeros(len(c), k) for c in conts]
        if longest == 0:
            return out
        pinned: set[int] = set()
        base, _, row0, stats0, _ = self._prefill(ctx, len(ctx) - 1, k, 1.0, pinned)
        for j, c in enumerate(conts):
            if c:
                out[j].put(0, float(row0[c[0]] - stats0.lse[0]), stats0, 0)
        todo = [j for j, c in enumerate(conts) if len(c) > 1]
        group = max(1, self._rt.n_seq_max - 1)
        p0 = len(ctx)
        for g in range(0, len(todo), group):
            members = todo[g : g + group]
            seqs: list[int] = []
            try:
                for _ in members:
                    dst = self._cache.acquire(pinned)
                    self._cache.copy(base, dst)
                    pinned.add(dst)
                    seqs.append(dst)
            except NoFreeSlot:
                raise RuntimeError("no free KV sequence slot (raise n_seq_max)") from None
            tok: list[int] = []
            pos: list[int] = []
            sq: list[int] = []
            target: list[tuple[int, int]] = []  # (continuation, index of the token a row predicts)
            for j, seq in zip(members, seqs, strict=True):
                c = conts[j]
                tok.extend(c[:-1])
                pos.extend(range(p0, p0 + len(c) - 1))
                sq.extend([seq] * (len(c) - 1))
                target.extend((j, t + 1) for t in range(len(c) - 1))

            def handle(
                rows: npt.NDArray[np.int64],
                x: npt.NDArray[np.float32],
                target: list[tuple[int, int]] = target,
            ) -> None:
                stats = self._analyzer.analyze(x, k)
                for r, e in enumerate(rows):
                    j, t = target[e]
                    out[j].put(t, float(x[r, conts[j][t]] - stats.lse[r]), stats, r)

            try:
                self._run(
                    np.asarray(tok, np.int64),
                    np.asarray(pos, np.int64),
                    np.asarray(sq, np.int64),
                    np.ones(len(tok), np.bool_),
                    pinned,
                    handle,
                )
            finally:
                for j, seq in zip(members, seqs, strict=True):
                    self._cache.set(seq, ctx + conts[j][:-1])
                    pinned.discard(seq)
        return out

    # -- reference -----------------------------------------------------------------------------

    def reference_logits(
        self, ids: Sequence[int], positions: Sequence[int] | None = None
    ) -> npt.NDArray[np.float32]:
        """Logits of `ids` (BOS included if wanted) evaluated alone in a fresh single-sequence
        context: the independent yardstick the tests compare batched results against."""
        from loom.engine.reference import reference_logits

        with self._lock:
            self._check_open()
            return reference_logits(self._rt, ids, positions)

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._analyzer.close()
                self._rt.close()

    def _check_open(self) -> None:
        # the llama.cpp handles are freed: any call into them would crash the process
        if self._closed:
            raise EngineError("the engine is closed")

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
