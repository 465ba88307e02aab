"""A reference single-sequence evaluator: the yardstick batched results are tested against.

It shares only the loaded weights with the engine: a fresh context with one sequence, the whole
token list decoded as one prompt with logits at every position, no cache, no copies, no batching
across sequences. Batched evaluation is not bit-exact against it (see loom.engine.engine), only
close.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from loom.engine.errors import ContextOverflowError, EngineError
from loom.engine.runtime import L, Runtime, last_llama_error


def reference_logits(
    rt: Runtime, ids: Sequence[int], positions: Sequence[int] | None = None
) -> npt.NDArray[np.float32]:
    """Logits (len(positions), n_vocab) of `ids` read alone; row i predicts ids[positions[i]+1]."""
    n = len(ids)
    if n == 0:
        return np.zeros((0, rt.n_vocab), np.float32)
    if n > rt.n_ctx:
        raise ContextOverflowError(n, rt.n_ctx)
    want = list(range(n)) if positions is None else [int(p) for p in positions]
    n_ctx = -(-n // 256) * 256
    cparams = L.llama_context_default_params()
    cparams.n_ctx = n_ctx
    cparams.n_batch = n_ctx
    cparams.n_ubatch = n_ctx
    cparams.n_seq_max = 1
    cparams.n_outputs_max = max(1, len(want))
    cparams.swa_full = True
    cparams.n_threads = 2
    cparams.n_threads_batch = 2
    ctx = L.llama_init_from_model(rt.model, cparams)
    if not ctx:
        raise EngineError(f"cannot create a reference context: {last_llama_error()}")
    try:
        batch = L.llama_batch_init(n, 0, 1)
        try:
            out = set(want)
            for i, t in enumerate(ids):
                batch.token[i] = int(t)
                batch.pos[i] = i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = i in out
            batch.n_tokens = n
            rc = L.llama_decode(ctx, batch)
            if rc != 0:
                raise EngineError(f"reference decode failed ({rc}): {last_llama_error()}")
            rows = sorted(out)
            x = np.ctypeslib.as_array(L.llama_get_logits(ctx), shape=(len(rows), rt.n_vocab))
            index = {p: r for r, p in enumerate(rows)}
            return np.stack([x[index[p]] for p in want]).astype(np.float32)
        finally:
            L.llama_batch_free(batch)
    finally:
        L.llama_free(ctx)
