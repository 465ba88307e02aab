"""A session: one open loom, the model that extends it (if any), and the user's place in it.

The application layer the CLI and the app share. Every change to the loom goes through a Session
method, which writes it (one transaction, one undo step) and then forgets what it had cached of
the nodes it changed, so no caller has to remember to. The views read through it too.

Threads: the loom is written only from the thread that opened it (the store checks); in the app
that is the UI thread. Model work (`run_generation`, `multiverse`, `plan_labels`) runs in worker
threads, holds `engine_lock` and may read the loom, never write it: workers hand their results
back and the owner writes them (`save_branches`, `save_multiverse_path`, `write_labels`).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from loom.app.census import (
    UNDECIDED,
    CensusError,
    CensusOutcome,
    CensusResult,
    CensusSettings,
    batch_seed,
    progress_units,
    run_census,
)
from loom.app.context import Prompt, Prompts, check_memory, describe, fit, memories_at
from loom.app.forks import ForkMap, fork_map
from loom.app.generation import (
    GenerationResult,
    GenerationUnavailable,
    StreamedToken,
    TokenBatcher,
    generation_record,
)
from loom.app.hoist import VIEW_KEY as HOIST_KEY
from loom.app.hoist import Hoist
from loom.app.models import (
    LegendEntry,
    PersonaComparison,
    SecondModelError,
    model_legend,
    persona_comparison,
)
from loom.app.multiverse import MultiverseNode, build_multiverse, path_tokens_of
from loom.app.navigation import Navigator, NodeSummary, View, sort_children, summary_from_header
from loom.app.scoring import (
    ScorePlan,
    ScoreRun,
    ScoringUnavailable,
    needs_reading,
    plan_scoring,
    reading_by,
    run_scoring,
    shown_tokens,
)
from loom.app.stats import BranchStats, branch_stats, span_stats
from loom.app.transfer import export_loom
from loom.engine.backend import Backend
from loom.engine.errors import EngineError, GenerationInterrupted
from loom.engine.sampling import SamplerSettings, new_seed
from loom.engine.vocabulary import owns_tokens
from loom.personas.actions import (
    DEFAULT_LABEL_THRESHOLD,
    LabelRun,
    plan_labels,
    prune_siblings_voicing,
    stored_bias,
    stored_path_posterior,
    write_labels,
)
from loom.personas.sets import PersonaSet
from loom.personas.trajectory import Trajectory, stored_trajectory
from loom.store.events import Event
from loom.store.loom import Loom, NewNode
from loom.store.model import (
    GenerationSettings,
    LoomDocument,
    Memory,
    Node,
    Persona,
    PersonaLabel,
)
from loom.store.search import SearchHit
from loom.store.tokenizer import FunctionTokenizer
from loom.store.views import NodeHeader
from loom.tokens import TokenArray

DEFAULT_VIEW = View()
READ_KEY = "read"  # view setting: nodes read in passing, that no `visit` of the log covers
PIECE_CACHE_SIZE = 5000  # nodes whose text and tokens are kept for the reading pane

Piece = tuple[int, str, TokenArray]  # (node id, text, tokens)


def _hash_of(backend: Backend) -> str:
    """A model's sha256, or "" when it cannot be computed (that must not lose a generation)."""
    try:
        return str(backend.info.sha256 or "")
    except OSError:
        return ""


