"""Scoring branches against personas with the model itself.

For persona p with description d, the likelihood of a branch is the model's probability of the
branch's tokens after `frame(d) + path context`. Siblings share that prefix, so each persona is
one engine call over all siblings (prefix decoded once). The null hypothesis — the same context
with no description — is what the branch was generated from: its per-token logprobs are usually
stored on the node already and cost nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from loom.engine.backend import Backend
from loom.personas.bayes import (
    FloatArray,
    as_log_prior,
    fit_prior_matching_bias,
    posterior,
    token_contributions,
    token_spread,
)
from loom.personas.sets import PersonaSet

Calibration = Literal["none", "prior"]
DEFAULT_CALIBRATION: Calibration = "prior"
DEFAULT_EVIDENCE_TOKENS = 5


@dataclass(frozen=True)
class TokenEvidence:
    """One token that moved the posterior: it was likelier under `favours` than `against`."""

    index: int  # position in the node's tokens
    text: str
    favours: str
    against: str
    llr: float  # log P(token | favours) - log P(token | against), nats; inf if `against` can't
    logprobs: dict[str, float]


@dataclass
class BranchLogliks:
    """Per-token log-probabilities of one branch under each persona (and the null)."""

    token_logprobs: FloatArray  # [T, P]
    null_logprobs: FloatArray  # [T]; NaN where unknown

    @property
    def n_tokens(self) -> int:
        return int(self.token_logprobs.shape[0])

    @property
    def loglik(self) -> FloatArray:
        return np.asarray(self.token_logprobs.sum(axis=0), dtype=np.float64)


@dataclass
class PersonaScore:
    names: tuple[str, ...]
    posterior: dict[str, float]  # calibrated: what labels use
    raw_posterior: dict[str, float]  # prior × likelihood, no calibration
    loglik: dict[str, float]  # raw log-likelihood of the node's tokens per persona (nats)
    # mean per-token log P(token | description + context) - log P(token | context): how much the
    # description explains this text beyond the context alone (NaN if the null is unknown)
    pmi: dict[str, float]
    evidence: list[TokenEvidence]
    n_tokens: int
    bias: dict[str, float]  # the calibration bias used (nats per token)
    token_logprobs: FloatArray = field(repr=False)

    def best(self) -> tuple[str, float]:
        name = max(self.posterior, key=lambda n: self.posterior[n])
        return name, self.posterior[name]

    def label(self, threshold: float) -> str | None:
        """The argmax persona if its posterior reaches `threshold`, else None (undecided)."""
        name, p = self.best()
        return name if p >= threshold else None

    def calibrated_loglik(self) -> dict[str, float]:
        return {n: self.loglik[n] - self.n_tokens * self.bias[n] for n in self.names}


class PersonaScorer:
    """Scores groups of sibling branches against a persona set with a `Backend`."""

    def __init__(
        self,
        engine: Backend,
        persona_set: PersonaSet,
        *,
        calibration: Calibration = DEFAULT_CALIBRATION,
        evidence_tokens: int = DEFAULT_EVIDENCE_TOKENS,
    ) -> None:
        if calibration not in ("none", "prior"):
            raise ValueError(f"unknown calibration {calibration!r}")
        self.engine = engine
        self.persona_set = persona_set
        self.names = tuple(persona_set.names)
        self.log_prior = as_log_prior([p.prior for p in persona_set.personas])
        self.calibration: Calibration = calibration
        self.evidence_tokens = evidence_tokens
        self._frames = [
            engine.tokenize(persona_set.frame(p.description)) for p in persona_set.personas
        ]
        self.engine_calls = 0

    # -- engine side -------------------------------------------------------------------------

    def logliks(
        self,
        context_ids: Sequence[int],
        branches: Sequence[Sequence[int]],
        null: Sequence[npt.ArrayLike | None] | None = None,
    ) -> list[BranchLogliks]:
        """Per-token logprobs of sibling `branches` after `context_ids`, under every persona.

        `null[i]`, when given and fully known, is branch i's logprobs under the bare context (the
        node's stored logprobs); otherwise the null is scored too, in one more call.
        """
        conts = [[int(t) for t in b] for b in branches]
        if not conts:
            return []
        context = [int(t) for t in context_ids]
        per_persona = [
            self._score(self._prefix(frame, context, conts), conts) for frame in self._frames
        ]
        nulls = _known_nulls(null, conts)
        if nulls is None:
            scored = self._score(self._prefix([], context, conts), conts)
            nulls = [np.asarray(a, dtype=np.float64) for a in scored]
        out = []
        for i, cont in enumerate(conts):
            cols = [np.asarray(per_persona[p][i], dtype=np.float64) for p in range(len(self.names))]
            matrix = np.stack(cols, axis=1) if cont else np.zeros((0, len(self.names)))
            out.append(BranchLogliks(token_logprobs=matrix, null_logprobs=nulls[i]))
        return out

    def _prefix(self, frame: list[int], context: list[int], conts: list[list[int]]) -> list[int]:
        # Keep the whole description; drop the oldest context first if the window is too small
        # (the engine adds BOS; one slot of slack for it).
        n_ctx = getattr(self.engine, "n_ctx", None)
        if isinstance(n_ctx, int) and n_ctx > 0:
            room = n_ctx - 1 - len(frame) - max(len(c) for c in conts)
            if room < len(context):
                context = context[len(context) - max(room, 0) :]
        return frame + context

    def _score(self, prefix: list[int], conts: list[list[int]]) -> list[npt.NDArray[np.floating]]:
        self.engine_calls += 1
        return self.engine.score(prefix, conts)

    # -- arithmetic side ---------------------------------------------------------------------

    def fit_bias(self, logliks: Sequence[BranchLogliks]) -> FloatArray:
        """The calibration bias (nats per token, per persona) for a set of branches."""
        if self.calibration == "none" or not logliks:
            return np.zeros(len(self.names))
        ll = np.stack([b.loglik for b in logliks])
        n = np.array([b.n_tokens for b in logliks], dtype=np.float64)
        return fit_prior_matching_bias(self.log_prior, ll, n)

    def build(
        self, logliks: BranchLogliks, texts: Sequence[str], bias: FloatArray | None = None
    ) -> PersonaScore:
        """The plain result for one branch, given a bias fitted over its set."""
        b = np.zeros(len(self.names)) if bias is None else np.asarray(bias, dtype=np.float64)
        ll = logliks.loglik
        raw = posterior(self.log_prior, ll)
        cal = posterior(self.log_prior, ll - logliks.n_tokens * b)
        with np.errstate(invalid="ignore"):
            pmi_tokens = logliks.token_logprobs - logliks.null_logprobs[:, None]
        pmi = (
            np.nanmean(pmi_tokens, axis=0)
            if logliks.n_tokens and not np.all(np.isnan(pmi_tokens))
            else np.full(len(self.names), math.nan)
        )
        return PersonaScore(
            names=self.names,
            posterior=_named(self.names, cal),
            raw_posterior=_named(self.names, raw),
            loglik=_named(self.names, ll),
            pmi=_named(self.names, pmi),
            evidence=self.evidence(logliks.token_logprobs - b, texts),
            n_tokens=logliks.n_tokens,
            bias=_named(self.names, b),
            token_logprobs=logliks.token_logprobs,
        )

    def evidence(self, token_logprobs: FloatArray, texts: Sequence[str]) -> list[TokenEvidence]:
        """The tokens with the largest log-likelihood ratio between two personas."""
        if token_logprobs.shape[0] == 0 or len(self.names) < 2:
            return []
        spread = token_spread(token_logprobs)
        contrib = token_contributions(token_logprobs)
        order = np.argsort(-spread, kind="stable")[: self.evidence_tokens]
        out = []
        for i in order:
            row = token_logprobs[i]
            fav = int(np.argmax(contrib[i]))
            against = int(np.argmin(contrib[i]))
            out.append(
                TokenEvidence(
                    index=int(i),
                    text=texts[i] if i < len(texts) else "",
                    favours=self.names[fav],
                    against=self.names[against],
                    llr=float(spread[i]),
                    logprobs=_named(self.names, row),
                )
            )
        return out

    def score(
        self,
        context_ids: Sequence[int],
        branches: Sequence[Sequence[int]],
        texts: Sequence[Sequence[str]] | None = None,
        null: Sequence[npt.ArrayLike | None] | None = None,
    ) -> list[PersonaScore]:
        """Score sibling branches, calibrating over this set of branches."""
        logliks = self.logliks(context_ids, branches, null)
        bias = self.fit_bias(logliks)
        return [
            self.build(ll, texts[i] if texts is not None else [], bias)
            for i, ll in enumerate(logliks)
        ]


def _known_nulls(
    null: Sequence[npt.ArrayLike | None] | None, conts: list[list[int]]
) -> list[FloatArray] | None:
    """The given null logprobs as arrays, or None if any is missing or partial (then all are
    rescored, which costs one call for the whole group anyway)."""
    if null is None or len(null) != len(conts):
        return None
    out = []
    for arr, cont in zip(null, conts, strict=True):
        if arr is None:
            return None
        a = np.asarray(arr, dtype=np.float64).reshape(-1)
        if a.size != len(cont) or not np.all(np.isfinite(a)):
            return None
        out.append(a)
    return out


def _named(names: Sequence[str], values: npt.ArrayLike) -> dict[str, float]:
    return {n: float(v) for n, v in zip(names, np.asarray(values).reshape(-1), strict=True)}
