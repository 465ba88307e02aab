"""Per-token data shared by the engine (which produces it) and the store (which keeps it).

Neither side imports the other: both speak `TokenArray`. This module also holds loom's one
definition of a span's probability: the mean of the known token logprobs, and the "mean
probability" exp(mean logprob) — the geometric mean of the tokens' p — that every view shows
(tree, reading pane, DOT, SVG, HTML).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Int32Array = npt.NDArray[np.int32]
Float32Array = npt.NDArray[np.float32]


def known_logprobs(logprobs: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The logprobs that are known (NaN marks a token the model never scored)."""
    values = np.asarray(logprobs, dtype=np.float64)
    return values[~np.isnan(values)]


def mean_logprob(logprobs: npt.ArrayLike) -> float | None:
    """The mean of the known logprobs, None if none is known."""
    known = known_logprobs(logprobs)
    return float(known.mean()) if known.size else None


def cumulative_logprob(logprobs: npt.ArrayLike) -> float | None:
    """The sum of the known logprobs (the log-probability of the span), None if none is known."""
    known = known_logprobs(logprobs)
    return float(known.sum()) if known.size else None


def mean_probability(mean: float | None) -> float | None:
    """The "mean probability" of a span with mean logprob `mean`: exp(mean), the geometric mean
    of its tokens' probabilities."""
    return None if mean is None or math.isnan(mean) else math.exp(mean)


@dataclass(frozen=True)
class TopAlternative:
    id: int
    text: str
    logprob: float