class Session:
    def __init__(self, loom: Loom, backend: Backend | None = None, *, reason: str = "") -> None:
        self.loom = loom  # the application layer's; the app goes through the methods below
        self.backend = backend
        # Why there is no backend ("no model loaded", a load error…): shown to the user.
        self.no_model_reason = reason or ("" if backend else "no model loaded")
        self.engine_lock = threading.Lock()
        self.nav = Navigator(self)
        # (text, tokens) of nodes recently shown: walking among siblings re-reads one node,
        # not the whole path. Forgotten by every write that changes existing nodes.
        self._pieces: dict[int, tuple[str, TokenArray]] = {}
        self._entropy: dict[int, float | None] = {}  # mean token entropy by node, once read
        self._read: set[int] | None = None  # nodes read (loaded from the log when first asked)
        self._unsaved_reads: set[int] = set()  # read since the place was last kept
        # Of the nodes in `_pieces` whose tokens shown are a model's reading: which model read them.
        self._readers: dict[int, str] = {}
        self._unread: set[int] = set()  # of those nodes, the text the loaded model has not read
        self.model_sha256 = ""
        self.prompts = Prompts(loom, self._tokenize_memory)
        # The second model (see loom.app.models): generates on request, never tokenizes or labels.
        self.second: Backend | None = None
        self.second_reason = "no second model loaded"
        if backend is not None:
            self._adopt_tokenizer(backend)

    # ----------------------------------------------------------------- the model

    def set_backend(self, backend: Backend | None, reason: str = "") -> None:
        self.backend = backend
        self.no_model_reason = reason or ("" if backend else "no model loaded")
        self.model_sha256 = ""
        self.prompts = Prompts(self.loom, self._tokenize_memory)  # another model, other ids
        self._forget_nodes()  # which reading a node shows depends on the model
        if backend is not None:
            self._adopt_tokenizer(backend)

    def model_loading(self) -> None:
        """The primary model is being loaded: generating meanwhile is told to wait, not that
        there is no model."""
        if self.backend is None:
            self.no_model_reason = "the model is still loading"

    def _tokenize_memory(self, text: str) -> list[int]:
        if self.backend is None:
            raise GenerationUnavailable(f"reading a memory needs a model: {self.no_model_reason}")
        return self.backend.tokenize(text)

    def _adopt_tokenizer(self, backend: Backend) -> None:
        # The store tokenizes edited and imported text with the model's vocabulary.
        if not self.loom.readonly:
            self.loom.tokenizer = FunctionTokenizer(backend.tokens_for)

    @property
    def model_name(self) -> str:
        return "" if self.backend is None else str(self.backend.info.name)

    @property
    def second_name(self) -> str:
        return "" if self.second is None else str(self.second.info.name)

    def set_second_backend(self, backend: Backend | None, reason: str = "") -> None:
        """Hold (or, with None, drop) a second model beside the primary one."""
        self.second = backend
        self.second_reason = reason or ("" if backend else "no second model loaded")

    def swap_models(self) -> None:
        """Make the second model the primary one and the primary the second (a session state,
        not a change to the loom: nothing is written)."""
        if self.second is None:
            raise SecondModelError(self.second_reason)
        primary, second = self.backend, self.second
        self.set_backend(second)
        self.second = primary
        self.second_reason = "" if primary else "no second model loaded"

    def tokens_owner(self, node_id: int) -> str | None:
        """Which loaded model a node's token ids belong to: "primary", "second", or None (neither:
        another model's, or text without tokens). Its alternatives are that model's too, so a
        branch from one of them must be generated by it."""
        node = self.loom.node(node_id)
        for role, backend in (("primary", self.backend), ("second", self.second)):
            if backend is not None and owns_tokens(backend, node.text, node.tokens):
                return role
        return None

    def require_second(self) -> Backend:
        if self.second is None:
            raise SecondModelError(f"generating with a second model: {self.second_reason}")
        return self.second

    def model_legend(self) -> list[LegendEntry]:
        """The loaded models and every model that wrote this loom, each with its colour index."""
        return model_legend(self.loom.models_used(), self.model_name, self.second_name)

    def persona_comparison(self, root: int | None = None) -> PersonaComparison:
        """How the branches each model wrote under `root` (default: the root) split among the
        personas; the labels are the primary model's (it scores them)."""
        root = self.root_id if root is None else root
        loaded = [m for m in (self.model_name, self.second_name) if m]
        counts = self.loom.model_label_counts(root)
        return persona_comparison(counts, root, self.model_name, loaded)

    @property
    def n_ctx(self) -> int | None:
        return None if self.backend is None else self.backend.n_ctx

    def generation_blocker(self) -> str | None:
        """Why generating is impossible right now, or None when it is possible."""
        if self.loom.readonly:
            return "the loom is open read-only"
        if self.backend is None:
            return f"generation is off: {self.no_model_reason}"
        return None

    def parallel_sequences(self, wanted: int = 16) -> int:
        """How many rollouts to decode together: `wanted`, or fewer when the in-process engine
        holds fewer sequences (a remote server takes what it is sent)."""
        from loom.engine.engine import Engine

        backend = self.backend
        return min(wanted, backend.n_seq_max) if isinstance(backend, Engine) else wanted

    def require_generation(self) -> Backend:
        blocker = self.generation_blocker()
        if blocker or self.backend is None:
            raise GenerationUnavailable(blocker or "no model")
        return self.backend

    def ensure_model_hash(self) -> str:
        """The model file's sha256 (hashing a model takes a second: call it from a worker,
        so that saving a generation on the UI thread finds it ready)."""
        if not self.model_sha256 and self.backend is not None:
            self.model_sha256 = _hash_of(self.backend)
        return self.model_sha256

    # ----------------------------------------------------------------- reading

    @property
    def readonly(self) -> bool:
        return self.loom.readonly

    @property
    def root_id(self) -> int:
        return self.loom.root_id

    @property
    def file(self) -> Path | None:
        return self.loom.path

    @property
    def personas(self) -> list[Persona]:
        return self.loom.personas

    @property
    def persona_set(self) -> PersonaSet | None:
        """The loom's persona set (the framing is not stored: the default is used)."""
        personas = self.loom.personas
        return PersonaSet(personas=list(personas), title=self.loom.title) if personas else None

    @property
    def place(self) -> int:
        """The node the loom was last on (where the app opens)."""
        return self.loom.current

    def exists(self, node_id: int) -> bool:
        return node_id in self.loom

    def header(self, node_id: int) -> NodeHeader:
        return self.loom.header(node_id)

    def headers(self, node_ids: Sequence[int]) -> list[NodeHeader]:
        return self.loom.headers(node_ids)

    def node(self, node_id: int) -> Node:
        return self.loom.node(node_id)

    def summary(self, node_id: int) -> NodeSummary:
        return summary_from_header(self.loom.header(node_id), read=self.is_read(node_id))

    def children(self, node_id: int, view: View = DEFAULT_VIEW) -> list[NodeSummary]:
        headers = self.loom.children(node_id, include_pruned=view.include_pruned)
        entropy = self.mean_entropies([h.id for h in headers]) if view.needs_entropy else {}
        summaries = [
            summary_from_header(h, read=self.is_read(h.id), mean_entropy=entropy.get(h.id))
            for h in headers
        ]
        return sort_children(summaries, view.order, view.seed)

    def mean_entropies(self, node_ids: Sequence[int]) -> dict[int, float | None]:
        """Each node's mean token entropy (read from its token arrays: kept once read)."""
        missing = [i for i in node_ids if i not in self._entropy]
        for node in self.loom.nodes(missing) if missing else []:
            self._entropy[node.id] = span_stats(
                node.tokens, [node.id] * len(node.tokens)
            ).mean_entropy
        return {i: self._entropy[i] for i in node_ids}

    # ----------------------------------------------------------------- reading progress

    def _read_ids(self) -> set[int]:
        if self._read is None:
            self._read = self.loom.visited_paths()
            skimmed = self.loom.view_state(READ_KEY)
            if isinstance(skimmed, list):
                self._read.update(int(i) for i in skimmed if isinstance(i, int))
        return self._read

    def is_read(self, node_id: int) -> bool:
        """Shown in the reading pane before: the reader was on it or below it."""
        return node_id in self._read_ids()

    def mark_read(self, path_ids: Sequence[int]) -> list[int]:
        """The reader is on the last node of `path_ids` (root first): the whole path is read.
        Returns the nodes that were unread. `set_place` keeps them in the file."""
        read = self._read_ids()
        fresh = [i for i in path_ids if i not in read]
        read.update(fresh)
        self._unsaved_reads.update(fresh)
        return fresh

    def _save_reads(self, place_path: Sequence[int]) -> None:
        # What the `visit` of the place covers (its path) is kept by the log; nodes read on the
        # way there (passed through without stopping) are added to a view setting.
        skimmed = self._unsaved_reads.difference(place_path)
        self._unsaved_reads.clear()
        if skimmed:
            stored = self.loom.view_state(READ_KEY)
            known = (
                [int(i) for i in stored if isinstance(i, int)] if isinstance(stored, list) else []
            )
            self.loom.set_view_state(READ_KEY, sorted({*known, *skimmed}))

    def unread(self, *, include_pruned: bool = False) -> tuple[set[int], set[int]]:
        """(the unread nodes, those and every ancestor of one): for `reading.next_unread`."""
        parents = self.loom.parent_map(include_pruned=include_pruned)
        read = self._read_ids()
        unread = {i for i in parents if i not in read}
        with_unread: set[int] = set()
        for node in unread:
            walker: int | None = node
            while walker is not None and walker not in with_unread:
                with_unread.add(walker)
                walker = parents.get(walker)
        return unread, with_unread

    # ----------------------------------------------------------------- hoisting

    def hoist(self) -> Hoist:
        """The hoist the loom was left with (stale entries dropped)."""
        stored = self.loom.view_state(HOIST_KEY)
        stack = [int(i) for i in stored] if isinstance(stored, list) else []
        hoist = Hoist([i for i in stack if self.exists(i)])
        return hoist

    def save_hoist(self, hoist: Hoist) -> None:
        """Keep the hoist with the loom (a view setting: not undoable, not exported)."""
        if self.loom.view_state(HOIST_KEY) != hoist.stack:
            self.loom.set_view_state(HOIST_KEY, list(hoist.stack))

    def path_headers(self, node_id: int) -> list[NodeHeader]:
        """Headers from the root down to `node_id` (included)."""
        return [*self.loom.ancestors(node_id), self.loom.header(node_id)]

    def bookmarks(self) -> list[int]:
        return self.loom.bookmarks()

    def search(self, query: str, limit: int = 100) -> list[SearchHit]:
        return self.loom.search(query, limit)

    def events(self) -> list[Event]:
        return self.loom.events()

    def to_document(self) -> LoomDocument:
        return self.loom.to_document()

    def export(
        self,
        fmt: str,
        out: str | Path,
        *,
        node: int | None = None,
        path: bool = False,
        version: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        whole_tree: bool = True,
    ) -> int:
        """Export the loom, the subtree under `node`, or (`path`) the path to `node` or the
        current node, streamed (any size). Safe in a worker thread: it reads on a connection of
        its own and writes nothing to the loom; `progress(done, total)` is called in that thread
        at most ~100 times. Returns the number of nodes written. See `loom.app.transfer`."""
        return export_loom(
            self.loom,
            fmt,
            out,
            node=node,
            path=path,
            version=version,
            progress=progress,
            whole_tree=whole_tree,
        )

    def prefix_ids(self, node_id: int, backend: Backend | None = None) -> list[int]:
        """The token ids a model (default: the primary) reads to continue after `node_id`
        (without BOS): its path with the memory in effect there, each node's stored ids where
        they are that model's and the text of the others re-tokenized by it (another model wrote
        them: see loom.engine.vocabulary)."""
        return self.prompt(node_id, backend=backend).ids

    def prompt(
        self, node_id: int, cut: int | None = None, *, backend: Backend | None = None
    ) -> Prompt:
        """What a model (default: the primary) reads after `node_id` (or after the first `cut` of
        its tokens)."""
        reader = backend or self.backend
        if reader is None:
            return self.prompts.at(node_id, cut)
        # The primary's memory ids are cached; another model tokenizes memories itself.
        tokenize = None if reader is self.backend else reader.tokenize
        return self.prompts.at(node_id, cut, reader=reader, tokenize=tokenize)

    def generation_prompt(
        self,
        node_id: int,
        reserve: int,
        *,
        keep_recent: bool = False,
        cut: int | None = None,
        backend: Backend | None = None,
    ) -> Prompt:
        """The prompt for generating `reserve` tokens after `node_id` with a model (default: the
        primary), checked against its context (`context.fit`: a memory that leaves no room says
        by how many tokens)."""
        reader = backend or self.backend
        n_ctx = self.n_ctx if reader is None else reader.n_ctx
        prompt = self.prompt(node_id, cut, backend=backend)
        return fit(prompt, n_ctx, reserve, keep_recent=keep_recent)

    # ----------------------------------------------------------------- hidden context

    def memory(self, node_id: int | None = None) -> Memory | None:
        """The memory kept on `node_id` (None: the loom's own)."""
        return self.loom.memory(node_id)

    def memories_at(self, node_id: int) -> list[Memory]:
        """The memories in effect for continuing after `node_id` (loom's, then a node's)."""
        return memories_at(self.loom, node_id)

    def inherited_memory(self, node_id: int) -> Memory | None:
        """The memory `node_id` inherits from its nearest ancestor with one (None: none, or the
        node has its own, which replaces it)."""
        found = self.loom.memory_on_path(node_id)
        return found if found is not None and found.node != node_id else None

    def memory_in_effect(self, node_id: int) -> tuple[str, int]:
        """(which memories are in effect after `node_id`, as one line; how many tokens they
        read, as far as a model can count them now): for the status bar."""
        memories = self.memories_at(node_id)
        if not memories:
            return "", 0
        n = 0
        for memory in memories:
            ids = self.prompts.cached(memory.text)
            # The engine answers nothing while it generates: count then only what is known.
            if ids is None and self.backend is not None and not self.engine_lock.locked():
                ids = self.prompts.tokenize(memory.text)
            n += len(ids or [])
        return describe(memories, node_id), n

    def check_memory(self, memory: Memory, reserve: int) -> int | None:
        """How many tokens `memory` reads as (None: no model to count them with);
        `MemoryTooLongError` when it leaves the context no room for `reserve` more tokens."""
        n_ctx = self.n_ctx
        if self.backend is None or n_ctx is None:
            return None
        return check_memory(memory, self.prompts.tokenize, n_ctx, reserve)

    def set_memory(self, node_id: int | None, memory: Memory | None) -> None:
        """Keep (or with None clear) the memory of `node_id` or of the loom: one undo step."""
        self.loom.set_memory(node_id, memory)

    def path_nodes(self, node_id: int) -> list[Node]:
        return list(self.loom.path_nodes(node_id))

    def path_pieces(self, node_id: int, path_ids: Sequence[int] | None = None) -> list[Piece]:
        """(id, text, tokens) from the root to `node_id`; `path_ids` when the caller knows it.

        Only nodes not seen recently are read (token blobs are the costly part of a path)."""
        if path_ids is None:
            path_ids = [h.id for h in self.loom.ancestors(node_id)] + [node_id]
        missing = [i for i in path_ids if i not in self._pieces]
        if len(missing) > 4:  # one query for the whole path beats many single reads
            for node in self.path_nodes(node_id):
                self._remember(node)
        else:
            for missing_id in missing:
                self._remember(self.loom.node(missing_id))
        return [(i, *self._pieces[i]) for i in path_ids]

    def unscored(self, node_ids: Sequence[int]) -> list[int]:
        """Of `node_ids` shown by `path_pieces`, those whose text has no probabilities of its
        own and no reading by the loaded model (not "unread" by the user: see `unread`)."""
        return [i for i in node_ids if i in self._unread]

    def reader_of(self, node_id: int) -> str | None:
        """The model whose reading of a node `path_pieces` gave (None: the node's own tokens)."""
        return self._readers.get(node_id)

    def _remember(self, node: Node) -> None:
        if len(self._pieces) >= PIECE_CACHE_SIZE:
            self._forget_nodes()
        tokens, reading = shown_tokens(node, self.model_name, self.model_sha256)
        self._pieces[node.id] = (node.text, tokens)
        if reading is not None:
            self._readers[node.id] = reading.model
        else:
            self._readers.pop(node.id, None)
        if needs_reading(node) and reading_by(node, self.model_name, self.model_sha256) is None:
            self._unread.add(node.id)
        else:
            self._unread.discard(node.id)

    def _forget_nodes(self) -> None:
        self._pieces.clear()
        self._entropy.clear()
        self._readers.clear()
        self._unread.clear()

    def branch_stats(self, node_id: int) -> BranchStats:
        return branch_stats(self.path_nodes(node_id))

    def sibling_ids(self, node_id: int) -> list[int]:
        return [h.id for h in self.loom.siblings(node_id)]

    def subtree_ids(self, node_id: int) -> list[int]:
        """`node_id` and everything under it, depth first (iterative: trees can be deep)."""
        ids, stack = [], [node_id]
        while stack:
            current = stack.pop()
            ids.append(current)
            stack.extend(h.id for h in self.loom.children(current))
        return ids

    def trajectory(self, node_id: int) -> Trajectory:
        """The persona posterior along the path to `node_id`, as last labelled."""
        return stored_trajectory(self.loom, node_id)

    # ----------------------------------------------------------------- writing

    def add_human_child(self, parent_id: int, text: str) -> int:
        tokens = self.backend.tokens_for(text) if self.backend is not None else None
        return int(self.loom.add_child(parent_id, text, author="human", tokens=tokens))

    def edit(self, node_id: int, text: str) -> None:
        tokens = self.backend.tokens_for(text) if self.backend is not None else None
        self.loom.edit(node_id, text, tokens=tokens)
        self._forget_nodes()

    def split(self, node_id: int, at_token: int) -> int:
        """Cut a node at a token; returns the tail (the node's new only child)."""
        tail = self.loom.split(node_id, at_token=at_token)
        self._forget_nodes()
        return int(tail)

    def merge_into_parent(self, node_id: int) -> None:
        self.loom.merge_into_parent(node_id)
        self._forget_nodes()

    def prune(self, node_id: int) -> None:
        self.loom.prune(node_id)

    def unprune(self, node_id: int) -> None:
        self.loom.unprune(node_id)

    def set_bookmark(self, node_id: int, on: bool) -> None:
        self.loom.set_bookmark(node_id, on)

    def add_tag(self, node_id: int, tag: str) -> None:
        self.loom.add_tag(node_id, tag)

    def remove_tag(self, node_id: int, tag: str) -> None:
        self.loom.remove_tag(node_id, tag)

    def undo(self) -> Event | None:
        """Undo the latest step; its first event, None if there was nothing to undo."""
        event = self.loom.undo()
        self._forget_nodes()
        return event

    def redo(self) -> Event | None:
        event = self.loom.redo()
        self._forget_nodes()
        return event

    def set_place(self, node_id: int) -> None:
        """Remember where the user is (not an undoable edit): the log's `visit`, from which
        reading progress is kept too."""
        if self.loom.current != node_id:
            self.loom.set_current(node_id)
        path = [h.id for h in self.loom.ancestors(node_id)] + [node_id]
        self.mark_read(path)
        self._save_reads(path)

    def set_manual_persona(self, node_id: int, name: str | None) -> None:
        self.loom.set_manual_persona(node_id, name)

    def set_personas(self, personas: Sequence[Persona]) -> None:
        self.loom.set_personas(personas)

    def write_labels(self, run: LabelRun) -> None:
        """Store a labelling's results (planned in a worker), one undo step."""
        write_labels(self.loom, run)

    def prune_siblings_voicing(self, node_id: int, persona: str, threshold: float) -> list[int]:
        return prune_siblings_voicing(self.loom, node_id, persona, threshold)

    def counterfactual_parent(self, node_id: int, token_index: int) -> int:
        """Where to generate when the user picks another token at `token_index` of `node_id`.

        Splits the node there (the original continuation becomes a child of the head) and returns
        the head; at index 0 nothing is split and the node's parent is returned.
        """
        if token_index <= 0:
            parent = self.summary(node_id).parent
            if parent is None:
                raise ValueError("the root has no parent to branch from")
            return parent
        self.split(node_id, token_index)
        return node_id

    # ----------------------------------------------------------------- generating

    def run_generation(
        self,
        prefix_ids: Sequence[int],
        n: int,
        settings: SamplerSettings,
        *,
        forced: Sequence[int] | None = None,
        top_logprobs: int = 5,
        on_batch: Callable[[list[StreamedToken]], None] | None = None,
        cancel: threading.Event | None = None,
        fresh: bool = False,
        second: bool = False,
    ) -> GenerationResult:
        """Generate `n` continuations of `prefix_ids` (a worker's job: the engine only), with the
        primary model or (`second`) the second one; `prefix_ids` must be that model's
        (`prefix_ids(node, backend)`).

        Returns the branches as they stand: on cancel they hold the tokens generated so far.
        """
        backend = self.require_generation()
        if second:
            backend = self.require_second()
        batcher = TokenBatcher(on_batch or (lambda _batch: None))
        cancel = cancel or threading.Event()
        error: str | None = None
        with self.engine_lock:
            started = time.perf_counter()
            try:
                branches = backend.generate(
                    list(prefix_ids),
                    n,
                    settings,
                    top_logprobs=top_logprobs,
                    forced=list(forced) if forced else None,
                    on_step=batcher.on_step,
                    cancel=cancel,
                    fresh=fresh,
                )
            except GenerationInterrupted as exc:  # a server went away: keep what arrived
                branches, error = exc.partial, str(exc)
            elapsed = time.perf_counter() - started
        batcher.flush()
        sha = self.ensure_model_hash() if backend is self.backend else _hash_of(backend)
        n_tokens = sum(len(b.tokens) for b in branches)
        return GenerationResult(
            branches,
            elapsed,
            n_tokens,
            cancel.is_set() or error is not None,
            error,
            model=str(backend.info.name),
            model_sha256=sha,
        )

    def save_branches(
        self,
        parent_id: int,
        result: GenerationResult,
        settings: SamplerSettings,
        *,
        forced: Sequence[int] | None = None,
        labels: Sequence[PersonaLabel | None] | None = None,
        memory: Sequence[Memory] = (),
    ) -> list[int]:
        """Write a generation's branches as children of `parent_id`, in one transaction, with
        their persona labels if they were scored already (`labels[i]` for branch i) and the
        memories the model read (`Prompt.memory`), so a re-run reads them too.

        Empty branches (cancelled before their first token) are dropped; partial ones are kept.
        """
        batch_id = uuid.uuid4().hex
        size = len(result.branches)
        new_nodes = [
            NewNode(
                text=branch.tokens.text,
                author="model",
                tokens=branch.tokens,
                generation=generation_record(
                    settings,
                    model=result.model or self.model_name,
                    model_sha256=result.model_sha256 if result.model else self.model_sha256,
                    branch=branch,
                    batch_id=batch_id,
                    batch_size=size,
                    forced=forced or (),
                    memory=memory,
                ),
                persona=None if labels is None else labels[i],
            )
            for i, branch in enumerate(result.branches)
            if len(branch.tokens)
        ]
        if not new_nodes:
            return []
        return [int(i) for i in self.loom.add_children(parent_id, new_nodes)]

    def generate(
        self,
        parent_id: int,
        n: int,
        settings: SamplerSettings,
        *,
        keep_recent: bool = False,
        top_logprobs: int = 5,
        second: bool = False,
    ) -> list[int]:
        """Generate `n` children of `parent_id` and save them, in this thread (the CLI's way),
        with the primary model or (`second`) the second one.

        A path longer than the context is refused, unless `keep_recent` keeps only its most recent
        tokens. Without a seed in `settings` one is drawn, so every branch records the seed that
        reproduces it. A generation that wrote nothing at all is an error, not an empty success."""
        if settings.seed is None:
            settings = replace(settings, seed=new_seed())
        backend = self.require_second() if second else self.require_generation()
        prompt = self.generation_prompt(
            parent_id, settings.max_tokens, keep_recent=keep_recent, backend=backend
        )
        result = self.run_generation(
            prompt.ids, n, settings, top_logprobs=top_logprobs, second=second
        )
        saved = self.save_branches(parent_id, result, settings, memory=prompt.memory)
        if result.error is not None:
            kept = f"kept {len(saved)} partial branch(es)" + (
                f": nodes {', '.join(map(str, saved))}" if saved else ""
            )
            raise GenerationInterrupted(f"{result.error}; {kept}", result.branches)
        if not saved:
            notes = {b.note for b in result.branches if b.note}
            why = "; ".join(sorted(notes)) or "every branch ended before its first token"
            raise EngineError(f"the model wrote nothing: {why}")
        return saved

    # ----------------------------------------------------------------- the block multiverse

    def multiverse(
        self,
        prefix_ids: Sequence[int],
        depth: int,
        width: int,
        *,
        cancel: threading.Event | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> MultiverseNode:
        """The block multiverse after `prefix_ids` (a worker's job: the engine only)."""
        backend = self.require_generation()
        with self.engine_lock:
            root = build_multiverse(
                backend, prefix_ids, depth, width, cancel=cancel, progress=progress
            )
        self.ensure_model_hash()
        return root

    def save_multiverse_path(
        self,
        parent_id: int,
        root: MultiverseNode,
        path: Sequence[MultiverseNode],
        memory: Sequence[Memory] = (),
    ) -> int:
        """Write a chosen multiverse path as one model-authored child of `parent_id` (`memory`:
        the memories the multiverse was built after)."""
        tokens = path_tokens_of(path, root.alternatives)
        record = GenerationSettings(
            model=self.model_name,
            model_sha256=self.model_sha256,
            temperature=0.0,
            top_p=1.0,
            top_k=len(root.alternatives),
            min_p=0.0,
            seed=None,
            max_tokens=len(path),
            forced_tokens=[int(t) for t in tokens.ids],
            memory=list(memory),
        )
        return int(
            self.loom.add_child(
                parent_id, tokens.text, author="model", tokens=tokens, generation=record
            )
        )

    # ----------------------------------------------------------------- personas

    def plan_labels(
        self,
        persona_set: PersonaSet,
        node_ids: Sequence[int] | None = None,
        threshold: float = DEFAULT_LABEL_THRESHOLD,
    ) -> LabelRun:
        """Score nodes against a persona set (a worker's job: reads the loom, calls the model);
        `write_labels` stores the result."""
        backend = self.backend
        if backend is None:
            raise GenerationUnavailable(f"labelling needs a model: {self.no_model_reason}")
        with self.engine_lock:
            return plan_labels(
                self.loom,
                backend,
                persona_set,
                node_ids,
                threshold,
                context_of=lambda parent: self.prompt(parent).ids,
            )

    # ----------------------------------------------------------------- reading unscored text

    def plan_scoring(
        self, node_ids: Sequence[int], *, top_logprobs: int = 5, again: bool = False
    ) -> ScorePlan:
        """What the loaded model has yet to read among `node_ids` (see loom.app.scoring). Hashes
        the model the first time (a second): call it from a worker."""
        if self.backend is None:
            raise ScoringUnavailable(f"scoring needs a model: {self.no_model_reason}")
        if self.loom.readonly:
            raise ScoringUnavailable("the loom is open read-only: scores could not be kept")
        return plan_scoring(
            self.loom, self.backend, node_ids, model_sha256=self.ensure_model_hash(),
            top_logprobs=top_logprobs, again=again,
        )  # fmt: skip

    def run_scoring(
        self,
        plan: ScorePlan,
        *,
        cancel: threading.Event | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> ScoreRun:
        """Read a plan with the model (a worker's job); `save_scores` keeps the result."""
        if self.backend is None:
            raise ScoringUnavailable(f"scoring needs a model: {self.no_model_reason}")
        with self.engine_lock:
            return run_scoring(self.backend, plan, cancel=cancel, progress=progress)

    def save_scores(self, run: ScoreRun) -> None:
        """Keep what a scoring run read (one `score` event; not an undo step: derived data)."""
        self.loom.add_scores(run.model, run.model_sha256, run.readings)
        self._forget_nodes()

    # ----------------------------------------------------------------- the census

    def _census_inputs(self, node_id: int) -> tuple[Backend, PersonaSet, Any, Any]:
        persona_set = self.persona_set
        if persona_set is None:
            raise CensusError(
                "this loom has no persona set: load one (`loom label --personas SET.toml`, "
                "`loom new --personas`, or ctrl+l in the app)"
            )
        backend = self.backend
        if backend is None:
            raise GenerationUnavailable(f"a census needs a model: {self.no_model_reason}")
        names = persona_set.names
        prior = np.asarray([p.prior for p in persona_set.normalised().personas], dtype=np.float64)
        start = stored_path_posterior(self.loom, node_id, names, prior)
        return backend, persona_set, start, stored_bias(self.loom, names)

    def run_census(
        self,
        node_id: int,
        settings: CensusSettings,
        *,
        token_index: int | None = None,
        cancel: threading.Event | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> CensusResult:
        """A census of `node_id`'s futures, or after each alternative at one of its tokens
        (`token_index`, into the node's own tokens). A worker's job: reads the loom, runs the
        model; `save_census` stores the result."""
        settings.check()
        backend, persona_set, start, bias = self._census_inputs(node_id)
        seed = settings.seed if settings.seed is not None else new_seed()
        prompt = self.prompt(node_id)
        places: list[tuple[int | None, str, float]] = [(None, "", 1.0)]
        if token_index is not None:
            node = self.loom.node(node_id)
            tokens = node.tokens
            if not owns_tokens(backend, node.text, tokens):
                raise CensusError(
                    f"node {node_id}'s tokens are another model's: a census at one of its tokens "
                    f"needs the model that wrote it ({backend.info.name} is loaded)"
                )
            if not 0 <= token_index < len(tokens):
                raise CensusError(
                    f"node {node_id} has {len(tokens)} tokens: no token {token_index}"
                )
            alternatives = tokens.top(token_index)
            if not alternatives:
                raise CensusError(
                    f"token {token_index} of node {node_id} has no alternatives recorded (the "
                    "model did not write it): a census at a token needs model tokens"
                )
            prompt = self.prompt(node_id, cut=token_index)
            places = [(a.id, a.text, math.exp(a.logprob)) for a in alternatives]
        outcomes = []
        units = progress_units(settings)
        for rank, (token, text, p) in enumerate(places):

            def report(done: int, _total: int, before: int = rank * units) -> None:
                if progress is not None:
                    progress(before + done, units * len(places))

            with self.engine_lock:
                census = run_census(
                    backend,
                    persona_set,
                    node_id,
                    prompt.ids,
                    replace(settings, seed=batch_seed(seed, 1000 + rank)),
                    start_posterior=start,
                    bias=bias,
                    forced=[] if token is None else [token],
                    cancel=cancel,
                    progress=report,
                )
            outcomes.append(CensusOutcome(census, token, text, p))
            if census.cancelled:
                break
        self.ensure_model_hash()
        return CensusResult(
            node_id,
            outcomes,
            seed,
            token_index,
            self.model_name,
            self.model_sha256,
            memory=prompt.memory,
        )

    def save_census(self, result: CensusResult) -> int:
        """Log a census (rollouts stay out of the tree); its seq."""
        result.seq = self.loom.add_census(result.payload())
        return result.seq

    def save_censuses(self, results: Sequence[CensusResult]) -> None:
        """Log several censuses as one undo step (a transition table's)."""
        with self.loom.batch():
            for result in results:
                self.save_census(result)

    def censuses(self, node_id: int) -> list[CensusResult]:
        """The node's censuses in effect, oldest first."""
        return [
            CensusResult.from_payload(stored.payload, stored.seq)
            for stored in self.loom.censuses(node_id)
        ]

    def promote_rollout(self, result: CensusResult, outcome: int, rollout: int) -> int:
        """Make one rollout of a census a model-written child in the tree (after a token census,
        the node is split there first, as a counterfactual branch is); the new node's id."""
        chosen = result.outcomes[outcome]
        r = chosen.census.rollouts[rollout]
        parent = result.node_id
        if result.token_index is not None:
            parent = self.counterfactual_parent(result.node_id, result.token_index)
        settings = chosen.census.settings
        sampler = SamplerSettings(
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.tokens,
            seed=r.batch_seed,
        )
        record = generation_record(
            sampler,
            model=result.model,
            model_sha256=result.model_sha256,
            batch_size=min(settings.batch, settings.rollouts),
            forced=r.forced,
            memory=result.memory,
        )
        record.batch_index = r.batch_index
        record.from_empty_cache = settings.fresh
        # What the census read it as comes with it (one step: no labelling run needed).
        label = PersonaLabel(
            label=None if r.label == UNDECIDED else r.label,
            source="model",
            posterior=dict(r.posterior),
            collapse=r.collapse,
            mode_collapse=r.repetition,
        )
        return int(
            self.loom.add_child(
                parent,
                r.tokens.text,
                author="model",
                tokens=r.tokens,
                generation=record,
                persona=label,
                meta={"from_census": result.seq, "rollout": rollout, "outcome": outcome},
            )
        )

    def plan_transitions(
        self,
        root: int,
        settings: CensusSettings,
        *,
        cancel: threading.Event | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[list[tuple[str, CensusResult]], list[CensusResult]]:
        """Censuses of the labelled nodes of `root`'s subtree (a worker's job): a stored census
        with as many rollouts of the same length is reused. Returns (label, census) pairs for
        `transition_table`, and the censuses run now, for `save_census`."""
        pairs: list[tuple[str, CensusResult]] = []
        fresh: list[CensusResult] = []
        labelled = [h for h in self.headers(self.subtree_ids(root)) if h.label]
        for done, header in enumerate(labelled):
            if cancel is not None and cancel.is_set():
                break
            reusable = [
                c
                for c in self.censuses(header.id)
                if c.token_index is None
                and c.settings.tokens == settings.tokens
                and len(c.outcomes[0].census.rollouts) >= settings.rollouts
            ]
            if reusable:
                result = reusable[-1]
            else:
                result = self.run_census(header.id, settings, cancel=cancel)
                fresh.append(result)
            pairs.append((str(header.label), result))
            if progress is not None:
                progress(done + 1, len(labelled))
        return pairs, fresh

    def fork_map(
        self,
        node_id: int,
        budget: int,
        *,
        whole_path: bool = True,
        seed: int | None = None,
        cancel: threading.Event | None = None,
        progress: Callable[[int, int], None] | None = None,
        **options: Any,
    ) -> ForkMap:
        """The fork map of the path to `node_id` (or of the node's own tokens only). A worker's
        job: reads the loom, runs the model."""
        backend, persona_set, _start, bias = self._census_inputs(node_id)
        pieces = self.path_pieces(node_id)
        tokens = TokenArray.concat([t for _id, _text, t in pieces])
        owners = [node for node, _text, t in pieces for _ in range(len(t))]
        own = len(pieces[-1][2])
        positions = range(len(tokens)) if whole_path else range(len(tokens) - own, len(tokens))
        starts: dict[int, int] = {}  # each node's first position in the path
        for i, owner in enumerate(owners):
            starts.setdefault(owner, i)

        def context_before(position: int) -> list[int]:
            # What a branch at that token reads: its node's memories, the path cut there.
            owner = owners[position]
            return self.prompt(owner, cut=position - starts[owner]).ids

        with self.engine_lock:
            return fork_map(
                backend, persona_set, node_id, tokens, owners, list(positions), budget=budget,
                seed=seed, bias=bias, cancel=cancel, progress=progress,
                context_before=context_before, **options,
            )  # fmt: skip

    def switch_to(self, loom: Loom) -> None:
        """Show another loom in this session (a replay's state rebuilt from the start)."""
        self.loom = loom
        self.prompts = Prompts(loom, self._tokenize_memory)
        self._forget_nodes()
        self._read = None

    # ----------------------------------------------------------------- lifetime

    def close(self) -> None:
        self.loom.close()
