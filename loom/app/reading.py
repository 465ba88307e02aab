"""Reading aids: filtering a node's children by a number, unread marks, blind reading.

The tree pane, `loom tree` and `loom unread` share these. A child filter hides the children
whose mean logprob, cumulative logprob or mean entropy is on the wrong side of a threshold
(children without that number — hand-written text — always stay). A node is *read* once the
reader has stopped on it or on a node below it (the reading pane shows the whole path): the
store derives that from the `visit` events of its log, so reading progress is kept in the
file, is never an undo step, and new nodes (generated, imported) start unread.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal

from loom.app.navigation import NodeSummary
from loom.text import one_line
from loom.tokens import mean_probability

Criterion = Literal["mean", "cumulative", "entropy"]
CRITERIA: tuple[Criterion, ...] = ("mean", "cumulative", "entropy")
_ALIASES: dict[str, Criterion] = {
    "mean": "mean", "p": "mean", "prob": "mean", "logprob": "mean",
    "cumulative": "cumulative", "cum": "cumulative",
    "entropy": "entropy", "h": "entropy",
}  # fmt: skip
_FILTER = re.compile(r"^\s*([a-z]+)\s*(>=|<=|>|<)\s*(-?[0-9]*\.?[0-9]+)\s*(%?)\s*$")
FILTER_SYNTAX = (
    "CRITERION OP NUMBER, e.g. 'mean >= -1.5', 'mean >= 20%', 'cumulative > -40', "
    "'entropy <= 2' (criteria: mean, cumulative, entropy; OP: >= <= > <)"
)


class FilterError(ValueError):
    """A filter expression that cannot be read; the message says what is expected."""


@dataclass(frozen=True)
class ChildFilter:
    """Keep a child when its `criterion` compares true with `threshold` (a logprob in nats for
    mean and cumulative, nats for entropy); children without the number are always kept."""

    criterion: Criterion
    op: str  # ">=", "<=", ">" or "<"
    threshold: float

    @property
    def needs_entropy(self) -> bool:
        return self.criterion == "entropy"

    def value_of(self, node: NodeSummary) -> float | None:
        if self.criterion == "mean":
            return node.mean_logprob
        if self.criterion == "cumulative":
            return node.cum_logprob
        return node.mean_entropy

    def keeps(self, node: NodeSummary) -> bool:
        value = self.value_of(node)
        if value is None:
            return True
        t = self.threshold
        return {">=": value >= t, "<=": value <= t, ">": value > t, "<": value < t}[self.op]

    def describe(self) -> str:
        """For the status bar: 'mean ≥ -1.50 (22%)'."""
        sign = {">=": "≥", "<=": "≤", ">": ">", "<": "<"}[self.op]
        text = f"{self.criterion} {sign} {self.threshold:.2f}"
        if self.criterion == "mean":
            p = mean_probability(self.threshold)
            text += f" ({100 * (p or 0.0):.0f}%)"
        return text


def parse_filter(text: str) -> ChildFilter:
    """'mean >= -1.5', 'mean >= 20%' (a mean probability), 'entropy < 2' → a ChildFilter."""
    match = _FILTER.match(text.lower())
    if match is None:
        raise FilterError(f"cannot read the filter {one_line(text, 40)!r}: write {FILTER_SYNTAX}")
    name, op, number, pct = match.groups()
    criterion = _ALIASES.get(name)
    if criterion is None:
        raise FilterError(f"unknown criterion {name!r}: use mean, cumulative or entropy")
    threshold = float(number)
    if pct:
        if criterion != "mean" or not 0 < threshold <= 100:
            raise FilterError("a percentage is a mean probability: 'mean >= 20%' (0 < p ≤ 100)")
        threshold = math.log(threshold / 100)
    elif criterion in ("mean", "cumulative") and threshold > 0:
        raise FilterError(f"a logprob is at most 0 ({criterion} {op} {number} keeps nothing)")
    elif criterion == "entropy" and threshold < 0:
        raise FilterError("an entropy is at least 0 nats")
    return ChildFilter(criterion, op, threshold)


def filter_children(children: list[NodeSummary], f: ChildFilter | None) -> list[NodeSummary]:
    return children if f is None else [c for c in children if f.keeps(c)]


# ----------------------------------------------------------------- unread nodes

Children = Callable[[int], list[NodeSummary]]  # a node's children as the view shows them


def next_unread(
    start: int,
    top: int,
    path_ids: list[int],
    with_unread: Collection[int],
    unread: Collection[int],
    children: Children,
) -> int | None:
    """The first unread node after `start` in depth-first display order within `top`'s
    subtree, wrapping round to the first one; None when there is none but `start`.

    `path_ids` is the path from `top` down to `start`; `with_unread` holds every unread node and
    its ancestors, so the walk only enters subtrees that lead to one (a few reads per level,
    whatever the size of the tree)."""

    def first_in(node_id: int) -> int | None:
        # Pre-order (a node before what is below it), iterative: trees can be deep.
        stack = [node_id]
        while stack:
            here = stack.pop()
            if here in unread and here != start:
                return here
            kids = [k.id for k in children(here) if k.id in with_unread]
            stack.extend(reversed(kids))
        return None

    # Below `start`, then after each node of the path among its siblings, going up.
    for kid in children(start):
        if kid.id in with_unread and (found := first_in(kid.id)) is not None:
            return found
    chain = path_ids[path_ids.index(top) :] if top in path_ids else [top]
    for parent, node in zip(reversed(chain[:-1]), reversed(chain[1:]), strict=True):
        ids = [k.id for k in children(parent)]
        after = ids[ids.index(node) + 1 :] if node in ids else ids
        for sibling in after:
            if sibling in with_unread and (found := first_in(sibling)) is not None:
                return found
    return first_in(top)  # wrap round


# ----------------------------------------------------------------- the tree as lines


@dataclass(frozen=True)
class TreeLine:
    depth: int  # below the top node (the top is 0)
    node: NodeSummary


def tree_lines(
    top: NodeSummary, children: Children, max_depth: int | None = None
) -> list[TreeLine]:
    """`top` and what is below it, depth first in display order (`children` sorts and filters),
    down to `max_depth` levels. Iterative: trees can be deep."""
    out: list[TreeLine] = []
    stack = [TreeLine(0, top)]
    while stack:
        line = stack.pop()
        out.append(line)
        if line.node.n_children and (max_depth is None or line.depth < max_depth):
            kids = children(line.node.id)
            stack.extend(TreeLine(line.depth + 1, k) for k in reversed(kids))
    return out


def line_json(line: TreeLine, *, blind: bool = False) -> dict[str, object]:
    """One node of `loom tree --json`; blind: nothing of probabilities, entropy or personas."""
    n = line.node
    data: dict[str, object] = {
        "id": n.id, "parent": n.parent, "depth": line.depth, "author": n.author,
        "read": n.read, "bookmarked": n.bookmarked, "pruned": n.pruned, "tags": list(n.tags),
        "text": n.preview,
    }  # fmt: skip
    if not blind:
        data.update(
            mean_logprob=n.mean_logprob, cum_logprob=n.cum_logprob,
            mean_entropy=n.mean_entropy, persona=n.persona,
        )  # fmt: skip
    return data


def line_text(line: TreeLine, *, blind: bool = False) -> str:
    """One node of `loom tree`: '  #5  17% H3.08 • [luigi] ★ text'."""
    n = line.node
    parts = ["  " * line.depth + f"#{n.id}"]
    if not blind:
        p = n.mean_prob
        parts.append("   ✎" if p is None else f"{100 * p:3.0f}%")
        if n.mean_entropy is not None:
            parts.append(f"H{n.mean_entropy:.2f}")
    if not n.read:
        parts.append("•")
    if n.persona and not blind:
        parts.append(f"[{n.persona}{'*' if n.persona_is_manual else ''}]")
    if n.bookmarked:
        parts.append("★")
    if n.pruned:
        parts.append("(pruned)")
    parts.extend(f"#{t}" for t in n.tags[:3])
    parts.append(one_line(n.preview.strip(), 60) or "∅")
    return " ".join(parts)
