"""Shared builders for the format tests: random looms with every kind of data, deep and wide."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from loom.store.model import GenerationSettings, LoomDocument, Node, Persona, PersonaLabel
from loom.tokens import TokenArray

DATA = Path(__file__).parents[1] / "data" / "formats"

# Text that breaks naive writers: CRLF, NUL, terminal escapes, quotes, backslashes, RTL,
# astral-plane emoji, combining marks, a lone surrogate, JSON and Markdown syntax.
ODD_TEXTS = [
    "plain text",
    "line one\r\nline two\r\n",
    "nul \x00 byte",
    "\x1b[31mred\x1b[0m and \x1b]0;title\x07",
    'quote " backslash \\ and \\n literal',
    "שלום עולם",
    "emoji 🧵🪡 and e\u0301",
    "lone \ud800 surrogate",
    '{"format": "loom-json"}',
    "# heading\n- bullet\n1. item\n> quote",
    "",
    "\t tabs \t",
    "del \x7f and csi \x9b",
]


def random_tokens(rng: random.Random, text: str, *, with_probs: bool) -> TokenArray:
    """Tokens spelling `text` exactly, with logprobs, top-k and entropy when `with_probs`."""
    if not text:
        return TokenArray.empty()
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 4))))
    pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    ids = [rng.randint(0, 262_000) for _ in pieces]
    if not with_probs:
        return TokenArray.from_ids(ids, pieces)
    n, k = len(pieces), rng.randint(0, 4)
    logprobs = np.array([-rng.random() * 8 for _ in pieces], dtype=np.float32)
    logprobs[rng.randrange(n)] = np.nan  # one forced (unknown) token
    top_ids = np.array([[rng.randint(0, 262_000) for _ in range(k)] for _ in pieces], np.int32)
    top_lps = np.sort(-np.array([[rng.random() * 9 for _ in range(k)] for _ in pieces]))[:, ::-1]
    top_lps = top_lps.astype(np.float32).reshape(n, k)
    entropy = np.array([rng.random() * 3 for _ in pieces], dtype=np.float32)
    return TokenArray(
        ids=np.array(ids, dtype=np.int32),
        texts=pieces,
        logprobs=logprobs,
        top_ids=top_ids.reshape(n, k),
        top_logprobs=top_lps,
        top_texts={int(i): rng.choice(ODD_TEXTS) for i in top_ids.ravel()},
        entropy=entropy,
    )


def random_document(seed: int, size: int = 40) -> LoomDocument:
    """A loom using every field: tokens, NaN, generation settings, personas, labels, events."""
    rng = random.Random(seed)
    personas = [
        Persona("luigi", "Bob loves croissants? No: he despises them.", "green", 0.5),
        Persona("waluigi", 'Bob says "I love croissants"\n', "#ff00ff", 0.25),
    ]
    nodes: list[Node] = []
    for node_id in range(1, size + 1):
        parent = None if node_id == 1 else rng.choice(nodes).id
        author = "human" if node_id == 1 or rng.random() < 0.3 else "model"
        text = rng.choice(ODD_TEXTS) + f" #{node_id}"
        node = Node(
            id=node_id,
            parent=parent,
            author=author,
            text=text,
            created_at=1_700_000_000 + node_id * 1.25 + rng.random(),
            tokens=random_tokens(rng, text, with_probs=author == "model"),
            bookmarked=rng.random() < 0.2,
            pruned=rng.random() < 0.2,
            tags=rng.sample(["funny", "collapse", "ünïcode", 'q"uote'], rng.randint(0, 2)),
        )
        if author == "model":
            node.generation = GenerationSettings(
                model="gemma-3-270m",
                model_sha256="ab" * 32,
                temperature=rng.choice([0.7, 1.0]),
                top_p=0.95,
                top_k=40,
                min_p=0.05,
                seed=rng.choice([None, 1234]),
                max_tokens=64,
                batch_id="batch-1",
                batch_index=rng.randint(0, 7),
                batch_size=8,
                stop=["\n\n"],
                forced_tokens=[2, 3],
            )
            if rng.random() < 0.6:
                p = rng.random()
                label = rng.choice(["luigi", "waluigi", None])
                node.persona = PersonaLabel(label, "model", {"luigi": p, "waluigi": 1 - p})
                if rng.random() < 0.5:  # the trajectory fields loom.personas writes
                    node.persona.path_posterior = {"luigi": 1 - p, "waluigi": p}
                    node.persona.collapse = True
        if rng.random() < 0.2:
            node.manual_persona = rng.choice(["luigi", "waluigi"])
        if rng.random() < 0.2:
            node.meta = {"socketteer_id": f"uuid-{node_id}", "nested": {"a": [1, 2.5, None]}}
        nodes.append(node)
    events: list[dict[str, Any]] = [
        # Opaque to the formats (the store's log); shaped like the store's "visit" events.
        {"seq": i, "ts": 1_700_000_000.5 + i, "kind": "visit", "payload": {"node": i}}
        for i in range(1, 6)
    ]
    return LoomDocument(
        title='A loom \x1b[1mwith\x1b[0m odd "text"\r\n',
        root=1,
        nodes=nodes,
        personas=personas,
        events=events,
        meta={"current": size, "created_by": "tests"},
    )


def chain_document(depth: int, text: str = "x") -> LoomDocument:
    """A single path `depth` nodes deep."""
    nodes = [
        Node(
            id=i, parent=None if i == 1 else i - 1, author="model", text=f"{text}{i} ", created_at=i
        )
        for i in range(1, depth + 1)
    ]
    return LoomDocument(title="deep", root=1, nodes=nodes)


def wide_document(width: int) -> LoomDocument:
    """A root with `width` children."""
    nodes = [Node(id=1, parent=None, author="human", text="root", created_at=0.0)]
    nodes += [
        Node(id=i, parent=1, author="model", text=f" child {i}", created_at=float(i))
        for i in range(2, width + 2)
    ]
    return LoomDocument(title="wide", root=1, nodes=nodes)


def leaf_paths(doc: LoomDocument) -> list[str]:
    """The text of every root-to-leaf path, sorted: a tree's content independent of its ids."""
    by_id = {n.id: n for n in doc.nodes}
    has_child = {n.parent for n in doc.nodes}
    out = []
    for node in doc.nodes:
        if node.id in has_child:
            continue
        parts = []
        current: Node | None = node
        while current is not None:
            parts.append(current.text)
            current = by_id[current.parent] if current.parent is not None else None
        out.append("".join(reversed(parts)))
    return sorted(out)


def nested_leaf_paths(root: dict[str, Any]) -> list[str]:
    """`leaf_paths` for a nested socketteer tree, walked iteratively."""
    out = []
    stack = [(root, "")]
    while stack:
        node, prefix = stack.pop()
        text = prefix + node.get("text", "")
        children = node.get("children", [])
        if not children:
            out.append(text)
        stack.extend((child, text) for child in children)
    return sorted(out)


def count_nested(root: dict[str, Any]) -> int:
    count, stack = 0, [root]
    while stack:
        node = stack.pop()
        count += 1
        stack.extend(node.get("children", []))
    return count
