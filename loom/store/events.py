"""Events: what the log holds. Every change to a loom is one event, applied by `apply.apply_event`.

Payloads are JSON objects. Token arrays inside them are references into the immutable `tokens`
table, written `{"$tok": <id>}`; exported events carry the data itself instead,
`{"$tokdata": {...}}` (see `codec.row_to_json`), so an exported log is self-contained.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from loom.store import codec, compress
from loom.store.errors import damaged

# Kinds. Undoable ones are tree edits; the others describe the session around them.
CREATE = "create"  # a new loom: snapshot with the root (resets the state)
IMPORT = "import"  # a loom built from a document: snapshot of every node (resets the state)
# More nodes of the snapshot just before (payload {"nodes": [...]}): a large import is logged as
# one `import` and as many of these as it takes, so no single payload grows with the tree.
IMPORT_NODES = "import_nodes"
ADD = "add"  # nodes added under a parent (one event for a whole generation batch)
EDIT = "edit"
SPLIT = "split"
MERGE = "merge"
PRUNE = "prune"
UNPRUNE = "unprune"
DELETE = "delete"
BOOKMARK = "bookmark"
TAG = "tag"
UNTAG = "untag"
MOVE = "move"
PERSONA = "persona"  # the model's posterior label of a node
MANUAL_PERSONA = "manual_persona"
PERSONAS = "personas"  # the loom's persona set
TITLE = "title"
VISIT = "visit"  # the current node changed (not undoable)
UNDO = "undo"  # payload {"target": seq}
REDO = "redo"  # payload {"target": seq}
DISCARD_REDO = "discard_redo"  # payload {"targets": [seq, ...]}: a new edit made them unredoable
GROUP = "group"  # payload {"seqs": [seq, ...], "auto"?: policy}: these edits undo as one step
# A census of a node's futures (rollouts kept out of the tree). Payload: {"node": id, "seed",
# "settings": {...}, "names": [...], "model", "model_sha256", "token_index": i | None,
# "outcomes": [{"forced": [id], "text", "p", "rollouts": [{"tokens": {"$tok": ref}, "label",
# "posterior": {...}, "repetition", "collapse", "batch_seed", "batch_index"}]}]}.
CENSUS = "census"
# Hidden context set, changed or cleared: payload {"node": id | None (the loom's), "old": memory |
# None, "new": memory | None}, a memory as `model.Memory.kept` writes it.
MEMORY = "memory"

# Models' readings of nodes they did not write (derived data, not undoable: undo restores text,
# and a reading of text that is gone is simply not shown). Payload: {"model", "model_sha256",
# "scored_at", "nodes": [{"node": id, "tokens": {"$tok": ref}}]}.
SCORE = "score"

UNDOABLE = frozenset(
    {
        ADD,
        EDIT,
        SPLIT,
        MERGE,
        PRUNE,
        UNPRUNE,
        DELETE,
        BOOKMARK,
        TAG,
        UNTAG,
        MOVE,
        PERSONA,
        MANUAL_PERSONA,
        PERSONAS,
        TITLE,
        CENSUS,
        MEMORY,
    }
)
SNAPSHOTS = frozenset({CREATE, IMPORT})
KINDS = UNDOABLE | SNAPSHOTS | {IMPORT_NODES, VISIT, UNDO, REDO, DISCARD_REDO, GROUP, SCORE}
# Kinds whose payloads hold node records (and so grow with the nodes they carry): stored
# compressed once large (`stored_payload`). The others stay plain JSON text, which SQL reads.
_RECORD_KINDS = frozenset({CREATE, IMPORT, IMPORT_NODES, ADD, DELETE, SPLIT, MERGE})
_COMPRESS_FROM = 512  # bytes
_MAX_PAYLOAD = 1 << 30  # what a damaged compressed payload may claim to hold

# History states of an undoable event.
DONE, UNDONE, DISCARDED = 0, 1, 2

TOKEN_REF = "$tok"
TOKEN_DATA = "$tokdata"


@dataclass
class Event:
    seq: int
    ts: float  # unix seconds
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
    undone: bool = False  # undone and not redone (or discarded by a later edit)
    discarded: bool = False  # undone, then made unredoable by a new edit

    @property
    def undoable(self) -> bool:
        return self.kind in UNDOABLE

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts, "kind": self.kind, "payload": self.payload}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        """ValueError unless `data` is an event this loom knows."""
        if not isinstance(data, dict):
            raise ValueError("an event must be an object")
        seq, ts, kind, payload = (
            data.get("seq"),
            data.get("ts"),
            data.get("kind"),
            data.get("payload"),
        )
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise ValueError(f"event seq must be a positive integer, not {seq!r}")
        if isinstance(ts, bool) or not isinstance(ts, (int, float)):
            raise ValueError(f"event {seq}: ts must be a number")
        if kind not in KINDS:
            raise ValueError(f"event {seq}: unknown kind {kind!r}")
        if not isinstance(payload, dict):
            raise ValueError(f"event {seq}: payload must be an object")
        return cls(seq=seq, ts=float(ts), kind=str(kind), payload=payload)


def stored_payload(kind: str, text: str) -> str | bytes:
    """What the log keeps of a payload: its JSON text, or for a large payload of node records the
    text compressed (a BLOB, see `compress`). `payload_text` reads either."""
    if kind in _RECORD_KINDS and len(text) >= _COMPRESS_FROM:
        return compress.compress(text.encode("ascii"))
    return text


def payload_text(value: Any) -> Any:
    """The JSON text of a stored payload (anything else a damaged file holds, as it is)."""
    if isinstance(value, bytes):
        try:
            return compress.decompress(value, _MAX_PAYLOAD).decode("ascii")
        except (ValueError, UnicodeDecodeError):
            return None
    return value


def parse_payload(seq: int, text: Any) -> dict[str, Any]:
    """A payload as stored in the log; a damaged file may hold anything there."""
    try:
        payload = codec.read_json(payload_text(text))
    except (TypeError, ValueError):  # not JSON, or not even text
        payload = None
    if not isinstance(payload, dict):
        raise damaged(f"event {seq}'s payload is not a JSON object")
    return payload


def nesting_depth(value: Any, limit: int) -> int:
    """How deep `value` nests lists and objects (counting stops once past `limit`). Level by
    level, not recursive: the values worth measuring are the ones too deep to recurse over."""
    level = [value]
    depth = 0
    while depth <= limit:
        containers = [v for v in level if isinstance(v, (dict, list))]
        if not containers:
            break
        depth += 1
        level = [c for v in containers for c in (v.values() if isinstance(v, dict) else v)]
    return depth


def _not_finite(v: Any) -> bool:
    return isinstance(v, float) and v - v != 0.0  # inf - inf and NaN - NaN are NaN


def check_plain(value: Any, max_depth: int) -> None:
    """ValueError unless `value` nests lists and objects at most `max_depth` levels deep (as
    `nesting_depth` counts them) and holds no NaN or infinity: one walk for both, level by level
    (never recursive), so a value far too deep costs no more than `max_depth` levels of it."""
    level = [value]
    depth = 0
    while level:
        containers: list[Any] = []
        for v in level:
            if isinstance(v, (dict, list, tuple)):
                containers.append(v)
            elif _not_finite(v):
                raise ValueError("holds a NaN or an infinity")
        if not containers:
            return
        depth += 1
        if depth > max_depth:
            raise ValueError(f"is nested too deeply (over {max_depth} levels)")
        level = [c for v in containers for c in (v.values() if isinstance(v, dict) else v)]


def dumps(payload: dict[str, Any], *, finite: bool = False) -> str:
    """`payload` as the log keeps it: ASCII-only and NaN-free, so the log stays strict JSON
    whatever text the nodes hold (`finite`: the caller has checked it holds no NaN or infinity)."""
    return codec.json_text(payload, allow_nan=False, finite=finite)


# A reference as the log writes it. In JSON text a `"` inside a string is always escaped, so this
# matches structure only, never a node's text that spells one.
_TOKEN_REF_TEXT = re.compile(r'\{\s*"' + re.escape(TOKEN_REF) + r'"\s*:\s*(-?[0-9]+)\s*\}')


def token_refs_in(text: str) -> set[int]:
    """The token-table ids a payload's JSON text refers to (`{"$tok": id}`), found by a search:
    at 100k nodes, parsing and walking every payload for them was a seventh of an export."""
    return {int(found) for found in _TOKEN_REF_TEXT.findall(text)}


def token_ref(ref: int | None) -> dict[str, int] | None:
    return None if ref is None else {TOKEN_REF: ref}


def ref_of(value: Any) -> int | None:
    """The tokens-table id in a payload value (None for no tokens)."""
    if value is None:
        return None
    if isinstance(value, dict) and isinstance(value.get(TOKEN_REF), int):
        return int(value[TOKEN_REF])
    raise ValueError(f"not a token reference: {value!r}")


def map_tokens(
    value: Any,
    convert: Callable[[dict[str, Any]], Any],
    *,
    max_depth: int | None = None,
    finite: bool = False,
) -> Any:
    """A copy of `value` with every token reference or token data object replaced by `convert(it)`.

    ValueError if the copy nests lists and objects deeper than `max_depth` levels, or (`finite`)
    holds a NaN or an infinity: checked on the way, since at 100k nodes two more walks over the
    payloads for them took as long as the copy.

    Iterative: a delete of a deep subtree holds long lists, and payloads must never hit a recursion
    limit.
    """

    def is_token(v: Any) -> bool:
        return isinstance(v, dict) and (TOKEN_REF in v or TOKEN_DATA in v) and len(v) == 1

    deepest = max_depth if max_depth is not None else -1
    if is_token(value):
        return convert(value)
    if finite and _not_finite(value):
        raise ValueError("holds a NaN or an infinity")
    if not isinstance(value, (dict, list)):
        return value
    root: list[Any] = [value]
    out_root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, int]] = [(root, out_root, 0, 1)]
    while stack:
        src_container, dst_container, key, depth = stack.pop()
        src = src_container[key]
        if depth == deepest + 1 and isinstance(src, (dict, list)):
            raise ValueError(f"is nested too deeply (over {max_depth} levels)")
        if is_token(src):
            dst_container[key] = convert(src)
            continue
        if isinstance(src, dict):
            copy: Any = dict(src)
            items: Iterable[tuple[Any, Any]] = src.items()
        else:
            copy = list(src)
            items = enumerate(src)
        dst_container[key] = copy
        for k, v in items:
            if isinstance(v, (dict, list)):
                stack.append((src, copy, k, depth + 1))
            elif finite and _not_finite(v):
                raise ValueError("holds a NaN or an infinity")
    return out_root[0]


def still_done(seqs: Iterable[int], undo_redo: Iterable[tuple[str, int]]) -> set[int]:
    """Which of the events `seqs` are in effect after the log's undo and redo events
    ((kind, target) in log order): read from the log itself, so it holds for an imported log."""
    done = dict.fromkeys(seqs, True)
    for kind, target in undo_redo:
        if target in done:
            done[target] = kind == REDO
    return {seq for seq, is_done in done.items() if is_done}
