"""A whole loom a node at a time: what streaming writers read and streaming readers fill.

`DocumentStream` is a loom being read (the store's `StoreExport`, or `MemoryStream` over a
`LoomDocument`): its head, its vocabulary, its nodes parents first, the token arrays its events
use that no node holds, and its events, whose token arrays are `{"$tok": key}` in the stream's own
key space (a node's `key` names its tokens). `DocumentSink` is a loom being built (the store's
`ImportSink`, or `MemorySink` collecting a `LoomDocument`). Neither side ever holds the whole
tree: memory stays bounded by one node (or one batch), whatever the size of the loom.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from loom.store import codec
from loom.store import events as ev
from loom.store.errors import LoomError
from loom.store.model import LoomDocument, Node, Persona
from loom.tokens import TokenArray

Progress = Callable[[int, int], None]  # (done, total): a fraction of the work, however counted


@dataclass
class DocumentHead:
    title: str = ""
    root: int | None = None
    current: int | None = None
    personas: list[Persona] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # without "current"


@dataclass
class StreamNode:
    node: Node
    key: int | None = None  # how events name this node's tokens (None: nothing refers to them)
    children: list[int] = field(default_factory=list)  # in order
    # The node's tokens as columns, texts left out, when asked for (`nodes(columns=True)`) and
    # the stream has them so (then node.tokens is empty); exceptions are to `vocabulary()`.
    columns: codec.TokenColumns | None = None


class DocumentStream(Protocol):
    head: DocumentHead
    n_nodes: int
    n_events: int

    def vocabulary(self) -> Iterator[tuple[int, str]]: ...

    def current_path(self) -> list[int]: ...

    def nodes(self, *, columns: bool = False) -> Iterator[StreamNode]: ...

    def event_token_keys(self) -> list[int]: ...

    def tokens(self, key: int) -> TokenArray: ...

    def events(self) -> Iterator[dict[str, Any]]: ...


class DocumentSink(Protocol):
    def vocabulary(self, entries: dict[int, str]) -> None: ...

    def node(self, node: Node, key: int | None, columns: codec.TokenColumns | None = None) -> None:
        """`columns`: the node's tokens as columns, exceptions to `vocabulary` (then
        `node.tokens` is empty)."""

    def token_array(self, key: int, tokens: TokenArray) -> None: ...

    def event(self, raw: dict[str, Any]) -> None: ...


class Throttle:
    """Calls `progress` only when the percentage moves: at most ~100 calls however long the work."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress = progress
        self.total = max(1, total)
        self.done = 0
        self._shown = -1

    def advance(self, amount: int = 1) -> None:
        self.set(self.done + amount)

    def set(self, done: int) -> None:
        self.done = min(done, self.total)
        if self.progress is None:
            return
        pct = self.done * 100 // self.total
        if pct != self._shown:
            self._shown = pct
            self.progress(self.done, self.total)

    def finish(self) -> None:
        self.set(self.total)


# --- a LoomDocument as a stream, and a sink that collects one ---------------------------------


