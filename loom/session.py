"""A session: one open loom tied to an optional model. UI-free, so the CLI reuses it.

The TUI is a thin shell over this module: it asks a Session for what to show (ordered children,
neighbours, leaves, branch statistics) and to do things (generate children into the store, branch
from an alternative token, build a block multiverse). Two threads use a Session: the UI thread
for every store call, and one worker thread at a time for engine calls (`run_generation`,
`build_multiverse`), which hold `engine_lock` and touch nothing but the engine.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from loom.store.model import GenerationSettings, Node
from loom.tokens import TokenArray, TopAlternative

if TYPE_CHECKING:
    from loom.engine.sampling import SamplerSettings
    from loom.store.loom import Loom

SortOrder = Literal["created", "mean", "cumulative"]
# Token batches go to the UI at most this often: per-token posting halves throughput.
BATCH_INTERVAL_S = 1 / 30
PIECE_CACHE_SIZE = 5000  # nodes whose text and tokens are kept for the reading pane
PREVIEW_CHARS = 200  # of a node's text, for one-line previews


class Backend(Protocol):
    """What a Session needs of a model: `loom.engine.engine.Engine` (or a test double)."""

    @property
    def n_ctx(self) -> int: ...

    def tokens_for(self, text: str) -> TokenArray: ...

    def generate(
        self,
        prefix_ids: Sequence[int],
        n: int,
        settings: SamplerSettings,
        *,
        top_logprobs: int = 5,
        forced: Sequence[int] | None = None,
        on_step: Callable[[Any], None] | None = None,
        cancel: threading.Event | None = None,
        fresh: bool = False,
    ) -> list[Any]: ...


class GenerationUnavailable(Exception):
    """Generation was asked for but can't run; the message says why (shown to the user)."""


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class StreamedToken:
    branch: int
    token_id: int
    text: str
    logprob: float


class TokenBatcher:
    """Collects the engine's per-step updates and hands them on in batches, ~30 per second.

    Called on the worker thread only (from the engine's `on_step`), so it needs no lock.
    """

    def __init__(
        self, deliver: Callable[[list[StreamedToken]], None], interval: float = BATCH_INTERVAL_S
    ) -> None:
        self._deliver = deliver
        self._interval = interval
        self._pending: list[StreamedToken] = []
        self._last = time.monotonic()
        self.total = 0

    def on_step(self, update: Any) -> None:
        for branch, token_id, text, logprob in update.new:
            self._pending.append(StreamedToken(int(branch), int(token_id), str(text), logprob))
        self.total += len(update.new)
        now = time.monotonic()
        if now - self._last >= self._interval:
            self.flush()
            self._last = now

    def flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self._deliver(batch)


@dataclass
class GenerationResult:
    branches: list[Any]  # loom.engine Branch: tokens, text, finish_reason, seed, index
    elapsed_s: float
    n_tokens: int
    cancelled: bool

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0


# --------------------------------------------------------------------------- tree data


@dataclass(frozen=True)
class NodeSummary:
    """One node as the tree pane and navigation need it: no token arrays."""

    id: int
    parent: int | None
    author: str
    preview: str
    n_children: int
    mean_logprob: float | None
    cum_logprob: float | None
    bookmarked: bool
    pruned: bool
    tags: tuple[str, ...]
    persona: str | None  # the label shown: a hand label wins over the model's
    persona_is_manual: bool
    collapse: bool = False  # the persona label marks a collapse here (path posterior jumped)
    mode_collapse: bool = False  # … or a repetition loop ending here

    @property
    def mean_prob(self) -> float | None:
        return None if self.mean_logprob is None else math.exp(self.mean_logprob)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def summary_from_header(header: Any) -> NodeSummary:
    """The store's NodeHeader → NodeSummary (kept in one place: the store owns the names)."""
    return NodeSummary(
        id=int(header.id),
        parent=None if header.parent is None else int(header.parent),
        author=str(header.author),
        preview=str(header.text[:PREVIEW_CHARS]),
        n_children=int(header.n_children),
        mean_logprob=_finite(header.mean_logprob),
        cum_logprob=_finite(header.sum_logprob) if header.n_logprob else None,
        bookmarked=bool(header.bookmarked),
        pruned=bool(header.pruned),
        tags=tuple(header.tags or ()),
        persona=header.label,
        persona_is_manual=header.manual_persona is not None,
        collapse=bool(header.persona is not None and header.persona.collapse),
        mode_collapse=bool(header.persona is not None and header.persona.mode_collapse),
    )


