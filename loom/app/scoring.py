"""Probabilities on every token: the model reads text it did not write.

Human-written and imported nodes have tokens without probabilities: the model never read them.
Scoring runs the model over them (`Backend.read`: the batched scoring pass, with logits at every
position) and keeps, per node and per model, the tokens as that model reads them — logprob,
entropy and top-k alternatives, marked "read by the model" rather than sampled. The store keeps
them as `score` events (`Loom.add_scores`); this module decides what to read, reads it and says
which tokens a view shows for a node.

What is read: a node whose own tokens have no known logprob (human-written, imported without
probabilities) and non-empty text, unless the model already read its current text. Nodes are
read in chains — a node and the unscored child after it continue one sequence, so a whole path
of human text is one continuation after one shared prefix — and chains after the same node are
read together in one batched call (the engine decodes them as parallel sequences). A chain is cut
where it would pass half the model's context; what comes before a piece is its context, the most
recent tokens that fit.

Three steps, as for labels: `plan_scoring` reads the loom (any thread), `run_scoring` runs the
model (a worker's job; cancellable between calls), `Loom.add_scores` writes (the loom's owner).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from loom.engine.backend import Backend
from loom.engine.engine import keep_recent
from loom.store.loom import Loom
from loom.store.model import needs_reading, reading_by, shown_tokens
from loom.tokens import TokenArray

__all__ = [
    "ScorePlan",
    "ScoreRun",
    "ScoringUnavailable",
    "needs_reading",
    "node_ids_in_scope",
    "plan_scoring",
    "reading_by",
    "run_scoring",
    "shown_tokens",
]

# Part of the context a chain of read text may fill (the rest is its context).
CHAIN_SHARE = 0.5


class ScoringUnavailable(Exception):
    """Scoring cannot run (no model, a read-only loom): the message is one line for the user."""


@dataclass
class ReadingPiece:
    """Nodes read as one continuation after the path to `parent` (None: after BOS alone)."""

    parent: int | None
    nodes: list[int] = field(default_factory=list)
    ids: list[list[int]] = field(default_factory=list)  # each node's token ids
    texts: list[str] = field(default_factory=list)  # each node's text

    @property
    def n_tokens(self) -> int:
        return sum(len(i) for i in self.ids)


@dataclass
class ScorePlan:
    """What `run_scoring` will read: pieces grouped by the node they continue."""

    model: str
    model_sha256: str
    top_logprobs: int
    groups: list[tuple[list[int], list[ReadingPiece]]]  # (context ids, pieces after it)
    too_long: list[int] = field(default_factory=list)  # nodes longer than the whole context

    @property
    def n_nodes(self) -> int:
        return sum(len(p.nodes) for _ctx, pieces in self.groups for p in pieces)

    @property
    def n_tokens(self) -> int:
        return sum(p.n_tokens for _ctx, pieces in self.groups for p in pieces)


@dataclass
class ScoreRun:
    """What a scoring run read: per node its tokens as the model read them."""

    model: str
    model_sha256: str
    readings: list[tuple[int, TokenArray]]
    seconds: float
    cancelled: bool = False
    too_long: list[int] = field(default_factory=list)
    unaligned: list[int] = field(default_factory=list)  # read, but not spelling the node's text

    @property
    def n_tokens(self) -> int:
        return sum(len(t) for _node, t in self.readings)


def node_ids_in_scope(loom: Loom, node_id: int | None, *, subtree: bool = False) -> list[int]:
    """Which nodes a scoring looks at: the whole loom (None), the path from the root to a node,
    or (`subtree`) that path and everything under the node."""
    if node_id is None:
        return _below(loom, loom.root_id)
    path = [h.id for h in loom.ancestors(node_id)] + [node_id]
    return path + _below(loom, node_id)[1:] if subtree else path


def _below(loom: Loom, node_id: int) -> list[int]:
    ids, stack = [], [node_id]
    while stack:  # iterative: trees can be deep
        current = stack.pop()
        ids.append(current)
        stack.extend(h.id for h in reversed(loom.children(current)))
    return ids


def plan_scoring(
    loom: Loom,
    backend: Backend,
    node_ids: Sequence[int],
    *,
    model_sha256: str = "",
    top_logprobs: int = 5,
    again: bool = False,
) -> ScorePlan:
    """What to read among `node_ids` (parents before children): the nodes without probabilities
    the model has not read yet (`again`: read them anyway)."""
    model = str(backend.info.name)
    wanted = set(node_ids)
    depth = {h.id: h.depth for h in loom.headers(list(wanted))}
    targets = [
        node
        for node in loom.nodes(sorted(wanted, key=lambda i: (depth[i], i)))
        if needs_reading(node) and (again or reading_by(node, model, model_sha256) is None)
    ]
    n_ctx = backend.n_ctx
    budget = max(1, int(n_ctx * CHAIN_SHARE)) if n_ctx else None
    pieces: list[ReadingPiece] = []
    open_tail: dict[int, ReadingPiece] = {}  # last node of a piece -> the piece
    too_long: list[int] = []
    for node in targets:
        tokens = node.tokens if node.tokens.text == node.text else backend.tokens_for(node.text)
        ids = [int(i) for i in tokens.ids]
        if n_ctx and len(ids) > n_ctx - 1:
            too_long.append(node.id)
            continue
        piece = open_tail.pop(node.parent, None) if node.parent is not None else None
        if piece is None or (budget is not None and piece.n_tokens + len(ids) > budget):
            piece = ReadingPiece(node.parent)
            pieces.append(piece)
        piece.nodes.append(node.id)
        piece.ids.append(ids)
        piece.texts.append(node.text)
        open_tail[node.id] = piece
    by_parent: dict[int | None, list[ReadingPiece]] = {}
    for piece in pieces:
        by_parent.setdefault(piece.parent, []).append(piece)
    groups = []
    for parent, members in by_parent.items():
        context = [] if parent is None else [int(i) for i in loom.path_tokens(parent).ids]
        if n_ctx:
            longest = max(p.n_tokens for p in members)
            context = keep_recent(context, n_ctx, longest)
        groups.append((context, members))
    return ScorePlan(model, model_sha256, max(0, int(top_logprobs)), groups, too_long)


def run_scoring(
    backend: Backend,
    plan: ScorePlan,
    *,
    cancel: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ScoreRun:
    """Read the plan's pieces, one batched call per group (a worker's job). On cancel, what was
    read so far is returned (`cancelled`)."""
    started = time.perf_counter()
    readings: list[tuple[int, TokenArray]] = []
    unaligned: list[int] = []
    total, done, cancelled = plan.n_tokens, 0, False
    for context, pieces in plan.groups:
        if cancel is not None and cancel.is_set():
            cancelled = True
            break
        conts = [[t for ids in p.ids for t in ids] for p in pieces]
        for piece, read in zip(
            pieces, backend.read(context, conts, plan.top_logprobs), strict=True
        ):
            start = 0
            for node_id, ids, text in zip(piece.nodes, piece.ids, piece.texts, strict=True):
                tokens = read.slice(start, start + len(ids))
                start += len(ids)
                if tokens.text == text:
                    readings.append((node_id, tokens))
                else:  # a character split across two nodes' tokens: not this node's text alone
                    unaligned.append(node_id)
            done += piece.n_tokens
        if progress is not None:
            progress(done, total)
    return ScoreRun(
        plan.model,
        plan.model_sha256,
        readings,
        time.perf_counter() - started,
        cancelled,
        list(plan.too_long),
        unaligned,
    )
