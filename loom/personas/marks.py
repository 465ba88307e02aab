"""The two near-absorbing states of the seed essay, as marks on nodes.

* collapse: the path posterior over personas jumps at a node (a waluigi declaring itself).
* mode collapse: the path has fallen into a repetition loop at the node's tail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from loom.store.model import NodeId

DEFAULT_COLLAPSE_THRESHOLD = 0.5
MAX_PERIOD = 32
MIN_REPEATS = 3
# Three copies of a 1-token "gram" ("!!!", "\n\n\n") is punctuation, not a trap: also demand
# that the repeated stretch spans a minimum number of tokens.
MIN_SPAN = 12

MarkKind = Literal["collapse", "mode_collapse"]


@dataclass(frozen=True)
class CollapseMark:
    node_id: NodeId
    kind: MarkKind
    # collapse: the persona whose probability rose most, and the shift max |Δp| (0..1)
    persona: str | None = None
    delta: float = 0.0
    # mode collapse: the loop's period in tokens, how many copies, and how many tokens it covers
    period: int = 0
    repeats: int = 0
    span: int = 0


def collapse_mark(
    node_id: NodeId,
    before: Mapping[str, float],
    after: Mapping[str, float],
    threshold: float = DEFAULT_COLLAPSE_THRESHOLD,
) -> CollapseMark | None:
    """A mark when max over personas of |Δp| between parent and node exceeds `threshold`."""
    names = list(after)
    if not names:
        return None
    deltas = {n: after[n] - before.get(n, 0.0) for n in names}
    worst = max(abs(d) for d in deltas.values())
    if worst <= threshold:
        return None
    risen = max(names, key=lambda n: deltas[n])
    return CollapseMark(node_id=node_id, kind="collapse", persona=risen, delta=worst)


@dataclass(frozen=True)
class Repetition:
    period: int
    repeats: int  # whole copies, counting the first
    span: int  # tokens from the start of the first copy to the end of the sequence


def find_tail_repetition(
    token_ids: Sequence[int] | npt.NDArray[np.integer],
    *,
    max_period: int = MAX_PERIOD,
    min_repeats: int = MIN_REPEATS,
    min_span: int = MIN_SPAN,
) -> Repetition | None:
    """The loop the sequence ends in, if any.

    Rule: for each period p ≤ max_period, the periodic suffix is the longest tail where every
    token equals the token p positions earlier; its span is that run + p (the first copy). A loop
    is a period whose span holds ≥ min_repeats whole copies and ≥ min_span tokens. The smallest
    such period wins ("ab ab ab ab" is period 2, not 4).
    """
    ids = np.asarray(token_ids, dtype=np.int64)
    n = int(ids.size)
    for p in range(1, min(max_period, n // max(min_repeats, 1)) + 1):
        same = ids[p:] == ids[:-p]
        # length of the trailing run of True in `same`
        misses = np.flatnonzero(~same)
        run = int(same.size if misses.size == 0 else same.size - 1 - misses[-1])
        span = run + p
        repeats = span // p
        if repeats >= min_repeats and span >= min_span:
            return Repetition(period=p, repeats=repeats, span=span)
    return None


def mode_collapse_mark(
    node_id: NodeId,
    path_ids: Sequence[int] | npt.NDArray[np.integer],
    node_len: int,
    **rule: int,
) -> CollapseMark | None:
    """A mark when the path (root..node, token ids) ends in a loop that reaches into the node.

    The loop must cover the node's tail: it is a suffix of the path by construction, and it must
    include at least one of the node's own tokens, so a node that breaks a loop is not marked.
    """
    if node_len <= 0:
        return None
    rep = find_tail_repetition(path_ids, **rule)
    if rep is None:
        return None
    return CollapseMark(
        node_id=node_id, kind="mode_collapse", period=rep.period, repeats=rep.repeats, span=rep.span
    )
