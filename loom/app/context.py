"""What the model reads: the path's tokens with the hidden context ("memory") in effect.

The one place a prompt is assembled. Generation, regeneration, the block multiverse, persona
labels, the census, the fork map and guided growth all ask `Prompts.at` (or `assemble`, given a
generation record's memories), so a memory is read the same way by all of them.

Which memory is in effect at a node: the loom's own memory (if any) and the memory of the node or
of its nearest ancestor that has one (a nearer node's replaces a farther one's; the loom's stacks
with it). A memory is placed before the path (`depth` None), or as an author's note `depth`
tokens before the end of the path (at the start when the path is shorter). Several memories in
one place keep the order loom, node. Memory text is tokenized on its own and read exactly as
written; the path keeps the token ids the store holds, so cached prefixes and sampled ids stay
exact and the engine's KV cache (keyed by token prefixes) reuses whatever comes before a note.

What a continuation after `node` reads is the prompt at `node`; a branch at token `cut` of a
node (a counterfactual, a fork point, a census at a token) reads the prompt at that node with
the path cut there, so an author's note moves with the end of what is read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from loom.engine.backend import Backend
from loom.engine.errors import ContextOverflowError
from loom.engine.vocabulary import ids_for, own_tokens
from loom.store.loom import Loom
from loom.store.model import Memory

Tokenize = Callable[[str], list[int]]


@dataclass(frozen=True)
class Prompt:
    """The token ids the model reads after BOS, and what they are made of."""

    ids: list[int]
    path: list[int]  # the path's own ids, as the store holds them
    memory: list[Memory] = field(default_factory=list)  # as a generation record keeps them
    memory_ids: list[list[int]] = field(default_factory=list)  # each memory's tokens

    @property
    def memory_tokens(self) -> int:
        return len(self.ids) - len(self.path)


class MemoryTooLongError(ContextOverflowError):
    """The memory leaves no room in the context for the generation."""

    def __init__(self, memory_tokens: int, needed: int, n_ctx: int) -> None:
        self.n_tokens = needed
        self.n_ctx = n_ctx
        Exception.__init__(
            self,
            f"the memory is {memory_tokens} tokens: with BOS and the tokens to generate it "
            f"needs {needed} of the context's {n_ctx}, {needed - n_ctx} too many (shorten or "
            "clear it, or generate fewer tokens)",
        )


def memories_at(loom: Loom, node_id: int) -> list[Memory]:
    """The memories in effect for continuing after `node_id`: the loom's, then the node's or its
    nearest ancestor's (each says where it was set: `node` None is the loom's)."""
    return [m for m in (loom.memory(None), loom.memory_on_path(node_id)) if m is not None]


def assemble(path_ids: Sequence[int], memories: Sequence[Memory], tokenize: Tokenize) -> Prompt:
    """`path_ids` with `memories` placed in them (see the module's docstring)."""
    return place(path_ids, memories, [[int(t) for t in tokenize(m.text)] for m in memories])


def place(
    path_ids: Sequence[int], memories: Sequence[Memory], memory_ids: Sequence[Sequence[int]]
) -> Prompt:
    """`assemble` with the memories' tokens given (`memory_ids[i]` those of `memories[i]`)."""
    path = [int(i) for i in path_ids]
    before: list[int] = []
    notes: list[tuple[int, list[int]]] = []  # (position in the path, tokens)
    for memory, ids in zip(memories, memory_ids, strict=True):
        if memory.depth is None:
            before.extend(ids)
        else:
            notes.append((max(0, len(path) - memory.depth), list(ids)))
    out = list(before)
    start = 0
    # Stable by position: two notes at one place keep the order loom, node.
    for position, ids in sorted(notes, key=lambda note: note[0]):
        out.extend(path[start:position])
        out.extend(ids)
        start = position
    out.extend(path[start:])
    return Prompt(out, path, list(memories), [list(i) for i in memory_ids])


def fit(prompt: Prompt, n_ctx: int | None, reserve: int, *, keep_recent: bool = False) -> Prompt:
    """`prompt` if it fits the context with `reserve` more tokens (and BOS); with `keep_recent`
    the path loses its oldest tokens until it does (the memories are always kept). A memory that
    leaves no room is `MemoryTooLongError`, a path that does not fit `ContextOverflowError`."""
    if n_ctx is None:
        return prompt
    needed = len(prompt.ids) + 1 + reserve
    if prompt.memory_tokens and prompt.memory_tokens + 1 + reserve > n_ctx:
        raise MemoryTooLongError(prompt.memory_tokens, prompt.memory_tokens + 1 + reserve, n_ctx)
    if needed <= n_ctx:
        return prompt
    if not keep_recent:
        raise ContextOverflowError(needed, n_ctx)
    # Notes stay at their depth from the end, so the path simply loses its oldest tokens.
    return place(prompt.path[needed - n_ctx :], prompt.memory, prompt.memory_ids)


def check_memory(memory: Memory, tokenize: Tokenize, n_ctx: int, reserve: int) -> int:
    """How many tokens `memory` reads as; `MemoryTooLongError` when it alone leaves no room in a
    context of `n_ctx` for BOS and `reserve` generated tokens (checked when it is set, too)."""
    n = len(tokenize(memory.text))
    fit(place([], [memory], [[0] * n]), n_ctx, reserve)
    return n


def describe(memories: Sequence[Memory], at: int | None = None) -> str:
    """One line saying which memories are in effect after node `at` ("" when none): for the
    status bar and the CLI. "loom (before) + inherited from #3 (note at 20)"."""
    parts = []
    for m in memories:
        if m.node is None:
            where = "loom"
        elif m.node == at:
            where = f"node #{m.node}"
        else:
            where = f"inherited from #{m.node}"
        placed = "before" if m.depth is None else f"note at {m.depth}"
        parts.append(f"{where} ({placed})")
    return " + ".join(parts)


class Prompts:
    """Prompts of one loom, with the memory texts tokenized once (by `tokenize`: the model's)."""

    def __init__(self, loom: Loom, tokenize: Tokenize) -> None:
        self.loom = loom
        self._tokenize = tokenize
        self._memory_ids: dict[str, list[int]] = {}

    def cached(self, text: str) -> list[int] | None:
        """The ids of a memory text tokenized already (None: not yet), without asking the model."""
        ids = self._memory_ids.get(text)
        return None if ids is None else list(ids)

    def tokenize(self, text: str) -> list[int]:
        if text not in self._memory_ids:
            if len(self._memory_ids) > 64:
                self._memory_ids.clear()
            self._memory_ids[text] = [int(t) for t in self._tokenize(text)]
        return list(self._memory_ids[text])

    def at(
        self,
        node_id: int,
        cut: int | None = None,
        *,
        reader: Backend | None = None,
        tokenize: Tokenize | None = None,
    ) -> Prompt:
        """What the model reads to continue after `node_id`, or (`cut`) after the first `cut` of
        its own tokens: a branch there reads the node's memories with the path cut there.
        `reader`: the model that reads it, whose ids the path is given in (text another model
        wrote is re-tokenized); `tokenize`: its tokenizer for the memories (default: the one
        this was made with)."""
        if reader is None:
            path = [int(i) for i in self.loom.path_tokens(node_id).ids]
        else:
            path = ids_for(reader, [(n.text, n.tokens) for n in self.loom.path_nodes(node_id)])
        if cut is not None:  # the node's own tokens, as the reader reads them, end the path
            node = self.loom.node(node_id)
            own = node.tokens if reader is None else own_tokens(reader, node.text, node.tokens)
            path = path[: len(path) - len(own) + cut]
        return assemble(path, memories_at(self.loom, node_id), tokenize or self.tokenize)