@dataclass
class TokenArray:
    """The tokens of one node, column-wise.

    `logprobs` and `entropy` hold NaN where unknown (human-written tokens). `logprob` is under the
    model's raw distribution (softmax of the logits at temperature 1, before any truncation);
    `top_ids`/`top_logprobs` are the k most likely tokens there, most likely first (k may be 0).
    `top_texts` maps every id in `top_ids` to its text.
    """

    ids: Int32Array
    texts: list[str]
    logprobs: Float32Array
    top_ids: Int32Array
    top_logprobs: Float32Array
    top_texts: dict[int, str] = field(default_factory=dict)
    entropy: Float32Array | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(self.texts) != n or len(self.logprobs) != n:
            raise ValueError("token columns differ in length")
        if self.top_ids.shape != self.top_logprobs.shape or self.top_ids.shape[0] != n:
            raise ValueError("top-k columns do not match the token count")
        if self.entropy is not None and len(self.entropy) != n:
            raise ValueError("entropy column does not match the token count")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def k(self) -> int:
        return int(self.top_ids.shape[1]) if self.top_ids.ndim == 2 else 0

    @property
    def text(self) -> str:
        return "".join(self.texts)

    @classmethod
    def empty(cls) -> TokenArray:
        return cls.from_ids([], [])

    @classmethod
    def from_ids(cls, ids: list[int], texts: list[str]) -> TokenArray:
        """Tokens with no probabilities (human-written text, tokenized on entry)."""
        n = len(ids)
        return cls(
            ids=np.asarray(ids, dtype=np.int32).reshape(n),
            texts=list(texts),
            logprobs=np.full(n, np.nan, dtype=np.float32),
            top_ids=np.zeros((n, 0), dtype=np.int32),
            top_logprobs=np.zeros((n, 0), dtype=np.float32),
        )

    def slice(self, start: int, stop: int) -> TokenArray:
        used = {int(i) for i in self.top_ids[start:stop].ravel()}
        return TokenArray(
            ids=self.ids[start:stop].copy(),
            texts=self.texts[start:stop],
            logprobs=self.logprobs[start:stop].copy(),
            top_ids=self.top_ids[start:stop].copy(),
            top_logprobs=self.top_logprobs[start:stop].copy(),
            top_texts={i: t for i, t in self.top_texts.items() if i in used},
            entropy=None if self.entropy is None else self.entropy[start:stop].copy(),
        )

    @staticmethod
    def concat(parts: list[TokenArray]) -> TokenArray:
        if not parts:
            return TokenArray.empty()
        k = max(p.k for p in parts)
        top_ids = [_pad_top(p.top_ids, k, 0) for p in parts]
        top_lps = [_pad_top(p.top_logprobs, k, np.nan) for p in parts]
        texts: dict[int, str] = {}
        for p in parts:
            texts.update(p.top_texts)
        has_entropy = any(p.entropy is not None for p in parts)
        return TokenArray(
            ids=np.concatenate([p.ids for p in parts]).astype(np.int32),
            texts=[t for p in parts for t in p.texts],
            logprobs=np.concatenate([p.logprobs for p in parts]).astype(np.float32),
            top_ids=np.concatenate(top_ids).astype(np.int32),
            top_logprobs=np.concatenate(top_lps).astype(np.float32),
            top_texts=texts,
            entropy=(
                np.concatenate(
                    [p.entropy if p.entropy is not None else np.full(len(p), np.nan) for p in parts]
                ).astype(np.float32)
                if has_entropy
                else None
            ),
        )

    def top(self, index: int) -> list[TopAlternative]:
        """The alternatives the model weighed at token `index` (NaN padding dropped)."""
        return [
            TopAlternative(int(i), self.top_texts.get(int(i), ""), float(lp))
            for i, lp in zip(self.top_ids[index], self.top_logprobs[index], strict=True)
            if not math.isnan(float(lp))
        ]

    def to_json(self) -> list[dict[str, Any]]:
        """The `tokens` list of a loom-json node (docs/user-guide.md), with `entropy` if known."""
        # Column-wise conversion with tolist(): per-element numpy scalar access dominates export
        # time on large looms otherwise.
        ids = self.ids.tolist()
        logprobs = self.logprobs.tolist()
        top_ids = self.top_ids.tolist()
        top_lps = self.top_logprobs.tolist()
        entropy = self.entropy.tolist() if self.entropy is not None else None
        top_texts = self.top_texts
        out: list[dict[str, Any]] = []
        for i, token_id in enumerate(ids):
            lp = logprobs[i]
            entry: dict[str, Any] = {
                "id": token_id,
                "text": self.texts[i],
                "logprob": None if lp != lp else lp,  # NaN marks an unknown logprob
                "top": [
                    {"id": a, "text": top_texts.get(a, ""), "logprob": alp}
                    for a, alp in zip(top_ids[i], top_lps[i], strict=True)
                    if alp == alp
                ],
            }
            if entropy is not None and entropy[i] == entropy[i]:
                entry["entropy"] = entropy[i]
            out.append(entry)
        return out

    @classmethod
    def from_json(cls, tokens: list[dict[str, Any]]) -> TokenArray:
        n = len(tokens)
        k = max((len(t.get("top") or []) for t in tokens), default=0)
        top_ids = np.zeros((n, k), dtype=np.int32)
        top_lps = np.full((n, k), np.nan, dtype=np.float32)
        top_texts: dict[int, str] = {}
        entropy = np.full(n, np.nan, dtype=np.float32)
        for row, tok in enumerate(tokens):
            for col, alt in enumerate(tok.get("top") or []):
                top_ids[row, col] = int(alt["id"])
                top_lps[row, col] = float(alt["logprob"])
                top_texts[int(alt["id"])] = str(alt.get("text", ""))
            if tok.get("entropy") is not None:
                entropy[row] = float(tok["entropy"])
        return cls(
            ids=np.asarray([int(t["id"]) for t in tokens], dtype=np.int32).reshape(n),
            texts=[str(t.get("text", "")) for t in tokens],
            logprobs=np.asarray(
                [np.nan if t.get("logprob") is None else float(t["logprob"]) for t in tokens],
                dtype=np.float32,
            ).reshape(n),
            top_ids=top_ids,
            top_logprobs=top_lps,
            top_texts=top_texts,
            entropy=entropy if not np.all(np.isnan(entropy)) else None,
        )


def _pad_top(a: npt.NDArray[Any], k: int, fill: float) -> npt.NDArray[Any]:
    if a.ndim == 2 and a.shape[1] == k:
        return a
    out = np.full((a.shape[0], k), fill, dtype=a.dtype)
    if a.ndim == 2 and a.shape[1]:
        out[:, : a.shape[1]] = a
    return out
