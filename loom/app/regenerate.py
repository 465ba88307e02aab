"""`loom regenerate`: re-run a model-written node and say whether the model writes it again.

A node records how it was made (`GenerationSettings`): the model's name and sha256, the sampler
settings, the seed, the forced tokens it starts with, and the batch it was generated in. Batched
decoding is deterministic only for the same batch (logits differ in the last digits across batch
compositions; see loom.engine.engine), so the whole batch is re-run: the same number of branches,
seed, settings and forced tokens, after the same prompt (with the hidden context the record says
the model read, whatever the memories are now). The node's branch is then compared token by
token with what was stored; its siblings of the batch are compared too.

The prompt and the stored tokens come from the event log when it holds the `add` event of the
batch: the path of the parent *as it was then*, and the tokens *as generated* (the node may have
been edited, split or moved since). A loom imported without that history falls back to the
current path and tokens, and the report says so.

UI-free: the CLI prints `RegenerationReport.lines()`; `engine_loader` loads a model file (the CLI
passes `Engine.load`, tests a session-scoped engine).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loom.app.context import assemble
from loom.app.generation import sampler_settings_of
from loom.engine.backend import Backend
from loom.engine.vocabulary import ids_for
from loom.store import events as ev
from loom.store.errors import LoomError
from loom.store.loom import Loom
from loom.store.model import GenerationSettings
from loom.store.replay import Replay
from loom.store.tokenizer import FunctionTokenizer
from loom.text import inert, quoted
from loom.tokens import TokenArray


class RegenerationError(LoomError):
    """The node cannot be regenerated; the message says why (one line, for a person)."""


class MissingModelError(RegenerationError):
    """No model file with the recorded sha256 was found."""

    def __init__(self, node_id: int, name: str, sha256: str, searched: Sequence[Path]) -> None:
        self.name = name
        self.sha256 = sha256
        where = ", ".join(str(p) for p in searched) or "no models directory"
        super().__init__(
            f"the model that wrote node {node_id} is missing: {name or 'unnamed model'} "
            f"(sha256 {sha256}); looked in {where} and the default model. Put that GGUF file "
            "in a models directory or pass its path with --model"
        )


EngineLoader = Callable[[Path], Backend]


@dataclass
class BranchComparison:
    """One branch of the batch: as stored against as regenerated."""

    batch_index: int
    node_id: int | None  # None: the branch was empty (dropped when it was saved)
    stored: list[int]
    regenerated: list[int]
    stored_pieces: list[str] = field(default_factory=list)  # token texts
    regenerated_pieces: list[str] = field(default_factory=list)

    @property
    def stored_text(self) -> str:
        return "".join(self.stored_pieces)

    @property
    def regenerated_text(self) -> str:
        return "".join(self.regenerated_pieces)

    @property
    def identical(self) -> bool:
        return self.stored == self.regenerated

    @property
    def first_difference(self) -> int | None:
        for i, (a, b) in enumerate(zip(self.stored, self.regenerated, strict=False)):
            if a != b:
                return i
        return None if self.identical else min(len(self.stored), len(self.regenerated))


@dataclass
class RegenerationReport:
    node_id: int
    model_name: str
    model_path: Path | str  # the GGUF file, or the server it was re-run on
    model_sha256: str
    prompt_tokens: int
    batch_size: int
    batch_index: int
    seed: int | None
    branch: BranchComparison  # the node's own
    siblings: list[BranchComparison] = field(default_factory=list)  # the rest of the batch
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """The node's tokens came out exactly as stored."""
        return self.branch.identical

    def lines(self) -> list[str]:
        """What `loom regenerate` prints."""
        b = self.branch
        head = (
            f"node {self.node_id}: {'IDENTICAL' if b.identical else 'DIFFERENT'} — "
            f"{len(b.regenerated)} token(s) regenerated, {len(b.stored)} stored"
        )
        out = [head]
        if not b.identical and b.first_difference is not None:
            i = b.first_difference
            stored = _tok(b.stored, b.stored_pieces, i)
            again = _tok(b.regenerated, b.regenerated_pieces, i)
            out.append(f"  first difference at token {i}: stored {stored}, regenerated {again}")
            out.append(f"  stored:      {quoted(b.stored_text, 72)}")
            out.append(f"  regenerated: {quoted(b.regenerated_text, 72)}")
        out.append(
            f"  model {self.model_name} ({self.model_path}, sha256 {self.model_sha256[:16]}…); "
            f"prompt {self.prompt_tokens} tokens; branch {self.batch_index + 1} of a batch of "
            f"{self.batch_size}; seed {self.seed}"
        )
        if self.siblings:
            same = sum(s.identical for s in self.siblings)
            out.append(f"  the rest of the batch: {same} of {len(self.siblings)} identical")
        out.extend(f"  note: {n}" for n in self.notes)
        return out


def _tok(ids: list[int], pieces: list[str], i: int) -> str:
    if i >= len(ids):
        return "nothing (the branch ended)"
    # the token exactly (leading spaces matter), controls escaped
    return f"\u201c{inert(pieces[i])}\u201d (id {ids[i]})" if i < len(pieces) else f"id {ids[i]}"


