"""The llama.cpp low-level API behind one object: model, one context, one reusable batch.

Facts this relies on (measured on llama-cpp-python 0.3.36): the context must be created from
`llama_context_default_params()` with `n_seq_max`, `kv_unified=True` (a prefix shared by several
sequences fails to decode without it), `n_outputs_max` (Gemma's compute buffer drops from 514 MiB to
tens), `swa_full=True` (forking from old positions in sliding-window layers) and 2 threads for both
decode and batch. `llama_get_logits` returns every requested row contiguous in batch order, valid
until the next decode, so a step's logits are one numpy view.

llama.cpp logs to stderr; a no-op callback silences it and keeps the last error lines so a failed
load can be reported in one line.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from loom.engine.cpu import RepackDecision, cpu_info, parse_system_info, repack_decision
from loom.engine.errors import DOCTOR_HINT, EngineError, ModelError

# llama.cpp's CPU backend runs on OpenMP (libgomp), whose threads keep spinning after every
# llama_decode; with two cores they steal one from the numpy work between steps (measured: logits
# analysis 9-11 ms right after a decode, 5 ms with a bounded spin). A bounded spin count keeps the
# barriers inside a decode fast and lets the threads sleep soon after it. libgomp reads this once,
# when it is loaded, so it is set before llama_cpp is imported; a user's own setting wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

# Any on purpose: the bindings' annotations disagree with how ctypes structures are filled here.
L: Any
try:
    L = importlib.import_module("llama_cpp")
except ImportError:  # pragma: no cover - the package is a hard dependency
    L = None

_log_lock = threading.Lock()
_log_lines: deque[str] = deque(maxlen=20)
_log_callback: Any = None
_GGML_LOG_LEVEL_ERROR = 4  # ggml_log_level: NONE, DEBUG, INFO, WARN, ERROR, CONT
_GGML_LOG_LEVEL_CONT = 5
_last_level = 0
_blas_limited = False
_saw_repacked_buffer = False  # llama.cpp logged a CPU_REPACK weight buffer (weights were repacked)


def _require_llama() -> Any:
    if L is None:
        raise ModelError("llama-cpp-python is not installed: pip install llama-cpp-python")
    return L


def silence_llama_logs() -> None:
    """Route llama.cpp/ggml logging into a small buffer instead of stderr (idempotent)."""
    global _log_callback
    lib = _require_llama()
    with _log_lock:
        if _log_callback is not None:
            return

        def _capture(level: int, text: bytes, _user: Any) -> None:
            global _last_level, _saw_repacked_buffer
            if level != _GGML_LOG_LEVEL_CONT:
                _last_level = level
            if text and b"REPACK model buffer" in text:
                _saw_repacked_buffer = True
            if _last_level == _GGML_LOG_LEVEL_ERROR and text:
                line = text.decode("utf-8", errors="replace").strip()
                if line:
                    _log_lines.append(line)

        # keep a reference: ctypes callbacks are freed with their Python object
        _log_callback = lib.llama_log_callback(_capture)
        lib.llama_log_set(_log_callback, ctypes.c_void_p(0))
        lib.llama_backend_init()


def limit_blas_threads() -> None:
    """Make numpy's OpenBLAS single-threaded (best effort, once).

    After any BLAS call OpenBLAS keeps worker threads spinning; on a 2-core machine they starve
    llama.cpp's decode threads (measured: 60 ms steps became 1 s). The process may have imported
    numpy long before us, so the environment variable is too late; call the library directly.
    """
    global _blas_limited
    if _blas_limited:
        return
    _blas_limited = True
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            libs = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return
    for lib_path in libs:
        try:
            lib = ctypes.CDLL(lib_path)
        except OSError:
            continue
        for name in (
            "scipy_openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_",
            "openblas_set_num_threads",
        ):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.argtypes = [ctypes.c_int]
                fn.restype = None
                fn(1)
                break


def system_info() -> dict[str, str]:
    """What this llama.cpp build was compiled with ({"AVX2": "1", "REPACK": "1", ...})."""
    lib = _require_llama()
    raw = lib.llama_print_system_info()
    return parse_system_info(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)


def weight_repacking() -> RepackDecision:
    """Whether models load with repacked weights on this machine (see loom.engine.cpu)."""
    return repack_decision(cpu_info(), system_info())


def weights_were_repacked() -> bool:
    """Whether a model loaded in this process had its weights repacked (from llama.cpp's log)."""
    return _saw_repacked_buffer


def last_llama_error() -> str:
    """The first error llama.cpp logged since the last clear (function-name prefixes removed; the
    first line names the cause, later ones only say that loading failed), or ''."""
    with _log_lock:
        lines = list(_log_lines)
        _log_lines.clear()
    if not lines:
        return ""
    line = lines[0]
    while True:
        head, sep, rest = line.partition(": ")
        if not sep or " " in head:
            break
        line = rest
    return line.removeprefix("error loading model: ")


def clear_llama_errors() -> None:
    with _log_lock:
        _log_lines.clear()


class Vocab:
    """Tokenizing and token pieces over a llama_vocab (pieces and end-of-generation flags cached:
    they are asked for every generated token)."""

    def __init__(self, vocab: Any) -> None:
        self.vocab = vocab
        self.n_vocab = int(L.llama_vocab_n_tokens(vocab))
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (ctypes.c_int32 * cap)()
        n = int(L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, False))
        if n < 0:
            cap = -n
            buf = (ctypes.c_int32 * cap)()
            n = int(L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, False))
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The token's bytes, special tokens rendered (cached: this is called for every token)."""
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        if not 0 <= token < self.n_vocab:
            raise ValueError(f"token id {token} outside the vocabulary (0..{self.n_vocab - 1})")
        size = 32
        while True:
            buf = ctypes.create_string_buffer(size)
            n = int(L.llama_token_to_piece(self.vocab, token, buf, size, 0, True))
            if n >= 0:
                out = buf.raw[:n]
                break
            size = -n
        self._pieces[token] = out
        return out

    def pieces(self, tokens: Sequence[int]) -> list[bytes]:
        return [self.piece(int(t)) for t in tokens]

    def is_eog(self, token: int) -> bool:
        cached = self._eog.get(token)
        if cached is None:
            cached = bool(L.llama_vocab_is_eog(self.vocab, token))
            self._eog[token] = cached
        return cached


