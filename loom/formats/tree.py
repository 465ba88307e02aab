"""Tree checks and walks over a flat `LoomDocument`, all iterative (trees may be thousands deep)."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from dataclasses import replace
from typing import TypeVar

from loom.formats.errors import FormatError
from loom.store.model import LoomDocument, Node

K = TypeVar("K", bound=Hashable)


def ordered_nodes(nodes: list[Node], root: int) -> list[Node]:
    """Check that `nodes` form one tree under `root` and return them parents-before-children.

    The given order is kept when it already lists parents first (so a round trip keeps it);
    otherwise the nodes are put in pre-order, children in their given order.
    """
    by_id: dict[int, Node] = {}
    for node in nodes:
        if node.id in by_id:
            raise FormatError(f"duplicate node id {node.id}")
        by_id[node.id] = node
    if root not in by_id:
        raise FormatError(f"the root node {root} is missing")
    if by_id[root].parent is not None:
        raise FormatError(f"the root node {root} has a parent ({by_id[root].parent})")
    for node in nodes:
        if node.parent is None and node.id != root:
            raise FormatError(f"node {node.id} has no parent but is not the root ({root})")
        if node.parent is not None and node.parent not in by_id:
            raise FormatError(f"node {node.id} has a dangling parent {node.parent}")
    seen: set[int] = set()
    for node in nodes:
        if node.parent is not None and node.parent not in seen:
            break
        seen.add(node.id)
    else:
        return list(nodes)
    order = [by_id[i] for i in preorder_ids(root, children_of(nodes))]
    if len(order) < len(nodes):
        raise FormatError(f"the nodes form a cycle through node {_on_cycle(by_id, order)}")
    return order


def _on_cycle(by_id: dict[int, Node], reached: list[Node]) -> int:
    """An id on a parent cycle: walk up from an unreachable node until an id repeats."""
    reached_ids = {n.id for n in reached}
    current = next(n.id for n in by_id.values() if n.id not in reached_ids)
    walked: set[int] = set()
    while current not in walked:
        walked.add(current)
        parent = by_id[current].parent
        assert parent is not None  # every parentless node is the root, which is reached
        current = parent
    return current


def children_of(nodes: list[Node]) -> dict[int, list[int]]:
    """Child ids of every node, in the order the nodes are listed."""
    children: dict[int, list[int]] = {n.id: [] for n in nodes}
    for node in nodes:
        if node.parent is not None and node.parent in children:
            children[node.parent].append(node.id)
    return children


def preorder_ids(root: K, children: Mapping[K, list[K]]) -> list[K]:
    """Ids in depth-first pre-order (reading order). Never revisits a node."""
    out: list[K] = []
    visited: set[K] = set()
    stack = [root]
    while stack:
        node_id = stack.pop()
        if node_id in visited:
            continue
        visited.add(node_id)
        out.append(node_id)
        stack.extend(reversed(children.get(node_id, [])))
    return out


def walk(doc: LoomDocument) -> Iterator[tuple[Node, int]]:
    """(node, depth) in pre-order: the order an outline is read in."""
    by_id = {n.id: n for n in doc.nodes}
    children = children_of(doc.nodes)
    stack = [(doc.root, 0)]
    visited: set[int] = set()
    while stack:
        node_id, depth = stack.pop()
        if node_id in visited or node_id not in by_id:
            continue
        visited.add(node_id)
        yield by_id[node_id], depth
        stack.extend((child, depth + 1) for child in reversed(children[node_id]))


def depths(doc: LoomDocument) -> dict[int, int]:
    return {node.id: depth for node, depth in walk(doc)}


def path_ids(doc: LoomDocument, node_id: int) -> list[int]:
    """Ids from the root to `node_id`, root first."""
    parents = {n.id: n.parent for n in doc.nodes}
    if node_id not in parents:
        raise FormatError(f"node {node_id} is not in the document")
    path = [node_id]
    seen = {node_id}
    while (parent := parents[path[-1]]) is not None:
        if parent in seen:  # a broken document: never loop forever
            raise FormatError(
                f"node {node_id} has no path to the root (its parents form a cycle through "
                f"node {parent})"
            )
        if parent not in parents:
            raise FormatError(f"node {node_id} has no path to the root")
        seen.add(parent)
        path.append(parent)
    path.reverse()
    return path


def resolve_current(doc: LoomDocument, current: int | None) -> int | None:
    """The current node for an export: the caller's, else the one the document was read with."""
    if current is None:
        stored = doc.meta.get("current")
        current = stored if isinstance(stored, int) and not isinstance(stored, bool) else None
        if current is not None and current not in {n.id for n in doc.nodes}:
            return None
        return current
    if current not in {n.id for n in doc.nodes}:
        raise FormatError(f"the current node {current} is not in the document")
    return current


def path_document(doc: LoomDocument, current: int) -> LoomDocument:
    """Only the nodes from the root to `current` (for exports of "just this branch")."""
    keep = set(path_ids(doc, current))
    meta = dict(doc.meta)
    meta["current"] = current
    return replace(
        doc,
        nodes=[n for n in doc.nodes if n.id in keep],
        events=[],  # events describe the whole tree; replaying them on a branch is meaningless
        meta=meta,
    )