# --- finding what was generated -------------------------------------------------------------


@dataclass
class _Member:
    node_id: int | None
    index: int
    tokens: TokenArray


@dataclass
class _Origin:
    seq: int | None  # the add event, None when the log does not hold it
    parent: int
    members: dict[int, _Member]  # batch index -> branch as generated


def _same_batch(settings: GenerationSettings, record: dict[str, Any], node_id: int) -> bool:
    gen = record.get("generation")
    if not isinstance(gen, dict):
        return False
    if settings.batch_id is not None:
        return bool(gen.get("batch_id") == settings.batch_id)
    return bool(record.get("id") == node_id)


def _from_log(loom: Loom, node_id: int, settings: GenerationSettings) -> _Origin | None:
    """The add event that created the node's batch (a split tail finds its head's batch)."""
    for event in reversed(loom.events()):
        if event.kind != ev.ADD:
            continue
        records = [r for r in event.payload["nodes"] if _same_batch(settings, r, node_id)]
        if not records:
            continue
        members = {}
        for rec in records:
            gen = GenerationSettings.from_json(rec["generation"])
            ref = ev.ref_of(rec.get("tokens"))
            tokens = TokenArray.empty() if ref is None else loom.stored_tokens(ref)
            index = gen.batch_index if gen.batch_index is not None else 0
            members[index] = _Member(int(rec["id"]), index, tokens)
        return _Origin(event.seq, int(event.payload["parent"]), members)
    return None


def _from_tree(loom: Loom, node_id: int, settings: GenerationSettings) -> _Origin:
    """The batch as the tree holds it now (a loom imported without its history)."""
    node = loom.node(node_id)
    if node.parent is None:
        raise RegenerationError(f"node {node_id} is the root: there is no prompt before it")
    members = {}
    for header in loom.children(node.parent):
        sibling = loom.node(header.id)
        gen = sibling.generation
        if gen is None:
            continue
        if (settings.batch_id is not None and gen.batch_id == settings.batch_id) or (
            sibling.id == node_id
        ):
            index = gen.batch_index if gen.batch_index is not None else 0
            members[index] = _Member(sibling.id, index, sibling.tokens)
    return _Origin(None, node.parent, members)


def _path_ids(loom: Loom, node_id: int, backend: Backend) -> list[int]:
    """The path to `node_id` as `backend` reads it: another model's nodes re-tokenized from
    their text, as the session did when generating (see loom.engine.vocabulary)."""
    return ids_for(backend, [(n.text, n.tokens) for n in loom.path_nodes(node_id)])


def _prompt(loom: Loom, origin: _Origin, backend: Backend) -> list[int]:
    """The parent's path tokens as the model read them when the batch was generated."""
    if origin.seq is None:
        return _path_ids(loom, origin.parent, backend)
    replay = Replay(loom.events(), tokens=loom)
    replay.advance_to(origin.seq - 1)  # just before the add: the path the model read
    view = replay.loom
    if view is None:
        raise RegenerationError("the event log does not build a loom before this generation")
    # Text typed without a tokenizer is tokenized as the session did when generating.
    view.tokenizer = FunctionTokenizer(backend.tokens_for)
    return _path_ids(view, origin.parent, backend)


# --- finding the model ----------------------------------------------------------------------


def find_model(
    node_id: int,
    settings: GenerationSettings,
    models_dirs: Iterable[Path],
    model_path: Path | None = None,
) -> Path:
    """The GGUF whose sha256 is the recorded one: `model_path` if given (checked), else the
    models dirs' files (name matches first, so big unrelated files are rarely hashed), else the
    default model."""
    from loom.engine.errors import ModelError
    from loom.engine.hashing import sha256_of
    from loom.engine.models import default_model_path, discover_models

    wanted = settings.model_sha256.lower()
    if not wanted:
        raise RegenerationError(
            f"node {node_id} records no model sha256 (generated by a remote server?): "
            "there is no way to tell which model file wrote it"
        )
    if model_path is not None:
        actual = sha256_of(Path(model_path))
        if actual != wanted:
            raise RegenerationError(
                f"{model_path} has sha256 {actual}, but node {node_id} was written by "
                f"{settings.model or 'another model'} (sha256 {wanted})"
            )
        return Path(model_path)
    dirs = list(models_dirs)
    infos = discover_models(dirs, include_default=True)
    infos.sort(key=lambda info: info.name != settings.model)
    for info in infos:
        if info.sha256 == wanted:
            return info.path
    try:
        default = default_model_path()
    except ModelError:
        default = None
    if default is not None and sha256_of(default) == wanted:
        return default
    raise MissingModelError(node_id, settings.model, wanted, dirs)


# --- regenerating ---------------------------------------------------------------------------


