"""TokenArray <-> the bytes the store keeps, and <-> a compact JSON form for exported events.

`TokenRow` is the canonical content of a token array (its columns as little-endian bytes, its
texts as JSON): what the digest that deduplicates token rows is computed over, and what a
loom-json version 1 event carries (`row_to_json`). The store itself keeps less (schema 2):
`pack` turns the numeric columns into one compressed blob and the texts stay out of it, since the
loom's vocabulary table holds the text of every token id once (see rows.py).

Both forms are exact: float32 bytes keep NaN (unknown logprob) and -0.0 as they were.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from loom.store import compress
from loom.tokens import TokenArray

_I4 = np.dtype("<i4")
_F4 = np.dtype("<f4")


@dataclass(frozen=True)
class TokenRow:
    """One row of the `tokens` table."""

    n: int
    k: int
    ids: bytes
    logprobs: bytes
    top_ids: bytes
    top_logprobs: bytes
    entropy: bytes | None
    texts: str  # JSON list
    top_texts: str  # JSON, see `_top_texts_json`
    sum_logprob: float | None
    n_logprob: int

    @property
    def digest(self) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        for part in (
            str(self.n).encode(),
            str(self.k).encode(),
            self.ids,
            self.logprobs,
            self.top_ids,
            self.top_logprobs,
            b"-" if self.entropy is None else self.entropy,
            self.texts.encode(),
            self.top_texts.encode(),
        ):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
        return h.digest()


def content_digest(tokens: TokenArray) -> bytes:
    """What the store deduplicates token rows by: every column and every text of `tokens`
    (16 bytes of BLAKE2b). Cheaper than `TokenRow.digest`, which is of the canonical JSON form
    (what schema-1 files keep: a row migrated from one may not be found again by this one, which
    only costs a second copy of the same tokens)."""
    n, k = len(tokens), tokens.k
    h = hashlib.blake2b(digest_size=16, person=b"loom-tokens-2")
    top_ids = sorted(tokens.top_texts)  # int keys (TokenArray's contract)
    top_texts = [tokens.top_texts[i] for i in top_ids]
    texts = list(tokens.texts)
    for part in (
        f"{n},{k},{int(tokens.entropy is not None)},{len(top_ids)}".encode(),
        np.asarray(tokens.ids, dtype=_I4).tobytes(),
        np.asarray(tokens.logprobs, dtype=_F4).tobytes(),
        np.asarray(tokens.top_ids, dtype=_I4).tobytes(),
        np.asarray(tokens.top_logprobs, dtype=_F4).tobytes(),
        b"" if tokens.entropy is None else np.asarray(tokens.entropy, dtype=_F4).tobytes(),
        np.asarray(top_ids, dtype=np.int64).tobytes(),
        # texts as their lengths and their concatenation: unambiguous, whatever they hold
        np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)).tobytes(),
        "".join(texts).encode("utf-8", "surrogatepass"),
        np.fromiter(map(len, top_texts), dtype=np.int64, count=len(top_texts)).tobytes(),
        "".join(top_texts).encode("utf-8", "surrogatepass"),
    ):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.digest()


def read_json(text: str | bytes) -> Any:
    """Stored JSON read back: by orjson (several times faster), else by `json` for what orjson
    refuses and loom's JSON may hold (lone surrogates of split characters, NaN)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


_ORJSON_STRICT = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def json_text(value: Any, *, allow_nan: bool = True, finite: bool = False) -> str:
    """ASCII-only compact JSON (what the store keeps: token texts may hold lone surrogates, bytes
    of a split UTF-8 character); NaN and infinities written as `json` writes them, or refused
    (ValueError) without `allow_nan`. orjson writes it (~10x faster) wherever its output is
    exactly that JSON; `json` writes the rest (text beyond ASCII, NaN) and raises for what cannot
    be written. `finite`: the caller has checked that `value` holds no NaN or infinity (orjson
    writes them as null), so it is not walked again."""
    try:
        out = orjson.dumps(value, option=_ORJSON_STRICT)  # raises for a foreign object
    except TypeError:  # orjson.JSONEncodeError is one
        out = b""
    # (json escapes DEL too: then its output, so equal texts keep equal JSON whichever wrote it)
    if out and out.isascii() and b"\x7f" not in out and (finite or _all_finite(value)):
        return out.decode("ascii")
    return json.dumps(value, ensure_ascii=True, allow_nan=allow_nan, separators=(",", ":"))


