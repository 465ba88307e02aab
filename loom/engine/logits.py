"""Per-row statistics of a batch of logits, vectorised over the whole batch.

One decode step gives one logits row per live branch (262k columns for Gemma). Everything the engine
records or samples from is derived here in a few whole-batch numpy passes:

- the log-partition (log-sum-exp), hence each token's logprob under the raw distribution;
- the entropy of the raw distribution;
- the exact top-k, found through block maxima: the k blocks with the largest maxima contain the k
  largest values, so only k·block columns are sorted (several times faster than argpartition over
  the full row);
- block sums of exp(x - max), from which a token is sampled in two small searches instead of a
  cumulative sum over the whole vocabulary.

exp over the batch dominates the cost, so rows are split across two threads (numpy releases the GIL
inside its loops, and llama_decode is not running while this does).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

BLOCK = 256


@dataclass
class RowStats:
    """Statistics of R logits rows. `exp_block_sums[r, b]` = Σ exp((x - max)/T_r) over block b,
    where T_r is 1 unless `analyze` was given another temperature for that row."""

    maxes: F32  # (R,)
    lse: F64  # (R,) log Σ exp(x)
    entropy: F32  # (R,) nats, raw distribution
    top_ids: I64  # (R, k) most likely first
    top_logprobs: F32  # (R, k)
    exp_block_sums: F64  # (R, n_blocks)
    temperatures: F64  # (R,) the T used for exp_block_sums
    block_max: F32  # (R, n_blocks) the largest logit of every block

    def take(self, rows: slice) -> RowStats:
        """The statistics of a subset of rows."""
        return RowStats(
            self.maxes[rows],
            self.lse[rows],
            self.entropy[rows],
            self.top_ids[rows],
            self.top_logprobs[rows],
            self.exp_block_sums[rows],
            self.temperatures[rows],
            self.block_max[rows],
        )


def _block_view(x: F32, block: int) -> tuple[F32, F32 | None]:
    """The row-blocked main part (R, nb, block) and the ragged tail (R, rest) or None."""
    rows, v = x.shape
    nb = v // block
    main = x[:, : nb * block].reshape(rows, nb, block)
    tail = x[:, nb * block :] if nb * block < v else None
    return main, tail


def block_bounds(v: int, block: int = BLOCK) -> I64:
    """Start column of every block, plus v at the end (the tail is one more, shorter block)."""
    starts = np.arange(0, v, block, dtype=np.int64)
    return np.append(starts, np.int64(v))


def top_k_rows(x: F32, k: int, block: int = BLOCK) -> tuple[I64, F32]:
    """Exact top-k of every row, sorted descending (ties: lower id first)."""
    rows, v = x.shape
    if k <= 0:
        return np.zeros((rows, 0), np.int64), np.zeros((rows, 0), np.float32)
    k = min(k, v)
    main, tail = _block_view(x, block)
    bmax = main.max(axis=2)
    if tail is not None:
        bmax = np.concatenate([bmax, tail.max(axis=1, keepdims=True)], axis=1)
    return _top_k_from_blocks(x, bmax, k, block)


def _top_k_from_blocks(x: F32, bmax: F32, k: int, block: int) -> tuple[I64, F32]:
    rows, v = x.shape
    if k <= 0:
        return np.zeros((rows, 0), np.int64), np.zeros((rows, 0), np.float32)
    nblocks = bmax.shape[1]
    kb = min(k, nblocks)
    # a stable sort of the block maxima (a thousand per row): among tied blocks the lower ids win,
    # which keeps the tie-break exact; then the chosen blocks in id order, so that a stable sort
    # of their columns by value breaks ties by id too
    best = np.sort(np.argsort(-bmax, axis=1, kind="stable")[:, :kb], axis=1)
    cols = (best[:, :, None] * block + np.arange(block)[None, None, :]).reshape(rows, -1)
    valid = cols < v
    vals = np.take_along_axis(x, np.where(valid, cols, 0), axis=1)
    vals = np.where(valid, vals, -np.inf).astype(np.float32)
    order = np.argsort(-vals, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(cols, order, axis=1), np.take_along_axis(vals, order, axis=1)


class _Scratch:
    """Two reusable (rows, vocab) float32 buffers. A fresh 8 MB array per step costs page faults
    (about a millisecond at 8 x 262k); these are allocated once and grow only if needed."""

    def __init__(self) -> None:
        self.a = np.empty((0, 0), np.float32)
        self.b = np.empty((0, 0), np.float32)

    def get(self, rows: int, cols: int) -> tuple[F32, F32]:
        if self.a.shape[0] < rows or self.a.shape[1] != cols:
            self.a = np.empty((rows, cols), np.float32)
            self.b = np.empty((rows, cols), np.float32)
        return self.a[:rows], self.b[:rows]


def _analyze_chunk(
    x: F32, k: int, temps: F64, block: int, scratch: _Scratch | None = None
) -> RowStats:
    main, tail = _block_view(x, block)
    bmax = main.max(axis=2)
    if tail is not None:
        bmax = np.concatenate([bmax, tail.max(axis=1, keepdims=True)], axis=1)
    maxes = bmax.max(axis=1)
    xs, e = (scratch or _Scratch()).get(*x.shape)
    np.subtract(x, maxes[:, None], out=xs)
    np.exp(xs, out=e)
    e_main, e_tail = _block_view(e, block)
    bsum = e_main.sum(axis=2).astype(np.float64)
    if e_tail is not None:
        bsum = np.concatenate([bsum, e_tail.sum(axis=1, keepdims=True, dtype=np.float64)], axis=1)
    z = bsum.sum(axis=1)
    lse = maxes.astype(np.float64) + np.log(z)
    # H = log z - Σ e·(x - max) / z. Summing e·(x - max) (terms in [-1/e, 0]) rather than e·x
    # keeps float32 accurate; einsum, not np.dot: a BLAS call would wake OpenBLAS's spinning
    # threads, which then fight llama.cpp's threads for the two cores (16x slower decodes).
    exs = np.einsum("ij,ij->i", e, xs).astype(np.float64)
    entropy = np.maximum(np.log(z) - exs / z, 0.0).astype(np.float32)
    top_ids, top_vals = _top_k_from_blocks(x, bmax, k, block)
    top_lps = (top_vals - lse[:, None]).astype(np.float32)
    # rows sampled at another temperature over the full vocabulary need their own block sums
    for r in np.flatnonzero(temps != 1.0):
        et = xs[r] / np.float32(temps[r])
        np.exp(et, out=et)
        m_r, t_r = _block_view(et[None, :], block)
        s = m_r[0].sum(axis=1, dtype=np.float64)
        if t_r is not None:
            s = np.append(s, t_r.sum(dtype=np.float64))
        bsum[r] = s
    return RowStats(maxes, lse, entropy, top_ids, top_lps, bsum, temps.copy(), bmax)


class Analyzer:
    """Runs `analyze` over a batch, splitting rows between the caller's thread and one worker."""

    def __init__(self, block: int = BLOCK, parallel: bool = True) -> None:
        self.block = block
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="loom-logits") if parallel else None
        self._lock = threading.Lock()
        self._scratch = (_Scratch(), _Scratch())  # the caller's thread, the worker

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def analyze(self, x: F32, k: int, temps: F64 | None = None) -> RowStats:
        """Statistics of the rows of `x` (R, V); `temps[r]` ≠ 1 adds block sums at that T."""
        rows = x.shape[0]
        t = np.ones(rows, np.float64) if temps is None else np.asarray(temps, np.float64)
        with self._lock:
            if self._pool is None or rows < 2:
                return _analyze_chunk(x, k, t, self.block, self._scratch[0])
            half = (rows + 1) // 2
            fut: Future[RowStats] = self._pool.submit(
                _analyze_chunk, x[half:], k, t[half:], self.block, self._scratch[1]
            )
            first = _analyze_chunk(x[:half], k, t[:half], self.block, self._scratch[0])
            second = fut.result()
        return RowStats(
            np.concatenate([first.maxes, second.maxes]),
            np.concatenate([first.lse, second.lse]),
            np.concatenate([first.entropy, second.entropy]),
            np.concatenate([first.top_ids, second.top_ids]),
            np.concatenate([first.top_logprobs, second.top_logprobs]),
            np.concatenate([first.exp_block_sums, second.exp_block_sums]),
            np.concatenate([first.temperatures, second.temperatures]),
            np.concatenate([first.block_max, second.block_max]),
        )


def log_softmax_rows(x: F32) -> F64:
    """Reference log-softmax in float64 (tests and scoring of few rows)."""
    x64 = x.astype(np.float64)
    m = x64.max(axis=-1, keepdims=True)
    return np.asarray(x64 - m - np.log(np.exp(x64 - m).sum(axis=-1, keepdims=True)))
