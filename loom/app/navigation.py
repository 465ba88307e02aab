"""What the tree shows of a node (`NodeSummary`), sibling order, and moving around the tree.

Moves read the store a level at a time (never the whole tree), so they stay cheap in huge looms.
A `Navigator` remembers, for every parent, the child the user last came from, so going down
again returns there.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from loom.config import SortOrder
from loom.store.views import NodeHeader
from loom.tokens import mean_probability

PREVIEW_CHARS = 200  # of a node's text, for one-line previews


@dataclass(frozen=True)
class NodeSummary:
    """One node as the tree pane and navigation need it: no token arrays."""

    id: int
    parent: int | None
    author: str
    preview: str
    n_children: int
    mean_logprob: float | None
    cum_logprob: float | None
    bookmarked: bool
    pruned: bool
    tags: tuple[str, ...]
    persona: str | None  # the label shown: a hand label wins over the model's
    persona_is_manual: bool
    collapse: bool = False  # the persona label marks a collapse here (path posterior jumped)
    mode_collapse: bool = False  # … or a repetition loop ending here
    # Mean entropy (nats) of the node's known token distributions: read from the token arrays,
    # so filled in only when a sort or filter needs it (None: not read, or nothing known).
    mean_entropy: float | None = None
    read: bool = True  # shown in the reading pane before (see loom.app.reading)
    model: str | None = None  # the model that wrote it (None: human-written or imported)

    @property
    def mean_prob(self) -> float | None:
        return mean_probability(self.mean_logprob)


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def summary_from_header(
    header: NodeHeader, *, read: bool = True, mean_entropy: float | None = None
) -> NodeSummary:
    """The store's NodeHeader → NodeSummary (kept in one place: the store owns the names)."""
    return NodeSummary(
        id=int(header.id),
        parent=None if header.parent is None else int(header.parent),
        author=str(header.author),
        preview=str(header.text[:PREVIEW_CHARS]),
        n_children=int(header.n_children),
        mean_logprob=_finite(header.mean_logprob),
        cum_logprob=_finite(header.sum_logprob) if header.n_logprob else None,
        bookmarked=bool(header.bookmarked),
        pruned=bool(header.pruned),
        tags=tuple(header.tags or ()),
        persona=header.label,
        persona_is_manual=header.manual_persona is not None,
        collapse=bool(header.persona is not None and header.persona.collapse),
        mode_collapse=bool(header.persona is not None and header.persona.mode_collapse),
        mean_entropy=mean_entropy,
        read=read,
        model=header.model,
    )


def sort_key(node: NodeSummary, order: SortOrder) -> float | None:
    """What `order` sorts by, smaller first (None: the node has no such number)."""
    if order == "mean":
        return None if node.mean_logprob is None else -node.mean_logprob
    if order == "cumulative":
        return None if node.cum_logprob is None else -node.cum_logprob
    if order == "entropy":
        return node.mean_entropy
    return None


def shuffle_rank(node_id: int, seed: int) -> int:
    """A node's place in a fixed shuffle: the same for a seed, unrelated to id order."""
    return zlib.crc32(f"{seed}:{node_id}".encode())


def sort_children(
    children: list[NodeSummary], order: SortOrder, seed: int = 0
) -> list[NodeSummary]:
    """Siblings in display order. Nodes without the number (human text has no logprob or
    entropy) sort after the others, stably. "shuffled" is a fixed shuffle for `seed`."""
    if order == "created":
        return children
    if order == "shuffled":
        return sorted(children, key=lambda c: shuffle_rank(c.id, seed))
    known = [c for c in children if sort_key(c, order) is not None]
    unknown = [c for c in children if sort_key(c, order) is None]
    return sorted(known, key=lambda c: sort_key(c, order) or 0.0) + unknown


@dataclass(frozen=True)
class View:
    """Which children count as the tree's: their order and whether pruned ones show."""

    order: SortOrder = "created"
    include_pruned: bool = False
    seed: int = 0  # of the "shuffled" order
    entropy: bool = False  # read each child's mean entropy (a filter needs it)

    @property
    def needs_entropy(self) -> bool:
        return self.entropy or self.order == "entropy"


class TreeReader(Protocol):
    """What moving around needs to read (a Session is one)."""

    def summary(self, node_id: int) -> NodeSummary: ...

    def children(self, node_id: int, view: View) -> list[NodeSummary]: ...

    def bookmarks(self) -> list[int]: ...


@dataclass
class Navigator:
    tree: TreeReader
    last_child: dict[int, int] = field(default_factory=dict)  # parent → child last visited

    def visited(self, path_ids: Sequence[int]) -> None:
        """The user is at the end of `path_ids` (root first): remember the way down."""
        self.last_child.update(itertools.pairwise(path_ids))

    def parent_of(self, node_id: int) -> int | None:
        return self.tree.summary(node_id).parent

    def child_of(self, node_id: int, view: View) -> int | None:
        """The child last visited from `node_id`, else its first child in display order."""
        kids = self.tree.children(node_id, view)
        remembered = self.last_child.get(node_id)
        if remembered is not None and any(k.id == remembered for k in kids):
            return remembered
        return kids[0].id if kids else None

    def sibling_of(self, node_id: int, step: int, view: View) -> int | None:
        parent = self.parent_of(node_id)
        if parent is None:
            return None
        ids = [k.id for k in self.tree.children(parent, view)]
        if node_id not in ids:
            return ids[0] if ids else None
        pos = ids.index(node_id) + step
        return ids[pos] if 0 <= pos < len(ids) else None

    def leaf_of(self, node_id: int, step: int, view: View, top: int | None = None) -> int | None:
        """The next (step=1) or previous (step=-1) leaf in depth-first display order: from the
        nearest node that has a sibling that way, descend to its edge leaf. With `top` (a
        hoisted node) the walk stays in its subtree."""
        if step > 0:
            kids = self.tree.children(node_id, view)
            if kids:
                return self._edge_leaf(kids[0].id, first=True, view=view)
        node: int | None = node_id
        while node is not None and node != top:
            sibling = self.sibling_of(node, step, view)
            if sibling is not None:
                return self._edge_leaf(sibling, first=step > 0, view=view)
            node = self.parent_of(node)
        return None

    def _edge_leaf(self, node_id: int, *, first: bool, view: View) -> int:
        while True:
            kids = self.tree.children(node_id, view)
            if not kids:
                return node_id
            node_id = kids[0].id if first else kids[-1].id

    def bookmark_after(self, node_id: int, step: int, marks: list[int] | None = None) -> int | None:
        """The next (or previous) bookmark, round the loom's (or `marks`, the ones in view)."""
        marks = self.tree.bookmarks() if marks is None else marks
        if not marks:
            return None
        if node_id in marks:
            return marks[(marks.index(node_id) + step) % len(marks)]
        return marks[0] if step > 0 else marks[-1]