def sort_children(children: list[NodeSummary], order: SortOrder) -> list[NodeSummary]:
    """Siblings in display order. Human nodes (no logprob) sort after scored ones, stably."""
    if order == "created":
        return children

    def key_of(c: NodeSummary) -> float | None:
        return c.mean_logprob if order == "mean" else c.cum_logprob

    scored = [c for c in children if key_of(c) is not None]
    unscored = [c for c in children if key_of(c) is None]
    return sorted(scored, key=lambda c: -(key_of(c) or 0.0)) + unscored


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class TokenStat:
    index: int  # in the path (or node) token array
    node_id: int
    text: str
    logprob: float


@dataclass(frozen=True)
class SpanStats:
    n_tokens: int
    n_scored: int  # tokens with a logprob (model-written)
    cum_logprob: float | None
    mean_logprob: float | None
    lowest: TokenStat | None
    mean_entropy: float | None

    @property
    def perplexity(self) -> float | None:
        return None if self.mean_logprob is None else math.exp(-self.mean_logprob)


@dataclass(frozen=True)
class BranchStats:
    node: SpanStats
    path: SpanStats  # from the root to the node


def span_stats(tokens: TokenArray, owners: Sequence[int]) -> SpanStats:
    """Statistics of a token span; `owners[i]` is the node that token i belongs to."""
    lps = np.asarray(tokens.logprobs, dtype=np.float64)
    known = ~np.isnan(lps)
    n_scored = int(known.sum())
    lowest = None
    if n_scored:
        idx = int(np.nanargmin(lps))
        lowest = TokenStat(idx, int(owners[idx]), tokens.texts[idx], float(lps[idx]))
    mean_entropy = None
    if tokens.entropy is not None:
        ent = np.asarray(tokens.entropy, dtype=np.float64)
        if (~np.isnan(ent)).any():
            mean_entropy = float(np.nanmean(ent))
    return SpanStats(
        n_tokens=len(tokens),
        n_scored=n_scored,
        cum_logprob=float(lps[known].sum()) if n_scored else None,
        mean_logprob=float(lps[known].mean()) if n_scored else None,
        lowest=lowest,
        mean_entropy=mean_entropy,
    )


# --------------------------------------------------------------------------- multiverse


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


# --------------------------------------------------------------------------- the session


