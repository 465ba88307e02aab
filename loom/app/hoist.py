"""Hoisting: showing one node's subtree as if it were the whole tree, with a breadcrumb back.

Hoists nest: hoisting inside a hoisted subtree pushes onto a stack, unhoisting pops one level
(or all of them). The stack is a view of the loom, not an edit: it is kept with the loom (the
app reopens where it was) but outside the log, so it is never undone, replayed or exported.
Inside a hoist the hoisted node is the top: moving to its parent or past its siblings is refused;
a jump to a node outside it (a search result) unhoists as many levels as it takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from loom.store.views import NodeHeader
from loom.text import one_line

VIEW_KEY = "hoist"  # the loom's view setting that keeps the stack
CRUMB_CHARS = 24  # of a node's text, in the breadcrumb


class HoistError(ValueError):
    """A node that cannot be hoisted; the message says why in one line."""


@dataclass
class Hoist:
    """The hoisted nodes, outermost first (empty: the whole tree is shown)."""

    stack: list[int] = field(default_factory=list)

    def top(self, root_id: int) -> int:
        """The node the tree shows as its root."""
        return self.stack[-1] if self.stack else root_id

    @property
    def active(self) -> bool:
        return bool(self.stack)

    def contains(self, path_ids: Sequence[int]) -> bool:
        """Whether the node at the end of `path_ids` (root first) is inside the hoist."""
        return not self.stack or self.stack[-1] in path_ids

    def push(self, path_headers: Sequence[NodeHeader]) -> None:
        """Hoist the last node of `path_headers` (its path, root first): refused for the
        current top and for a pruned node or one under a pruned node."""
        node = path_headers[-1]
        if node.parent is None:
            raise HoistError("the root is the whole tree already (Z unhoists)")
        if self.stack and self.stack[-1] == node.id:
            raise HoistError(f"node {node.id} is hoisted already (Z unhoists)")
        pruned = [h.id for h in path_headers if h.pruned]
        if pruned:
            where = "is pruned" if pruned[-1] == node.id else f"is under pruned node {pruned[0]}"
            raise HoistError(f"node {node.id} {where}: unprune it (D) to hoist it")
        self.stack.append(node.id)

    def pop(self, *, all_levels: bool = False) -> int | None:
        """Unhoist one level (or all); the node that was hoisted, None if nothing was."""
        if not self.stack:
            return None
        was = self.stack[-1]
        if all_levels:
            self.stack.clear()
        else:
            self.stack.pop()
        return was

    def widen_to(self, path_ids: Sequence[int]) -> int:
        """Unhoist until the node at the end of `path_ids` is inside; how many levels."""
        levels = 0
        while self.stack and self.stack[-1] not in path_ids:
            self.stack.pop()
            levels += 1
        return levels

    def settle(self, exists: set[int], pruned: set[int]) -> bool:
        """Drop hoisted nodes that are gone or pruned (after an undo, a prune…), and whatever
        was hoisted inside them. True if the stack changed."""
        for i, node in enumerate(self.stack):
            if node not in exists or node in pruned:
                del self.stack[i:]
                return True
        return False


def breadcrumb(path_headers: Sequence[NodeHeader]) -> str:
    """'root › #4 The cat… › #9 sat on' — the way from the root to the hoisted node."""
    parts = []
    for h in path_headers:
        name = "root" if h.parent is None else f"#{h.id} {one_line(h.text.strip(), CRUMB_CHARS)}"
        parts.append(name.rstrip())
    return " › ".join(parts)
