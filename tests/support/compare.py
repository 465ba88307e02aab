"""Field-by-field comparison of two documents, for round-trip checks (formats and the store).

`Node ==` cannot be used: token columns are numpy arrays, and NaN (an unknown logprob) never
equals itself. Tokens compare by what they mean: ids, texts, logprobs (NaN equal to NaN), the
alternatives of every token, and entropy (an all-NaN column equal to none).
"""

from __future__ import annotations

import numpy as np

from loom.store.model import LoomDocument, Node
from loom.tokens import TokenArray


def differences(
    a: LoomDocument, b: LoomDocument, *, ignore_meta: tuple[str, ...] = ()
) -> list[str]:
    """Every way `b` differs from `a`, one line each; empty when they are the same loom."""
    out: list[str] = []
    for name in ("title", "root", "personas", "events"):
        if getattr(a, name) != getattr(b, name):
            out.append(f"{name} differs")
    meta_a = {k: v for k, v in a.meta.items() if k not in ignore_meta}
    meta_b = {k: v for k, v in b.meta.items() if k not in ignore_meta}
    if meta_a != meta_b:
        out.append(f"meta differs: {sorted(meta_a)} vs {sorted(meta_b)}")
    if [n.id for n in a.nodes] != [n.id for n in b.nodes]:
        out.append("node ids or their order differ")
    b_nodes = {n.id: n for n in b.nodes}
    for node in a.nodes:
        other = b_nodes.get(node.id)
        if other is None:
            continue
        out.extend(f"node {node.id}: {d}" for d in node_differences(node, other))
    return out


def node_differences(a: Node, b: Node) -> list[str]:
    out = []
    for name in (
        "parent",
        "author",
        "text",
        "created_at",
        "generation",
        "persona",
        "manual_persona",
        "bookmarked",
        "pruned",
        "tags",
        "meta",
    ):
        if getattr(a, name) != getattr(b, name):
            out.append(f"{name} differs")
    out.extend(token_differences(a.tokens, b.tokens))
    return out


def token_differences(a: TokenArray, b: TokenArray) -> list[str]:
    if len(a) != len(b):
        return [f"token count {len(a)} vs {len(b)}"]
    out = []
    if not np.array_equal(a.ids, b.ids):
        out.append("token ids differ")
    if a.texts != b.texts:
        out.append("token texts differ")
    if not np.array_equal(a.logprobs, b.logprobs, equal_nan=True):
        out.append("logprobs differ")
    if any(a.top(i) != b.top(i) for i in range(len(a))):
        out.append("top alternatives differ")
    nan = np.full(len(a), np.nan, dtype=np.float32)
    ent_a = nan if a.entropy is None else a.entropy
    ent_b = nan if b.entropy is None else b.entropy
    if not np.array_equal(ent_a, ent_b, equal_nan=True):
        out.append("entropy differs")
    return out
