"""Helpers for the store tests (no tests here): a toy tokenizer, model-like tokens, snapshots."""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from loom.store import codec
from loom.store.loom import Loom, NewNode
from loom.store.model import LoomDocument, Persona, PersonaLabel
from loom.store.tokenizer import FunctionTokenizer
from loom.tokens import TokenArray

_PIECES = re.compile(r"\s*\S+|\s+")


def pieces(text: str) -> list[str]:
    """Word-ish pieces (leading space kept with the word), like a BPE's pre-tokenizer."""
    return _PIECES.findall(text)


def piece_id(piece: str) -> int:
    return zlib.crc32(piece.encode("utf-8", "surrogatepass")) % 50_000


class WordTokenizer:
    """A toy Tokenizer: one token per word piece, ids from a hash, no probabilities."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def tokenize(self, text: str) -> TokenArray:
        self.calls.append(text)
        parts = pieces(text)
        return TokenArray.from_ids([piece_id(p) for p in parts], parts)


def model_tokens(text: str, *, k: int = 3, seed: int = 0, entropy: bool = True) -> TokenArray:
    """Tokens as the engine makes them: logprobs, top-k alternatives with texts, entropy."""
    rng = np.random.default_rng(seed)
    parts = pieces(text)
    n = len(parts)
    ids = np.asarray([piece_id(p) for p in parts], dtype=np.int32)
    top_ids = np.zeros((n, k), dtype=np.int32)
    top_lps = np.sort(rng.uniform(-6, -0.01, size=(n, k)).astype(np.float32), axis=1)[:, ::-1]
    top_texts: dict[int, str] = {}
    for row in range(n):
        top_ids[row, 0] = ids[row]
        top_texts[int(ids[row])] = parts[row]
        for col in range(1, k):
            alt = int(rng.integers(50_000, 60_000))
            top_ids[row, col] = alt
            top_texts[alt] = f"<alt{alt}>"
    return TokenArray(
        ids=ids,
        texts=parts,
        logprobs=top_lps[:, 0].copy() if k else np.full(n, -1.0, dtype=np.float32),
        top_ids=top_ids,
        top_logprobs=np.ascontiguousarray(top_lps),
        top_texts=top_texts,
        entropy=rng.uniform(0, 3, size=n).astype(np.float32) if entropy else None,
    )


def digest(tokens: TokenArray) -> str:
    return codec.encode(tokens).digest.hex()


def doc_snapshot(doc: LoomDocument) -> dict[str, Any]:
    """Everything a document says about the tree, comparable with == (tokens by digest)."""
    return {
        "title": doc.title,
        "root": doc.root,
        "current": doc.meta.get("current"),
        "personas": [p.to_json() for p in doc.personas],
        "nodes": [
            (
                n.id,
                n.parent,
                n.author,
                n.text,
                n.created_at,
                digest(n.tokens),
                None if n.generation is None else n.generation.to_json(),
                None if n.persona is None else n.persona.to_json(),
                n.manual_persona,
                n.bookmarked,
                n.pruned,
                tuple(n.tags),
                tuple(sorted(n.meta.items())),
            )
            for n in doc.nodes
        ],
    }


def snapshot(loom: Loom) -> dict[str, Any]:
    """The loom's full state, plus the cached depth of each node (must follow moves)."""
    snap = doc_snapshot(loom.to_document(events=False))
    snap["depths"] = {n[0]: loom.header(n[0]).depth for n in snap["nodes"]}
    return snap


def varied_session(lm: Loom) -> list[tuple[int, dict[str, object]]]:
    """A varied session; returns (last seq, snapshot) after each step."""
    out = []

    def mark() -> None:
        out.append((lm.events()[-1].seq, snapshot(lm)))

    mark()
    r = lm.root_id
    a, b = lm.add_children(
        r, [NewNode(" Luigi bows", tokens=model_tokens(" Luigi bows", seed=i)) for i in (1, 2)]
    )
    mark()
    c = lm.add_child(a, " and waves", author="model", tokens=model_tokens(" and waves", k=5))
    mark()
    lm.set_personas(
        [Persona("luigi", "kind", "green", 0.5), Persona("waluigi", "mean", "red", 0.5)]
    )
    mark()
    lm.set_persona(c, PersonaLabel("luigi", "model", {"luigi": 0.8, "waluigi": 0.2}))
    mark()
    lm.edit(b, " Waluigi sneers")
    mark()
    lm.split(c, at_char=4)
    mark()
    lm.set_current(c)
    mark()
    lm.add_tag(b, "villain")
    mark()
    lm.delete_subtree(b)
    mark()
    lm.undo()
    mark()
    lm.undo()
    mark()
    lm.redo()
    mark()
    lm.move(b, a)
    mark()  # discards the redo of the delete
    lm.prune(a)
    mark()
    lm.merge_into_parent(lm.children(c)[0].id)
    mark()
    lm.set_manual_persona(a, "waluigi")
    mark()
    lm.set_bookmark(c, True)
    mark()
    lm.set_title("croissants")
    mark()
    return out


def tokenizing_loom(engine: Any, path: Path, **create: Any) -> Loom:
    """A new loom (`Loom.create(path, **create)`) whose text the real model tokenizes, as the
    app's looms are."""
    return Loom.create(path, tokenizer=FunctionTokenizer(engine.tokens_for), **create)