def _all_finite(value: Any) -> bool:
    """No NaN or infinity anywhere in `value` (which orjson would write as null)."""
    level = [value]
    while level:
        deeper: list[Any] = []
        for v in level:
            if isinstance(v, float):
                if v - v != 0.0:  # inf - inf and NaN - NaN are NaN
                    return False
            elif isinstance(v, dict):
                deeper.extend(v.values())
            elif isinstance(v, (list, tuple)):
                deeper.extend(v)
        level = deeper
    return True


def encode(tokens: TokenArray) -> TokenRow:
    n, k = len(tokens), tokens.k
    logprobs = np.asarray(tokens.logprobs, dtype=_F4)
    known = ~np.isnan(logprobs)
    n_logprob = int(known.sum())
    return TokenRow(
        n=n,
        k=k,
        ids=np.asarray(tokens.ids, dtype=_I4).tobytes(),
        logprobs=logprobs.tobytes(),
        top_ids=np.asarray(tokens.top_ids, dtype=_I4).reshape(n, k).tobytes(),
        top_logprobs=np.asarray(tokens.top_logprobs, dtype=_F4).reshape(n, k).tobytes(),
        entropy=None if tokens.entropy is None else np.asarray(tokens.entropy, _F4).tobytes(),
        texts=json_text(list(tokens.texts)),
        top_texts=_top_texts_json(tokens),
        sum_logprob=float(logprobs[known].astype(np.float64).sum()) if n_logprob else None,
        n_logprob=n_logprob,
    )


def _top_texts_json(tokens: TokenArray) -> str:
    """The texts of the alternatives: usually exactly one per distinct id in `top_ids`, stored as
    a bare list in sorted-id order (the ids are in the array already); otherwise ids and texts."""
    unique = np.unique(np.asarray(tokens.top_ids, dtype=np.int64)).tolist()
    texts = tokens.top_texts
    if len(texts) == len(unique) and all(i in texts for i in unique):
        return json_text([texts[i] for i in unique])
    ids = sorted(int(i) for i in texts)
    return json_text({"ids": ids, "texts": [texts[i] for i in ids]})


def _top_texts_from_json(data: str, top_ids: bytes, k: int) -> dict[int, str]:
    value = json.loads(data)
    if isinstance(value, dict):
        return dict(zip(value["ids"], value["texts"], strict=True))
    unique = np.unique(np.frombuffer(top_ids, dtype=_I4)).tolist() if k else []
    return dict(zip(unique, value, strict=True))


def decode(
    n: int,
    k: int,
    ids: bytes,
    logprobs: bytes,
    top_ids: bytes,
    top_logprobs: bytes,
    entropy: bytes | None,
    texts: str,
    top_texts: str,
) -> TokenArray:
    return TokenArray(
        ids=np.frombuffer(ids, dtype=_I4).astype(np.int32),
        texts=list(json.loads(texts)),
        logprobs=np.frombuffer(logprobs, dtype=_F4).astype(np.float32),
        top_ids=np.frombuffer(top_ids, dtype=_I4).astype(np.int32).reshape(n, k),
        top_logprobs=np.frombuffer(top_logprobs, dtype=_F4).astype(np.float32).reshape(n, k),
        top_texts=_top_texts_from_json(top_texts, top_ids, k),
        entropy=None if entropy is None else np.frombuffer(entropy, dtype=_F4).astype(np.float32),
    )


def decode_row(row: TokenRow) -> TokenArray:
    return decode(
        row.n,
        row.k,
        row.ids,
        row.logprobs,
        row.top_ids,
        row.top_logprobs,
        row.entropy,
        row.texts,
        row.top_texts,
    )


# --- the JSON form carried by exported events ---------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def row_to_json(row: TokenRow) -> dict[str, Any]:
    return {
        "n": row.n,
        "k": row.k,
        "ids": _b64(row.ids),
        "logprobs": _b64(row.logprobs),
        "top_ids": _b64(row.top_ids),
        "top_logprobs": _b64(row.top_logprobs),
        "entropy": None if row.entropy is None else _b64(row.entropy),
        "texts": row.texts,
        "top_texts": row.top_texts,
    }


def row_from_json(data: dict[str, Any]) -> TokenRow:
    """The inverse of `row_to_json`; ValueError on anything malformed."""
    # Re-encoded so the row is canonical (same digest as the same tokens stored directly).
    return encode(tokens_from_json(data))