class MemoryStream:
    """A `LoomDocument` (events with `$tokdata`) read as a `DocumentStream`."""

    def __init__(self, doc: LoomDocument, current: int | None = None) -> None:
        self.doc = doc
        stored = doc.meta.get("current")
        if current is None and isinstance(stored, int) and not isinstance(stored, bool):
            current = stored
        self.head = DocumentHead(
            title=doc.title,
            root=doc.root,
            current=current,
            personas=list(doc.personas),
            meta={k: v for k, v in doc.meta.items() if k != "current"},
        )
        self.n_nodes = len(doc.nodes)
        self.n_events = len(doc.events)
        self._arrays: list[TokenArray] = []
        by_digest: dict[bytes, int] = {}

        def key_of(tokens: TokenArray) -> int:
            digest = codec.content_digest(tokens)
            if digest not in by_digest:
                by_digest[digest] = len(self._arrays)
                self._arrays.append(tokens)
            return by_digest[digest]

        self._node_keys = [key_of(n.tokens) if len(n.tokens) else None for n in doc.nodes]
        node_keys = {k for k in self._node_keys if k is not None}

        def convert(value: dict[str, Any]) -> dict[str, int]:
            if ev.TOKEN_DATA not in value:
                raise LoomError("the document's events refer to token data of another file")
            try:
                tokens = codec.tokens_from_json(value[ev.TOKEN_DATA])
            except ValueError as exc:
                raise LoomError(f"the document's events hold bad token data: {exc}") from None
            return {ev.TOKEN_REF: key_of(tokens)}

        self._events = [ev.map_tokens(e, convert) for e in doc.events]
        self._event_keys = sorted({k for k in range(len(self._arrays)) if k not in node_keys})

    def vocabulary(self) -> Iterator[tuple[int, str]]:
        vocab: dict[int, str] = {}
        for tokens in self._arrays:
            for token_id, text in zip(tokens.ids.tolist(), tokens.texts, strict=True):
                vocab.setdefault(token_id, text)
            for token_id, text in tokens.top_texts.items():
                vocab.setdefault(int(token_id), text)
        yield from sorted(vocab.items())

    def current_path(self) -> list[int]:
        """From the root to the current node (just the root if there is none)."""
        parents = {n.id: n.parent for n in self.doc.nodes}
        step: int | None = self.head.current if self.head.current in parents else self.doc.root
        path: list[int] = []
        while step is not None and step in parents and step not in path:
            path.append(step)
            step = parents[step]
        return path[::-1]

    def nodes(self, *, columns: bool = False) -> Iterator[StreamNode]:
        """The nodes, parents first (tokens whole: a document holds no columns)."""
        children: dict[int, list[int]] = {n.id: [] for n in self.doc.nodes}
        for n in self.doc.nodes:
            if n.parent is not None and n.parent in children:
                children[n.parent].append(n.id)
        for node, key in zip(self.doc.nodes, self._node_keys, strict=True):
            yield StreamNode(node, key, children[node.id])

    def event_token_keys(self) -> list[int]:
        return list(self._event_keys)

    def tokens(self, key: int) -> TokenArray:
        return self._arrays[key]

    def events(self) -> Iterator[dict[str, Any]]:
        yield from self._events


class MemorySink:
    """Collects what a reader streams into a `LoomDocument` (events get `$tokdata` back)."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.events: list[dict[str, Any]] = []
        self._keys: dict[int, TokenArray] = {}
        self._vocab = codec.VocabTable({})

    def vocabulary(self, entries: dict[int, str]) -> None:
        self._vocab.add(entries)

    def node(self, node: Node, key: int | None, columns: codec.TokenColumns | None = None) -> None:
        if columns is not None:
            node = dataclasses.replace(node, tokens=codec.tokens_of(columns, self._vocab))
        self.nodes.append(node)
        if key is not None:
            self._keys[key] = node.tokens

    def token_array(self, key: int, tokens: TokenArray) -> None:
        self._keys[key] = tokens

    def event(self, raw: dict[str, Any]) -> None:
        def convert(value: dict[str, Any]) -> dict[str, Any]:
            if ev.TOKEN_DATA in value:
                return value
            key = value[ev.TOKEN_REF]
            if key not in self._keys:
                raise LoomError(f"an event refers to token array {key!r}, which is not in the file")
            return {ev.TOKEN_DATA: codec.row_to_json(codec.encode(self._keys[key]))}

        self.events.append(ev.map_tokens(raw, convert))

    def document(self, head: DocumentHead) -> LoomDocument:
        meta = dict(head.meta)
        if head.current is not None:
            meta["current"] = head.current
        return LoomDocument(
            title=head.title,
            root=head.root if head.root is not None else 0,
            nodes=self.nodes,
            personas=list(head.personas),
            events=self.events,
            meta=meta,
        )
