"""Plain data of a loom: what the store keeps and what every import/export format converts.

`LoomDocument` is the in-memory, flat form of a whole loom (the shape of a loom-json file).
Formats convert between it and files; the store converts between it and SQLite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from loom.tokens import TokenArray, mean_logprob

Author = Literal["human", "model"]
LabelSource = Literal["model", "human"]
NodeId = int

MEMORY_KEY = "memory"  # where a node's meta (or the loom's) keeps its hidden context


@dataclass(frozen=True)
class Memory:
    """Hidden context: text the model reads before continuing that the tree does not show.

    Kept in a node's meta (inherited by its descendants) or in the loom's (for every path), under
    `MEMORY_KEY`. `depth` None places it before the path; K places it as an author's note K tokens
    before the end of the path. `node` says where it was set (None: the loom) in a generation
    record, which keeps the memories a generation read; the memory kept on a node leaves it out.
    """

    text: str
    depth: int | None = None
    node: NodeId | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "depth": self.depth}
        if self.node is not None:
            out["node"] = self.node
        return out

    @classmethod
    def from_json(cls, data: Any) -> Memory:
        """ValueError unless `data` is a memory object."""
        if not isinstance(data, dict):
            raise ValueError("a memory must be an object with its text")
        text, depth, node = data.get("text"), data.get("depth"), data.get("node")
        if not isinstance(text, str) or not text:
            raise ValueError("a memory's text must be a non-empty string")
        if depth is not None and (
            isinstance(depth, bool) or not isinstance(depth, int) or depth < 0
        ):
            raise ValueError(f"a memory's depth must be a number of tokens >= 0, not {depth!r}")
        if node is not None and (isinstance(node, bool) or not isinstance(node, int)):
            raise ValueError(f"a memory's node must be a node id, not {node!r}")
        return cls(text=text, depth=depth, node=node)

    def kept(self) -> dict[str, Any]:
        """The form a node's (or the loom's) meta keeps: without `node`, which is where it is."""
        return {"text": self.text, "depth": self.depth}

    @property
    def placement(self) -> str:
        """How a person reads where it goes."""
        if self.depth is None:
            return "before the path"
        return f"author's note {self.depth} tokens from the end"


@dataclass
class GenerationSettings:
    """How a model-written node was made: enough to re-run it (`loom regenerate`)."""

    model: str
    model_sha256: str
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    seed: int | None
    max_tokens: int
    # The batch the node was generated in: batched decoding is only reproducible for the same batch.
    batch_id: str | None = None
    batch_index: int | None = None
    batch_size: int | None = None
    stop: list[str] = field(default_factory=list)
    forced_tokens: list[int] = field(default_factory=list)
    # How the engine's KV cache stood (None: not recorded): only a generation that started from an
    # empty cache is guaranteed to regenerate bit for bit.
    cached_prefix: int | None = None  # prompt tokens taken from the cache
    from_empty_cache: bool | None = None
    # The hidden context the model read (loom's first, then a node's), so a re-run reads it too
    # whatever the memories are now. Written only when there was some: older records stay as
    # they were.
    memory: list[Memory] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "model_sha256": self.model_sha256,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "seed": self.seed,
            "max_tokens": self.max_tokens,
            "batch_id": self.batch_id,
            "batch_index": self.batch_index,
            "batch_size": self.batch_size,
            "stop": list(self.stop),
            "forced_tokens": list(self.forced_tokens),
            "cached_prefix": self.cached_prefix,
            "from_empty_cache": self.from_empty_cache,
        }
        if self.memory:
            out["memory"] = [m.to_json() for m in self.memory]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GenerationSettings:
        return cls(
            model=str(data.get("model", "")),
            model_sha256=str(data.get("model_sha256", "")),
            temperature=float(data.get("temperature", 1.0)),
            top_p=float(data.get("top_p", 1.0)),
            top_k=int(data.get("top_k", 0)),
            min_p=float(data.get("min_p", 0.0)),
            seed=None if data.get("seed") is None else int(data["seed"]),
            max_tokens=int(data.get("max_tokens", 0)),
            batch_id=data.get("batch_id"),
            batch_index=data.get("batch_index"),
            batch_size=data.get("batch_size"),
            stop=[str(s) for s in data.get("stop") or []],
            forced_tokens=[int(t) for t in data.get("forced_tokens") or []],
            cached_prefix=None if data.get("cached_prefix") is None else int(data["cached_prefix"]),
            from_empty_cache=(
                None if data.get("from_empty_cache") is None else bool(data["from_empty_cache"])
            ),
            memory=[Memory.from_json(m) for m in data.get("memory") or []],
        )


@dataclass
class PersonaLabel:
    """Which persona a node voices. `label` None with a posterior means "scored, undecided"."""

    label: str | None
    source: LabelSource
    posterior: dict[str, float] = field(default_factory=dict)
    # Written by loom.personas (see docs/personas.md); serialised only when set, so plain labels
    # keep the loom-json shape.
    raw_posterior: dict[str, float] = field(default_factory=dict)  # uncalibrated posterior
    path_posterior: dict[str, float] = field(default_factory=dict)  # after root..node (trajectory)
    collapse: bool = False  # the path posterior jumped at this node (waluigi collapse)
    mode_collapse: bool = False  # the path ends in a repetition loop at this node
    bias: dict[str, float] = field(default_factory=dict)  # calibration used, nats per token

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "label": self.label,
            "source": self.source,
            "posterior": dict(self.posterior),
        }
        for key in ("raw_posterior", "path_posterior", "bias"):
            value: dict[str, float] = getattr(self, key)
            if value:
                out[key] = dict(value)
        for key in ("collapse", "mode_collapse"):
            if getattr(self, key):
                out[key] = True
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PersonaLabel:
        source = data.get("source", "model")
        if source not in ("model", "human"):
            raise ValueError(f"persona source must be 'model' or 'human', not {source!r}")
        return cls(
            label=data.get("label"),
            source=source,
            posterior=_floats(data.get("posterior")),
            raw_posterior=_floats(data.get("raw_posterior")),
            path_posterior=_floats(data.get("path_posterior")),
            collapse=bool(data.get("collapse", False)),
            mode_collapse=bool(data.get("mode_collapse", False)),
            bias=_floats(data.get("bias")),
        )


def _floats(data: dict[str, Any] | None) -> dict[str, float]:
    return {str(k): float(v) for k, v in (data or {}).items()}


@dataclass
class Persona:
    name: str
    description: str
    color: str = "white"
    prior: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "color": self.color,
            "prior": self.prior,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Persona:
        return cls(
            name=str(data["name"]),
            description=str(data.get("description", "")),
            color=str(data.get("color", "white")),
            prior=float(data.get("prior", 1.0)),
        )


@dataclass
class NodeScore:
    """A model's reading of a node it did not write (human-written or imported text): the text's
    tokens as that model tokenizes them, each with the logprob, entropy and alternatives the model
    gave it — "read by the model", not sampled. `model`/`model_sha256` name the model as a
    generation record does."""

    model: str
    model_sha256: str
    tokens: TokenArray
    scored_at: float  # unix seconds


@dataclass
class Node:
    id: NodeId
    parent: NodeId | None
    author: Author
    text: str
    created_at: float  # unix seconds
    tokens: TokenArray = field(default_factory=TokenArray.empty)
    generation: GenerationSettings | None = None
    persona: PersonaLabel | None = None  # the model's posterior (and label) for this node
    manual_persona: str | None = None  # a label the user set by hand; always wins
    bookmarked: bool = False
    pruned: bool = False
    tags: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # foreign fields kept by importers
    scores: list[NodeScore] = field(default_factory=list)  # readings by models, oldest first


def needs_reading(node: Node) -> bool:
    """Whether the node's text has no probabilities of its own (the model never read it)."""
    return bool(node.text) and mean_logprob(node.tokens.logprobs) is None


def reading_by(node: Node, model: str, model_sha256: str = "") -> NodeScore | None:
    """The reading of the node's current text by this model (by name, and by sha256 when both
    are known), the newest if several."""
    for score in reversed(node.scores):
        if score.model == model and (
            not model_sha256 or not score.model_sha256 or score.model_sha256 == model_sha256
        ):
            return score
    return None


def shown_tokens(
    node: Node, model: str = "", model_sha256: str = ""
) -> tuple[TokenArray, NodeScore | None]:
    """The tokens a view shows for a node, and the reading they come from (None: the node's
    own). A model-written node shows what it sampled; other text shows `model`'s reading of it,
    else the newest reading by any model, else its tokens without probabilities."""
    if not needs_reading(node) or not node.scores:
        return node.tokens, None
    score = reading_by(node, model, model_sha256) if model else None
    score = score or node.scores[-1]
    return score.tokens, score


@dataclass
class LoomDocument:
    """A whole loom, flat: nodes listed parents-before-children, never nested."""

    title: str
    root: NodeId
    nodes: list[Node]
    personas: list[Persona] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