def regenerate(
    loom: Loom,
    node_id: int,
    *,
    models_dirs: Iterable[Path],
    engine_loader: EngineLoader,
    model_path: Path | None = None,
    backend: Backend | None = None,
) -> RegenerationReport:
    """Re-run the batch that wrote `node_id` and compare its branch with what was stored.
    `backend`: re-run on this one (a remote server) instead of the recorded model file."""

    node = loom.node(node_id)
    settings = node.generation
    if node.author != "model" or settings is None:
        raise RegenerationError(
            f"node {node_id} was not generated by a model here (no generation record)"
        )
    if settings.seed is None and settings.temperature > 0:
        raise RegenerationError(
            f"node {node_id} was sampled without a recorded seed: it cannot be reproduced"
        )
    origin = _from_log(loom, node_id, settings)
    notes = []
    if origin is None:
        origin = _from_tree(loom, node_id, settings)
        notes.append(
            "the event log does not hold this generation (imported?): compared with the "
            "current path and tokens"
        )
    size = settings.batch_size or 1
    index = settings.batch_index or 0
    own = origin.members.get(index)
    if own is None:
        raise RegenerationError(f"node {node_id}: branch {index} of its batch was not found")
    if settings.forced_tokens and len(settings.forced_tokens) >= len(own.tokens):
        raise RegenerationError(
            f"node {node_id} was chosen token by token (a multiverse path), not sampled: "
            "there is nothing to regenerate"
        )
    if backend is None:
        path: Path | str = find_model(node_id, settings, models_dirs, model_path)
        backend = engine_loader(Path(path))
    else:
        path = backend.info.name
        if backend.info.name != settings.model:
            notes.append(f"the node records model {settings.model!r}, re-run on {path!r}")
    limit = getattr(backend, "n_seq_max", None)
    if isinstance(limit, int) and size > limit:
        raise RegenerationError(
            f"the batch had {size} branches but the engine holds at most {limit} sequences"
        )
    # The memories the generation read, as its record keeps them (not as they are now).
    read = backend  # the memory texts are tokenized by the model that re-runs them
    prompt = assemble(
        _prompt(loom, origin, backend), settings.memory, lambda t: read.tokenize(t)
    ).ids
    if settings.memory:
        notes.append(
            f"read with the hidden context it was generated with ({len(settings.memory)} "
            "memory text(s), as recorded)"
        )
    branches = backend.generate(
        prompt,
        size,
        sampler_settings_of(settings),
        top_logprobs=own.tokens.k,
        forced=list(settings.forced_tokens) or None,
        fresh=True,  # from an empty KV cache: what is guaranteed to reproduce (engine.py)
    )
    by_index = {int(b.index): b for b in branches}
    comparisons = []
    for i in range(size):
        member = origin.members.get(i)
        new = by_index.get(i)
        new_tokens: TokenArray = new.tokens if new is not None else TokenArray.empty()
        stored = member.tokens if member is not None else TokenArray.empty()
        comparisons.append(
            BranchComparison(
                batch_index=i,
                node_id=None if member is None else member.node_id,
                stored=[int(t) for t in stored.ids],
                regenerated=[int(t) for t in new_tokens.ids],
                stored_pieces=list(stored.texts),
                regenerated_pieces=list(new_tokens.texts),
            )
        )
    mine = comparisons[index]
    notes.extend(_notes(node.tokens, mine, origin, settings))
    return RegenerationReport(
        node_id=node_id,
        model_name=settings.model,
        model_path=path,
        model_sha256=settings.model_sha256,
        prompt_tokens=len(prompt),
        batch_size=size,
        batch_index=index,
        seed=settings.seed,
        branch=mine,
        siblings=[c for c in comparisons if c.batch_index != index],
        notes=notes,
    )


def _notes(
    now: TokenArray, mine: BranchComparison, origin: _Origin, settings: GenerationSettings
) -> list[str]:
    notes = []
    if origin.seq is not None and [int(t) for t in now.ids] != mine.stored:
        notes.append(
            "the node was changed after it was generated (edited, split or merged): "
            "compared with its tokens as generated"
        )
    n = len(mine.stored)
    if not mine.identical and n < len(mine.regenerated) and mine.regenerated[:n] == mine.stored:
        notes.append(
            "the stored branch is a prefix of the regenerated one: its generation was "
            "probably cancelled before it finished"
        )
    elif not mine.identical and settings.from_empty_cache:
        notes.append(
            "this node was generated from an empty KV cache, which regenerates identically with "
            "the same model file, llama.cpp build and CPU kind: was it made on another machine "
            "or with another llama-cpp-python?"
        )
    elif not mine.identical and settings.cached_prefix:
        notes.append(
            f"this node was generated with {settings.cached_prefix} prompt tokens taken from "
            "the engine's KV cache; on some CPUs that changes logits in the last bits, which can "
            "change sampled tokens. Only generations that start from an empty cache are "
            "guaranteed to regenerate identically (the reproducible setting)"
        )
    elif not mine.identical and settings.from_empty_cache is False:
        notes.append(
            "other branches were held in the engine's KV cache when this node was generated; on "
            "some CPUs their layout changes logits in the last bits, which can change sampled "
            "tokens. Only generations that start from an empty cache are guaranteed to "
            "regenerate identically (the reproducible setting)"
        )
    elif not mine.identical:
        notes.append(
            "the node does not record how the engine's KV cache stood (an older loom); a cached "
            "prompt can change sampled tokens on some CPUs"
        )
    return notes
