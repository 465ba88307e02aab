"""A model's tokenizer without its weights, for the store (human text is tokenized on entry).

llama.cpp can load only the vocabulary of a GGUF (`vocab_only`): about a tenth of a second for the
default model against a full load, and no weights in memory. The store's Tokenizer protocol asks
for `tokenize(text) -> TokenArray` (no BOS, no probabilities).
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from loom.engine.errors import ModelError
from loom.engine.gguf import read_header
from loom.engine.runtime import L as _L
from loom.engine.runtime import (
    Vocab,
    clear_llama_errors,
    last_llama_error,
    limit_blas_threads,
    silence_llama_logs,
)
from loom.engine.text import stream_texts
from loom.tokens import TokenArray


class VocabTokenizer:
    """Tokenizes like the engine does (`Engine.tokens_for`), from a vocabulary-only load."""

    def __init__(self, path: Path) -> None:
        read_header(path)  # missing / not GGUF / truncated: a clear ModelError before llama.cpp
        silence_llama_logs()
        limit_blas_threads()
        params = _L.llama_model_default_params()
        params.vocab_only = True
        clear_llama_errors()
        model = _L.llama_model_load_from_file(str(path).encode("utf-8"), params)
        if not model:
            why = last_llama_error() or "unsupported or corrupt model"
            raise ModelError(f"llama.cpp cannot load the vocabulary of {path.name}: {why}")
        self._model = model
        self._vocab = Vocab(_L.llama_model_get_vocab(model))
        self._lock = threading.Lock()
        self.path = path

    def ids(self, text: str) -> list[int]:
        with self._lock:
            return self._vocab.tokenize(text, add_special=False)

    def tokenize(self, text: str) -> TokenArray:
        with self._lock:
            ids = self._vocab.tokenize(text, add_special=False)
            return TokenArray.from_ids(ids, stream_texts(self._vocab.pieces(ids)))

    def close(self) -> None:
        if self._model:
            _L.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: the library may be gone
            self.close()


def load_tokenizer(path: str | Path) -> VocabTokenizer:
    """The tokenizer of the GGUF at `path` (ModelError if it cannot be read)."""
    return VocabTokenizer(Path(path).expanduser())
