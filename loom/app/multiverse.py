"""The block multiverse: the tree of the most likely next tokens, a few steps deep, from one place.

Each expansion is one greedy one-token generation after the prefix and the path to the block:
the engine reports the raw top-k there, which is exactly the block's children. A chosen path
becomes one model-written node whose tokens carry the probabilities the model gave them.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from loom.engine.backend import Backend
from loom.engine.sampling import SamplerSettings
from loom.tokens import TokenArray, TopAlternative


@dataclass
class MultiverseNode:
    """One token in the block multiverse. `prob` is conditional on the parent, `joint` on the
    position the multiverse starts from; `alternatives` is the model's top-k after this token
    (what its children are), `entropy` the entropy of that next-token distribution."""

    token_id: int | None  # None for the root (the current position itself)
    text: str
    logprob: float
    joint_logprob: float
    alternatives: list[TopAlternative] = field(default_factory=list)
    entropy: float = math.nan
    children: list[MultiverseNode] = field(default_factory=list)

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)

    @property
    def joint(self) -> float:
        return math.exp(self.joint_logprob)


def build_multiverse(
    backend: Backend,
    prefix_ids: Sequence[int],
    depth: int,
    width: int,
    *,
    cancel: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MultiverseNode:
    """The tree of the `width` most likely tokens, `depth` steps deep (a worker's job)."""
    greedy = SamplerSettings(temperature=0.0, max_tokens=1)
    root = MultiverseNode(None, "", 0.0, 0.0)
    frontier: list[tuple[MultiverseNode, list[int]]] = [(root, [])]
    total = sum(width**d for d in range(depth))
    done = 0
    for level in range(depth):
        next_frontier: list[tuple[MultiverseNode, list[int]]] = []
        for node, path in frontier:
            if cancel is not None and cancel.is_set():
                return root
            (branch,) = backend.generate([*prefix_ids, *path], 1, greedy, top_logprobs=width)
            tokens = branch.tokens
            node.alternatives = tokens.top(0)[:width] if len(tokens) else []
            if tokens.entropy is not None and len(tokens):
                node.entropy = float(tokens.entropy[0])
            for alt in node.alternatives:
                child = MultiverseNode(
                    alt.id, alt.text, alt.logprob, node.joint_logprob + alt.logprob
                )
                node.children.append(child)
                if level + 1 < depth:
                    next_frontier.append((child, [*path, alt.id]))
            done += 1
            if progress is not None:
                progress(done, total)
        frontier = next_frontier
    return root


def path_tokens_of(path: Sequence[MultiverseNode], parent_alts: list[TopAlternative]) -> TokenArray:
    """The TokenArray for a chosen multiverse path: each token with its logprob and the top-k
    the model weighed at its position (the previous node's alternatives)."""
    k = max([len(parent_alts)] + [len(n.alternatives) for n in path[:-1]])
    ids = np.asarray([n.token_id for n in path], dtype=np.int32)
    top_ids = np.zeros((len(path), k), dtype=np.int32)
    top_lps = np.full((len(path), k), np.nan, dtype=np.float32)
    top_texts: dict[int, str] = {}
    entropy = np.full(len(path), np.nan, dtype=np.float32)
    alts = parent_alts
    previous_entropy = math.nan
    for row, node in enumerate(path):
        for col, alt in enumerate(alts):
            top_ids[row, col] = alt.id
            top_lps[row, col] = alt.logprob
            top_texts[alt.id] = alt.text
        entropy[row] = previous_entropy
        alts = node.alternatives
        previous_entropy = node.entropy
    return TokenArray(
        ids=ids,
        texts=[n.text for n in path],
        logprobs=np.asarray([n.logprob for n in path], dtype=np.float32),
        top_ids=top_ids,
        top_logprobs=top_lps,
        top_texts=top_texts,
        entropy=entropy,
    )