def tokens_from_json(data: dict[str, Any]) -> TokenArray:
    """The tokens a `row_to_json` object holds; ValueError on anything malformed."""
    try:
        n, k = int(data["n"]), int(data["k"])
        ids = base64.b64decode(data["ids"], validate=True)
        logprobs = base64.b64decode(data["logprobs"], validate=True)
        top_ids = base64.b64decode(data["top_ids"], validate=True)
        top_logprobs = base64.b64decode(data["top_logprobs"], validate=True)
        entropy = (
            None
            if data.get("entropy") is None
            else base64.b64decode(data["entropy"], validate=True)
        )
        texts, top_texts = str(data["texts"]), str(data["top_texts"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed token data ({exc})") from None
    if n < 0 or k < 0 or len(ids) != 4 * n or len(logprobs) != 4 * n:
        raise ValueError("malformed token data (column lengths)")
    if len(top_ids) != 4 * n * k or len(top_logprobs) != 4 * n * k:
        raise ValueError("malformed token data (top-k lengths)")
    if entropy is not None and len(entropy) != 4 * n:
        raise ValueError("malformed token data (entropy length)")
    try:
        return decode(n, k, ids, logprobs, top_ids, top_logprobs, entropy, texts, top_texts)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"malformed token data ({exc})") from None


def mean_logprob(sum_logprob: float | None, n_logprob: int) -> float | None:
    if sum_logprob is None or n_logprob == 0 or math.isnan(sum_logprob):
        return None
    return sum_logprob / n_logprob


# --- the packed numeric columns the store keeps (schema 2) ----------------------------------------
#
# One blob: a flags byte, then the columns compressed (`compress`: zstd; zlib before schema 4).
# Each token's own id and logprob are usually one of its alternatives (the sampled token is in the
# top-k): then only the alternative's index is kept (`pick`, one byte), else the id and logprob
# themselves. Every 4-byte column is byte-shuffled (all first bytes, then all second bytes...) so
# the sign, exponent and high id bytes, which vary little, sit together where the compressor
# finds them. Bit-exact: logprobs compare as bits, NaN included.

_HAS_ENTROPY = 1
_HAS_PICK = 2
_NO_PICK = -1


def _shuffle(column: np.ndarray[Any, Any]) -> bytes:
    return np.ascontiguousarray(column).view(np.uint8).reshape(-1, 4).T.tobytes()


def pack(tokens: TokenArray) -> bytes:
    """The numeric columns of `tokens` as the store keeps them (texts apart: see rows.py)."""
    return compressed(packed_body(tokens.ids, tokens.logprobs, tokens.top_ids,
                                  tokens.top_logprobs, tokens.entropy))  # fmt: skip


def packed_body(
    ids: np.ndarray[Any, Any],
    logprobs: np.ndarray[Any, Any],
    top_ids: np.ndarray[Any, Any],
    top_logprobs: np.ndarray[Any, Any],
    entropy: np.ndarray[Any, Any] | None,
) -> bytes:
    """The flags byte and the columns, not yet compressed: exactly the numbers, so what a token
    row's digest is computed over (whatever the compressor's version makes of it)."""
    n = len(ids)
    k = top_ids.shape[1] if top_ids.ndim == 2 else 0
    ids = np.asarray(ids, dtype=_I4).reshape(n)
    logprobs = np.asarray(logprobs, dtype=_F4).reshape(n)
    top_ids = np.asarray(top_ids, dtype=_I4).reshape(n, k)
    top_lps = np.asarray(top_logprobs, dtype=_F4).reshape(n, k)
    flags = 0
    parts: list[bytes] = [b""]
    if 0 < k <= 127:
        same = (top_ids == ids[:, None]) & (top_lps.view(_I4) == logprobs.view(_I4)[:, None])
        found = same.any(axis=1)
        pick = np.where(found, same.argmax(axis=1), _NO_PICK).astype(np.int8)
        flags |= _HAS_PICK
        parts.append(pick.tobytes())
        if found.all():
            parts += [b"", b""]
        else:
            own = ~found
            parts += [_shuffle(ids[own]), _shuffle(logprobs[own])]
    else:
        parts += [_shuffle(ids), _shuffle(logprobs)]
    parts += [_shuffle(top_ids), _shuffle(top_lps)]
    if entropy is not None:
        flags |= _HAS_ENTROPY
        parts.append(_shuffle(np.asarray(entropy, dtype=_F4).reshape(n)))
    parts[0] = bytes([flags])
    return b"".join(parts)


def compressed(body: bytes) -> bytes:
    """A `packed_body` as the store keeps it: the flags byte, then the columns compressed."""
    return body[:1] + compress.compress(body[1:])


def unpack(
    n: int, k: int, blob: bytes
) -> tuple[
    np.ndarray[Any, Any],
    np.ndarray[Any, Any],
    np.ndarray[Any, Any],
    np.ndarray[Any, Any],
    np.ndarray[Any, Any] | None,
]:
    """(ids, logprobs, top_ids, top_logprobs, entropy) from `pack`; ValueError if malformed.
    (Every numpy call counts: an export unpacks each node once, ~50 tokens at a time.)"""
    if not blob:
        raise ValueError("empty token data")
    flags = blob[0]
    most = n + 4 * (2 * n + 2 * n * k + n)  # every column, no token picked from its top-k
    try:
        body = np.frombuffer(compress.decompress(memoryview(blob)[1:], most), dtype=np.uint8)
    except ValueError as exc:
        raise ValueError(f"token data: {exc}") from None
    pos = 0

    def take(count: int, dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
        nonlocal pos
        end = pos + 4 * count
        if end > body.size:
            raise ValueError("token data is shorter than its columns")
        out = body[pos:end].reshape(4, count).T.copy().view(dtype).reshape(count)
        pos = end
        return out

    pick: np.ndarray[Any, Any] | None = None
    n_own = n
    if flags & _HAS_PICK:
        if body.size < n:
            raise ValueError("token data is shorter than its columns")
        pick = body[:n].view(np.int8)
        pos = n
        own = pick == _NO_PICK
        n_own = int(np.count_nonzero(own))
    own_ids = take(n_own, _I4)
    own_lps = take(n_own, _F4)
    top_ids = take(n * k, _I4).reshape(n, k)
    top_lps = take(n * k, _F4).reshape(n, k)
    entropy = take(n, _F4) if flags & _HAS_ENTROPY else None
    if pos != body.size:
        raise ValueError("token data is longer than its columns")
    if pick is None or n_own == n:
        return own_ids, own_lps, top_ids, top_lps, entropy
    if int(pick.max()) >= k or int(pick.min()) < _NO_PICK:
        raise ValueError("token data picks an alternative that does not exist")
    top_bits = top_lps.view(_I4)  # logprobs are copied as bits: NaN payloads included
    if n_own == 0:  # the usual case: every token is one of its alternatives
        rows_ = np.arange(n)
        return top_ids[rows_, pick], top_bits[rows_, pick].view(_F4), top_ids, top_lps, entropy
    ids = np.empty(n, dtype=_I4)
    bits = np.empty(n, dtype=_I4)
    ids[own] = own_ids
    bits[own] = own_lps.view(_I4)
    picked = np.nonzero(~own)[0]
    ids[picked] = top_ids[picked, pick[picked]]
    bits[picked] = top_bits[picked, pick[picked]]
    return ids, bits.view(_F4), top_ids, top_lps, entropy


def assemble(
    columns: tuple[
        np.ndarray[Any, Any],
        np.ndarray[Any, Any],
        np.ndarray[Any, Any],
        np.ndarray[Any, Any],
        np.ndarray[Any, Any] | None,
    ],
    texts: list[str],
    top_texts: dict[int, str],
) -> TokenArray:
    ids, logprobs, top_ids, top_lps, entropy = columns
    return TokenArray(
        ids=ids.astype(np.int32),
        texts=texts,
        logprobs=logprobs.astype(np.float32),
        top_ids=top_ids.astype(np.int32),
        top_logprobs=top_lps.astype(np.float32),
        top_texts=top_texts,
        entropy=None if entropy is None else entropy.astype(np.float32),
    )


def summary(logprobs: np.ndarray[Any, Any]) -> tuple[float | None, int]:
    """(sum of the known logprobs, how many are known): what node headers show."""
    logprobs = np.asarray(logprobs, dtype=_F4)
    known = ~np.isnan(logprobs)
    n_logprob = int(known.sum())
    return (float(logprobs[known].astype(np.float64).sum()) if n_logprob else None), n_logprob


# --- texts against a vocabulary (the store's, or a loom-json 2 file's) -------------------------


class VocabTable:
    """A vocabulary (token id -> text) for whole token arrays at a time (a dict: for the ~50
    tokens and ~250 alternatives of a node, plain lookups beat numpy's per-call overhead)."""

    def __init__(self, entries: Mapping[int, str]) -> None:
        self.texts: dict[int, str] = dict(entries)
        self._known: np.ndarray[Any, Any] | None = None  # id -> in the table, for whole columns

    def add(self, entries: Mapping[int, str]) -> None:
        self.texts.update(entries)
        self._known = None

    def first_unknown(self, *columns: np.ndarray[Any, Any]) -> int | None:
        """The first id in `columns` the table lacks (None: it has them all)."""
        if self._known is None:
            known = np.zeros(max(self.texts, default=-1) + 2, dtype=bool)
            known[list(self.texts)] = True  # the last entry stays False: ids past the end
            self._known = known
        for column in columns:
            # as unsigned, a negative id is past the end too; `clip` sends those to the last entry
            found = self._known.take(np.asarray(column, dtype=_I4).view(np.uint32).ravel(),
                                     mode="clip")  # fmt: skip
            if not found.all():
                return int(np.asarray(column).ravel()[int(found.argmin())])
        return None

    def missing(self, ids: list[int]) -> set[int]:
        texts = self.texts
        return {i for i in ids if i not in texts}


def as_table(vocab: Mapping[int, str] | VocabTable) -> VocabTable:
    return vocab if isinstance(vocab, VocabTable) else VocabTable(vocab)


@dataclass
class TokenColumns:
    """A token array without its texts: the numeric columns, and the texts a vocabulary does not
    say (`text_exceptions`). What loom-json 2 writes of a node's tokens; the store's rows hold
    exactly this, so an export writes them without building the texts back."""

    ids: np.ndarray[Any, Any]
    logprobs: np.ndarray[Any, Any]
    top_ids: np.ndarray[Any, Any]  # n x k
    top_logprobs: np.ndarray[Any, Any]
    entropy: np.ndarray[Any, Any] | None
    own: dict[int, str]  # token index -> its text, where the vocabulary's is another
    top: dict[int, str | None]  # alternative id -> its text (None: it has none)

    @classmethod
    def of(cls, tokens: TokenArray, vocab: Mapping[int, str] | VocabTable) -> TokenColumns:
        own, top = text_exceptions(tokens, vocab)
        return cls(
            tokens.ids, tokens.logprobs, tokens.top_ids, tokens.top_logprobs, tokens.entropy,
            own, top,
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def k(self) -> int:
        """Alternatives per token (as TokenArray.k reads it: a 1-D top_ids has none)."""
        return int(self.top_ids.shape[1]) if self.top_ids.ndim == 2 else 0


def text_exceptions(
    tokens: TokenArray, vocab: Mapping[int, str] | VocabTable
) -> tuple[dict[int, str], dict[int, str | None]]:
    """What a vocabulary does not say of `tokens`: (token index -> text) for its own tokens whose
    text is another, (id -> text) for alternatives likewise or not among `top_ids` at all, and
    (id -> None) for an alternative that has no text."""
    get = as_table(vocab).texts.get
    own = {
        i: text
        for i, (token_id, text) in enumerate(zip(tokens.ids.tolist(), tokens.texts, strict=True))
        if get(token_id) != text
    }
    top_unique = set(tokens.top_ids.ravel().tolist())
    top_texts = tokens.top_texts
    top: dict[int, str | None] = {
        int(i): text
        for i, text in top_texts.items()
        if get(int(i)) != text or int(i) not in top_unique
    }
    for token_id in top_unique:
        if token_id not in top_texts:
            top[token_id] = None
    return own, top


def tokens_of(columns: TokenColumns, vocab: Mapping[int, str] | VocabTable) -> TokenArray:
    """The token array `columns` and `vocab` spell; KeyError(id) for an id the vocabulary
    lacks."""
    texts, top_texts = apply_texts(columns.ids, columns.top_ids, vocab, columns.own, columns.top)
    return assemble(
        (columns.ids, columns.logprobs, columns.top_ids, columns.top_logprobs, columns.entropy),
        texts, top_texts,
    )  # fmt: skip


def own_texts(columns: TokenColumns, vocab: Mapping[int, str] | VocabTable) -> list[str]:
    """The texts of the tokens themselves (not of their alternatives); KeyError(id) for an id
    the vocabulary lacks."""
    return _spelled(columns.ids, columns.own, as_table(vocab).texts)


def _spelled(
    ids: np.ndarray[Any, Any], own: Mapping[int, str], texts_of: dict[int, str]
) -> list[str]:
    if own:
        return [own[i] if i in own else texts_of[t] for i, t in enumerate(ids.tolist())]
    return [texts_of[t] for t in ids.tolist()]


def apply_texts(
    ids: np.ndarray[Any, Any],
    top_ids: np.ndarray[Any, Any],
    vocab: Mapping[int, str] | VocabTable,
    own: Mapping[int, str],
    top: Mapping[int, str | None],
) -> tuple[list[str], dict[int, str]]:
    """The texts `text_exceptions` described; KeyError(id) for an id the vocabulary lacks."""
    texts_of = as_table(vocab).texts
    texts = _spelled(ids, own, texts_of)
    top_texts = {
        token_id: texts_of[token_id]
        for token_id in set(top_ids.ravel().tolist())
        if token_id not in top
    }
    for token_id, extra in top.items():
        if extra is not None:
            top_texts[int(token_id)] = extra
    return texts, top_texts