class Runtime(Vocab):
    """One loaded model with one context. Not thread-safe: the Engine serialises calls."""

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int,
        n_seq_max: int,
        n_threads: int,
        n_batch: int = 512,
        n_outputs_max: int | None = None,
    ) -> None:
        lib = _require_llama()
        silence_llama_logs()
        limit_blas_threads()
        self.path = path
        clear_llama_errors()
        mparams = lib.llama_model_default_params()
        self.repacking = weight_repacking()
        mparams.use_extra_bufts = self.repacking.allowed
        model = lib.llama_model_load_from_file(str(path).encode("utf-8"), mparams)
        if not model:
            why = last_llama_error() or "unsupported or corrupt model"
            raise ModelError(f"llama.cpp cannot load {path.name}: {why} {DOCTOR_HINT}")
        self.model = model
        self.ctx: Any = None
        super().__init__(lib.llama_model_get_vocab(model))
        self.n_seq_max = n_seq_max
        self.n_batch = n_batch
        self.n_outputs_max = n_outputs_max or max(n_seq_max, 32)
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = n_seq_max
        cparams.n_outputs_max = self.n_outputs_max
        cparams.kv_unified = True
        cparams.swa_full = True
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.no_perf = True
        ctx = lib.llama_init_from_model(model, cparams)
        if not ctx:
            why = last_llama_error() or "context creation failed"
            lib.llama_model_free(model)
            self.model = None
            raise ModelError(
                f"llama.cpp cannot create a context for {path.name}: {why} {DOCTOR_HINT}"
            )
        self.ctx = ctx
        self.memory = lib.llama_get_memory(ctx)
        self.n_ctx = int(lib.llama_n_ctx(ctx))
        add_bos = bool(lib.llama_vocab_get_add_bos(self.vocab))
        bos = int(lib.llama_vocab_bos(self.vocab))
        self.bos_id: int | None = bos if add_bos and bos >= 0 else None
        self.eos_id: int | None = (
            int(lib.llama_vocab_eos(self.vocab)) if lib.llama_vocab_eos(self.vocab) >= 0 else None
        )
        self._init_batch(n_batch)
        # time spent inside llama_decode, for the throughput bench
        self.decode_seconds = 0.0
        self.decode_calls = 0
        self.decoded_tokens = 0

    # -- batch -------------------------------------------------------------------------------

    def _init_batch(self, n: int) -> None:
        """A llama_batch over numpy arrays we own, so filling it is a few vectorised copies."""
        lib = L
        self._tok = np.zeros(n, np.int32)
        self._pos = np.zeros(n, np.int32)
        self._nseq = np.ones(n, np.int32)
        self._seq = np.zeros(n, np.int32)
        self._out = np.zeros(n, np.int8)
        i32p = ctypes.POINTER(ctypes.c_int32)
        base = self._seq.ctypes.data
        self._seq_ptrs = (i32p * n)(*[ctypes.cast(base + 4 * i, i32p) for i in range(n)])
        batch = lib.llama_batch()
        batch.n_tokens = 0
        batch.token = self._tok.ctypes.data_as(i32p)
        batch.embd = ctypes.POINTER(ctypes.c_float)()
        batch.pos = self._pos.ctypes.data_as(i32p)
        batch.n_seq_id = self._nseq.ctypes.data_as(i32p)
        batch.seq_id = ctypes.cast(self._seq_ptrs, ctypes.POINTER(i32p))
        batch.logits = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
        self._batch = batch

    def decode(
        self,
        tokens: npt.ArrayLike,
        pos: npt.ArrayLike,
        seqs: npt.ArrayLike,
        outputs: npt.ArrayLike,
    ) -> int:
        """One llama_decode of up to n_batch entries; llama.cpp's code (0 ok, 1 no KV room)."""
        t = np.asarray(tokens, np.int32)
        n = len(t)
        if n == 0 or n > self.n_batch:
            raise ValueError(f"batch of {n} tokens (limit {self.n_batch})")
        self._tok[:n] = t
        self._pos[:n] = pos
        self._seq[:n] = seqs
        self._out[:n] = outputs
        self._batch.n_tokens = n
        start = time.perf_counter()
        rc = int(L.llama_decode(self.ctx, self._batch))
        self.decode_seconds += time.perf_counter() - start
        self.decode_calls += 1
        if rc == 0:
            self.decoded_tokens += n
        elif rc < 0 or rc > 1:
            raise EngineError(
                f"llama_decode failed with code {rc}: {last_llama_error() or 'no details'} "
                + DOCTOR_HINT
            )
        return rc

    def logits(self, n_rows: int) -> npt.NDArray[np.float32]:
        """The last decode's output rows as one (n_rows, n_vocab) view, valid until the next one."""
        ptr = L.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(ptr, shape=(n_rows, self.n_vocab))

    # -- memory (kvcache.MemoryOps) ------------------------------------------------------------

    def seq_rm(self, seq: int) -> None:
        L.llama_memory_seq_rm(self.memory, seq, -1, -1)

    def seq_cp(self, src: int, dst: int, n_tokens: int) -> None:
        L.llama_memory_seq_cp(self.memory, src, dst, 0, n_tokens)

    def clear_memory(self) -> None:
        L.llama_memory_clear(self.memory, True)

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(4096)
        n = int(L.llama_model_meta_val_str(self.model, key.encode(), buf, 4096))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None

    # -- lifetime ----------------------------------------------------------------------------------

    def close(self) -> None:
        if L is None:
            return
        if self.ctx:
            L.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            L.llama_model_free(self.model)
            self.model = None

    def __del__(self) -> None:
        # at interpreter shutdown the library may already be gone
        with contextlib.suppress(Exception):
            self.close()
