"""Whose tokens are these: the ids a model reads for text that another model may have written.

A loom written by two models (Gemma and SmolLM2, say) holds token ids of two vocabularies: a node's
ids belong to the model that wrote (or tokenized) it, and mean nothing to the other one. Before a
model reads a path, each node's ids are checked against that model's own vocabulary: a node whose
ids spell its text there keeps them (exact, and the KV cache can reuse them); every run of nodes
whose ids do not is re-tokenized from its text by the model that is about to read it.

The check needs the model's vocabulary, which only the in-process engine has. Other backends (a
remote server, the fake) are trusted with the stored ids, as before two models existed.
"""

from __future__ import annotations

from collections.abc import Sequence

from loom.engine.backend import Backend
from loom.tokens import TokenArray

Piece = tuple[str, TokenArray]  # a node's text and its stored tokens


def owns_tokens(backend: Backend, text: str, tokens: TokenArray) -> bool:
    """Whether `tokens` are `backend`'s own ids for `text` (they decode to it in its vocabulary).

    Empty text is owned by everyone; text without tokens, or with tokens for only a part of it,
    by no one (it must be tokenized)."""
    from loom.engine.engine import Engine

    if not text:
        return True
    if not len(tokens) or tokens.text != text:  # none yet, or only a prefix (edited text)
        return False
    if not isinstance(backend, Engine):
        return True
    ids = [int(t) for t in tokens.ids]
    if min(ids) < 0 or max(ids) >= backend.n_vocab:
        return False
    return backend.detokenize(ids) == text


def _as_own(backend: Backend, text: str, tokens: TokenArray) -> TokenArray | None:
    """`tokens` as `backend`'s tokens for `text`: themselves when they are its own; when they
    are its own for a prefix of `text` only (text edited without a model), completed with the
    rest tokenized, as the store completes such tokens; None when they are another model's."""
    if owns_tokens(backend, text, tokens):
        return tokens
    covered = tokens.text
    if len(tokens) and text.startswith(covered) and owns_tokens(backend, covered, tokens):
        return TokenArray.concat([tokens, backend.tokens_for(text[len(covered) :])])
    return None


def ids_for(backend: Backend, pieces: Sequence[Piece]) -> list[int]:
    """The token ids `backend` reads for the concatenated pieces (without BOS): each piece's own
    ids where they are `backend`'s, each run of foreign pieces re-tokenized as one text (so that
    a word split across two foreign nodes is tokenized as the model would read it)."""
    out: list[int] = []
    foreign: list[str] = []
    for text, tokens in pieces:
        own = _as_own(backend, text, tokens)
        if own is None:
            foreign.append(text)
            continue
        if foreign:
            out.extend(backend.tokenize("".join(foreign)))
            foreign = []
        out.extend(int(t) for t in own.ids)
    if foreign:
        out.extend(backend.tokenize("".join(foreign)))
    return out


def own_tokens(backend: Backend, text: str, tokens: TokenArray) -> TokenArray:
    """A node's tokens as `backend` reads them: its stored ones if they are `backend`'s (completed
    if they cover only a prefix), else its text tokenized by `backend` (without probabilities:
    that model did not write it)."""
    own = _as_own(backend, text, tokens)
    return own if own is not None else backend.tokens_for(text)