class Session:
    """One open loom, the model that extends it (if any), and the user's place in it."""

    def __init__(self, loom: Loom, backend: Backend | None = None, *, reason: str = "") -> None:
        self.loom = loom
        self.backend = backend
        # Why there is no backend ("no model loaded", a load error…): shown to the user.
        self.no_model_reason = reason or ("" if backend else "no model loaded")
        self.engine_lock = threading.Lock()
        self.last_child: dict[int, int] = {}  # parent id → the child the user last visited
        # (text, tokens) of nodes recently shown: walking among siblings re-reads one node,
        # not the whole path. Cleared by `forget_nodes` after any edit of text or tokens.
        self._pieces: dict[int, tuple[str, TokenArray]] = {}
        self.model_sha256 = ""
        if backend is not None:
            self._adopt_tokenizer(backend)

    # ----------------------------------------------------------------- model

    def set_backend(self, backend: Backend | None, reason: str = "") -> None:
        self.backend = backend
        self.no_model_reason = reason or ("" if backend else "no model loaded")
        self.model_sha256 = ""
        if backend is not None:
            self._adopt_tokenizer(backend)

    def _adopt_tokenizer(self, backend: Backend) -> None:
        # The store retokenizes edited text with loom.tokenizer (a `tokenize(text) -> TokenArray`).
        # A remote backend has no local vocabulary: text without tokens stays so (the store says).
        if not self.loom.readonly and callable(getattr(backend, "tokens_for", None)):
            self.loom.tokenizer = _BackendTokenizer(backend)

    @property
    def model_name(self) -> str:
        info = getattr(self.backend, "info", None)
        return str(getattr(info, "name", "")) if info is not None else ""

    def generation_blocker(self) -> str | None:
        """Why generating is impossible right now, or None when it is possible."""
        if self.loom.readonly:
            return "the loom is open read-only"
        if self.backend is None:
            return f"generation is off: {self.no_model_reason}"
        return None

    def require_generation(self) -> Backend:
        blocker = self.generation_blocker()
        if blocker or self.backend is None:
            raise GenerationUnavailable(blocker or "no model")
        return self.backend

    # ----------------------------------------------------------------- reading

    def summary(self, node_id: int) -> NodeSummary:
        return summary_from_header(self.loom.header(node_id))

    def children(
        self, node_id: int, *, order: SortOrder = "created", include_pruned: bool = False
    ) -> list[NodeSummary]:
        headers = self.loom.children(node_id, include_pruned=include_pruned)
        return sort_children([summary_from_header(h) for h in headers], order)

    def prefix_ids(self, node_id: int) -> list[int]:
        """The token ids the model reads to continue after `node_id` (without BOS)."""
        return [int(i) for i in self.loom.path_tokens(node_id).ids]

    def path_nodes(self, node_id: int) -> list[Node]:
        return list(self.loom.path_nodes(node_id))

    def path_pieces(
        self, node_id: int, path_ids: Sequence[int] | None = None
    ) -> list[tuple[int, str, TokenArray]]:
        """(id, text, tokens) from the root to `node_id`; `path_ids` when the caller knows it.

        Only nodes not seen recently are read (token blobs are the costly part of a path)."""
        if path_ids is None:
            path_ids = [h.id for h in self.loom.ancestors(node_id)] + [node_id]
        missing = [i for i in path_ids if i not in self._pieces]
        if len(missing) > 4:  # one query for the whole path beats many single reads
            for node in self.path_nodes(node_id):
                self._remember(node.id, node.text, node.tokens)
        else:
            for missing_id in missing:
                node = self.loom.node(missing_id)
                self._remember(node.id, node.text, node.tokens)
        return [(i, *self._pieces[i]) for i in path_ids]

    def _remember(self, node_id: int, text: str, tokens: TokenArray) -> None:
        if len(self._pieces) >= PIECE_CACHE_SIZE:
            self._pieces.clear()
        self._pieces[node_id] = (text, tokens)

    def forget_nodes(self) -> None:
        """Call after anything that changes existing nodes' text or tokens (edit, split…)."""
        self._pieces.clear()

    # ----------------------------------------------------------------- navigation

    def parent_of(self, node_id: int) -> int | None:
        return self.summary(node_id).parent

    def child_of(self, node_id: int, **kw: Any) -> int | None:
        """The child last visited from `node_id`, else its first child in display order."""
        kids = self.children(node_id, **kw)
        remembered = self.last_child.get(node_id)
        if remembered is not None and any(k.id == remembered for k in kids):
            return remembered
        return kids[0].id if kids else None

    def sibling_of(self, node_id: int, step: int, **kw: Any) -> int | None:
        parent = self.parent_of(node_id)
        if parent is None:
            return None
        ids = [k.id for k in self.children(parent, **kw)]
        if node_id not in ids:
            return ids[0] if ids else None
        pos = ids.index(node_id) + step
        return ids[pos] if 0 <= pos < len(ids) else None

    def leaf_of(self, node_id: int, step: int, **kw: Any) -> int | None:
        """The next (step=1) or previous (step=-1) leaf in depth-first display order.

        Walks the store a level at a time (never the whole tree), so it stays cheap in huge
        looms: from the nearest node that has a sibling that way, descend to its edge leaf.
        """
        if step > 0:
            kids = self.children(node_id, **kw)
            if kids:
                return self._edge_leaf(kids[0].id, first=True, **kw)
        node: int | None = node_id
        while node is not None:
            sibling = self.sibling_of(node, step, **kw)
            if sibling is not None:
                return self._edge_leaf(sibling, first=step > 0, **kw)
            node = self.parent_of(node)
        return None

    def _edge_leaf(self, node_id: int, *, first: bool, **kw: Any) -> int:
        while True:
            kids = self.children(node_id, **kw)
            if not kids:
                return node_id
            node_id = kids[0].id if first else kids[-1].id

    def bookmark_after(self, node_id: int, step: int) -> int | None:
        marks = [int(b) for b in self.loom.bookmarks()]
        if not marks:
            return None
        if node_id in marks:
            return marks[(marks.index(node_id) + step) % len(marks)]
        return marks[0] if step > 0 else marks[-1]

    # ----------------------------------------------------------------- statistics

    def branch_stats(self, node_id: int) -> BranchStats:
        nodes = self.path_nodes(node_id)
        owners = [n.id for n in nodes for _ in range(len(n.tokens))]
        path_tokens = TokenArray.concat([n.tokens for n in nodes])
        own = nodes[-1]
        return BranchStats(
            node=span_stats(own.tokens, [own.id] * len(own.tokens)),
            path=span_stats(path_tokens, owners),
        )

    # ----------------------------------------------------------------- writing

    def add_human_child(self, parent_id: int, text: str) -> int:
        tokens = self.backend.tokens_for(text) if self.backend is not None else None
        return int(self.loom.add_child(parent_id, text, author="human", tokens=tokens))

    def edit(self, node_id: int, text: str) -> None:
        tokens = self.backend.tokens_for(text) if self.backend is not None else None
        self.loom.edit(node_id, text, tokens=tokens)
        self.forget_nodes()

    def sampler_settings(self, **values: Any) -> SamplerSettings:
        from loom.engine.sampling import SamplerSettings

        return SamplerSettings(**values)

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
    ) -> GenerationResult:
        """Generate `n` continuations of `prefix_ids` (worker thread; engine only, no store).

        Returns the branches as they stand: on cancel they hold the tokens generated so far.
        """
        backend = self.require_generation()
        batcher = TokenBatcher(on_batch or (lambda _batch: None))
        cancel = cancel or threading.Event()
        with self.engine_lock:
            started = time.perf_counter()
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
            elapsed = time.perf_counter() - started
        batcher.flush()
        self.ensure_model_hash()
        n_tokens = sum(len(b.tokens) for b in branches)
        return GenerationResult(branches, elapsed, n_tokens, cancel.is_set())

    def ensure_model_hash(self) -> str:
        """The model file's sha256 (hashing a model takes a second: call it from a worker,
        so that saving a generation on the UI thread finds it ready)."""
        if not self.model_sha256:
            info = getattr(self.backend, "info", None)
            try:
                self.model_sha256 = str(getattr(info, "sha256", "") or "")
            except Exception:  # a hash that can't be computed must not lose a generation
                self.model_sha256 = ""
        return self.model_sha256

    def generation_settings(
        self,
        settings: SamplerSettings,
        *,
        batch_id: str,
        index: int,
        size: int,
        seed: int | None,
        forced: Sequence[int] | None,
        cached_prefix: int | None = None,
        from_empty_cache: bool | None = None,
    ) -> GenerationSettings:
        return GenerationSettings(
            model=self.model_name,
            model_sha256=self.model_sha256,
            temperature=float(settings.temperature),
            top_p=float(settings.top_p),
            top_k=int(settings.top_k),
            min_p=float(settings.min_p),
            seed=seed,
            max_tokens=int(settings.max_tokens),
            batch_id=batch_id,
            batch_index=index,
            batch_size=size,
            stop=list(getattr(settings, "stop", []) or []),
            forced_tokens=[int(t) for t in forced or []],
            cached_prefix=cached_prefix,
            from_empty_cache=from_empty_cache,
        )

    def save_branches(
        self,
        parent_id: int,
        result: GenerationResult,
        settings: SamplerSettings,
        *,
        forced: Sequence[int] | None = None,
    ) -> list[int]:
        """Write a generation's branches as children of `parent_id`, in one transaction.

        Empty branches (cancelled before their first token) are dropped; partial ones are kept.
        """
        from loom.store.loom import NewNode

        batch_id = uuid.uuid4().hex
        size = len(result.branches)
        new_nodes = [
            NewNode(
                text=branch.tokens.text,
                author="model",
                tokens=branch.tokens,
                generation=self.generation_settings(
                    settings,
                    batch_id=batch_id,
                    index=int(branch.index),
                    size=size,
                    seed=getattr(branch, "seed", None),
                    forced=forced,
                    cached_prefix=getattr(branch, "cached_prefix", None),
                    from_empty_cache=getattr(branch, "from_empty_cache", None),
                ),
            )
            for branch in result.branches
            if len(branch.tokens)
        ]
        if not new_nodes:
            return []
        return [int(i) for i in self.loom.add_children(parent_id, new_nodes)]

    def counterfactual_parent(self, node_id: int, token_index: int) -> int:
        """Where to generate when the user picks another token at `token_index` of `node_id`.

        Splits the node there (the original continuation becomes a child of the head) and returns
        the head; at index 0 nothing is split and the node's parent is returned.
        """
        if token_index <= 0:
            parent = self.parent_of(node_id)
            if parent is None:
                raise ValueError("the root has no parent to branch from")
            return parent
        self.loom.split(node_id, at_token=token_index)
        self.forget_nodes()
        return node_id

    # ----------------------------------------------------------------- multiverse

    def build_multiverse(
        self,
        prefix_ids: Sequence[int],
        depth: int,
        width: int,
        *,
        cancel: threading.Event | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> MultiverseNode:
        """The tree of the `width` most likely tokens, `depth` steps deep (worker thread).

        Each expansion is one greedy one-token generation after prefix+path: the engine reports
        the raw top-k at that position, which is exactly the block's children.
        """
        backend = self.require_generation()
        from loom.engine.sampling import SamplerSettings

        greedy = SamplerSettings(temperature=0.0, max_tokens=1)
        root = MultiverseNode(None, "", 0.0, 0.0)
        frontier: list[tuple[MultiverseNode, list[int]]] = [(root, [])]
        total = sum(width**d for d in range(depth))
        done = 0
        with self.engine_lock:
            for level in range(depth):
                next_frontier: list[tuple[MultiverseNode, list[int]]] = []
                for node, path in frontier:
                    if cancel is not None and cancel.is_set():
                        return root
                    (branch,) = backend.generate(
                        [*prefix_ids, *path], 1, greedy, top_logprobs=width
                    )
                    tokens: TokenArray = branch.tokens
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
        self.ensure_model_hash()
        return root

    def save_multiverse_path(
        self, parent_id: int, root: MultiverseNode, path: Sequence[MultiverseNode]
    ) -> int:
        """Write a chosen multiverse path as one model-authored child of `parent_id`."""
        tokens = path_tokens_of(path, root.alternatives)
        settings = GenerationSettings(
            model=self.model_name,
            model_sha256=self.model_sha256,
            temperature=0.0,
            top_p=1.0,
            top_k=len(root.alternatives),
            min_p=0.0,
            seed=None,
            max_tokens=len(path),
            forced_tokens=[int(t) for t in tokens.ids],
        )
        return int(
            self.loom.add_child(
                parent_id, tokens.text, author="model", tokens=tokens, generation=settings
            )
        )


class _BackendTokenizer:
    """Adapts a Backend to the store's Tokenizer protocol (`tokenize(text) -> TokenArray`)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def tokenize(self, text: str) -> TokenArray:
        return self._backend.tokens_for(text)


def generate_children(
    loom: Loom,
    backend: Backend,
    parent_id: int,
    *,
    n: int,
    settings: SamplerSettings,
    keep_recent: bool = False,
    top_logprobs: int = 5,
) -> list[int]:
    """Generate `n` model-written children of `parent_id` and save them (the CLI's path).

    A path longer than the context is refused, unless `keep_recent` keeps only its most recent
    tokens. Without a seed in `settings` one is drawn, so every branch records the seed that
    reproduces it. A generation that wrote nothing at all is an error, not an empty success."""
    from dataclasses import replace

    from loom.engine.errors import ContextOverflowError, EngineError
    from loom.engine.sampling import new_seed

    session = Session(loom, backend)
    if settings.seed is None:
        settings = replace(settings, seed=new_seed())
    prefix = session.prefix_ids(parent_id)
    n_ctx = getattr(backend, "n_ctx", None)  # a remote server does not say: the path goes whole
    if n_ctx is not None:
        room = n_ctx - settings.max_tokens - 1  # one position for BOS
        if len(prefix) > room:
            if not keep_recent:
                raise ContextOverflowError(len(prefix) + 1 + settings.max_tokens, n_ctx)
            prefix = prefix[-room:] if room > 0 else []
    result = session.run_generation(prefix, n, settings, top_logprobs=top_logprobs)
    saved = session.save_branches(parent_id, result, settings)
    if not saved:
        notes = {b.note for b in result.branches if getattr(b, "note", None)}
        why = "; ".join(sorted(notes)) or "every branch ended before its first token"
        raise EngineError(f"the model wrote nothing: {why}")
    return saved
