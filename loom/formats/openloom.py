"""Open Loom: OpenLoom 1.0 trees, and the "open-loom" version 2 that loom writes.

The only published Open Loom specification found is OpenLoom 1.0 (rocketbro.github.io,
`_projects/openloom/nodes.md` and `loom-trees.md`; reference app intrinsic-labs/loom-swift):

    LoomTree {id, title, description|null, lastModified, systemMessage, rootNodeId,
              currentNodeId, nodes: {id: Node}, bookmarkedNodes: {id: Node}}
    Node {id, text, author: "user"|"assistant"|"system", modelId, createdTime, parentId|null,
          childrenIds: [id], rememberedChildId|null}

No "version 2" and no `extensions` block exist in it. Version 2 here is loom's own design, kept
a strict superset of 1.0 so a 1.0 reader still finds every field it expects:

    + "format": "open-loom", "version": 3
    + node "extensions": {"loom": {"id", "author": "human"|"model", "created_at" (exact unix
      seconds), "tokens" (loom-json 2 columns), "scored" (readings by models, as loom-json's),
      "generation", "persona", "manual_persona",
      "pruned", "tags", "meta"}}
    + tree "extensions": {"loom": {"root", "personas", "vocab", "token_arrays", "events",
      "meta"}}: the token encoding of loom-json 2 (one vocabulary, columns, `{"$tok": key}`)

Version 2 (loom-json 1 tokens, events with `$tokdata`) is still read.

Dates are ISO 8601 UTC strings. Ids are strings (decimal loom ids on export). A human author is
"user", the model "assistant". `rememberedChildId` follows the path to the current node.
On import, 1.0 files (no "format") get fresh int ids in reading order, the original kept in
`node.meta["openloom_id"]`; "system" nodes become human nodes marked in `meta`.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from loom.formats import fields as f
from loom.formats.errors import FormatError
from loom.formats.loomjson import (
    _dump,
    columns_from_json,
    columns_to_json,
    generation_from_json,
    node_to_json,
    node_tokens_json,
    optional_string,
    persona_from_json,
    personas_from_json,
    score_to_json,
    scores_from_json,
    tokens_from_json,
    vocab_from_json,
)
from loom.formats.tree import ordered_nodes, preorder_ids
from loom.store import codec
from loom.store.errors import LoomError
from loom.store.model import Author, LoomDocument, Node
from loom.store.stream import DocumentStream, MemorySink, MemoryStream, StreamNode
from loom.tokens import TokenArray

FORMAT = "open-loom"
VERSION = 3
_AUTHORS: dict[str, Author] = {"user": "human", "assistant": "model", "system": "human"}


def iso(seconds: float) -> str:
    try:
        when = datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise FormatError(f"a node time ({seconds}) is out of range") from None
    return when.isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_time(value: Any) -> float | None:
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return None
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # JavaScript milliseconds, or seconds (anything before 1973 in ms is taken as seconds).
        return float(value) / 1000.0 if abs(value) > 1e11 else float(value)
    return None


def write(doc: LoomDocument, current: int | None) -> str:
    stream = MemoryStream(doc, current)
    return b"".join(write_stream(stream)).decode("utf-8")


def write_stream(stream: DocumentStream, tick: Any = None) -> Any:
    """The file a line at a time (bytes): nodes one by one, then the tree's extension block."""
    head = stream.head
    current_id = head.root if head.current is None else head.current
    remembered = dict(itertools.pairwise(stream.current_path()))
    open_meta = head.meta.get("openloom")
    open_meta = open_meta if isinstance(open_meta, dict) else {}
    top = {
        "format": FORMAT,
        "version": VERSION,
        "id": str(open_meta.get("id", "")),
        "title": head.title,
        "description": open_meta.get("description"),
        "systemMessage": str(open_meta.get("systemMessage", "")),
        "rootNodeId": str(head.root),
        "currentNodeId": str(current_id),
    }
    yield _dump(top)[:-1] + b",\n"
    entries = dict(stream.vocabulary())
    vocab = codec.VocabTable(entries)
    yield b'"nodes":{\n'
    bookmarked: list[bytes] = []
    latest = 0.0
    first = True
    for item in stream.nodes(columns=True):
        node = item.node
        latest = max(latest, node.created_at)
        plain = {
            "id": str(node.id),
            "text": node.text,
            "author": "assistant" if node.author == "model" else "user",
            "modelId": node.generation.model if node.generation else "",
            "createdTime": iso(node.created_at),
            "parentId": None if node.parent is None else str(node.parent),
            "childrenIds": [str(c) for c in item.children],
            "rememberedChildId": str(remembered[node.id]) if node.id in remembered else None,
        }
        key = _dump(str(node.id))
        if node.bookmarked:
            bookmarked.append(key + b":" + _dump(plain))
        ext = _node_extension(item, vocab)
        line = key + b":" + _dump({**plain, "extensions": {"loom": ext}})
        yield (b"" if first else b",\n") + line
        first = False
        if tick is not None:
            tick()
    yield (b"" if first else b"\n") + b"},\n"
    yield b'"bookmarkedNodes":{' + b",\n".join(bookmarked) + b"},\n"
    yield b'"lastModified":' + _dump(iso(latest)) + b",\n"  # not "now": exports are reproducible
    tree_ext = {
        "root": head.root,
        "personas": [p.to_json() for p in head.personas],
        "meta": {k: v for k, v in head.meta.items() if k != "current"},
        "vocab": {str(i): t for i, t in entries.items()},
    }
    yield b'"extensions":{"loom":' + _dump(tree_ext)[:-1] + b',"token_arrays":[\n'
    first = True
    for token_key in stream.event_token_keys():
        columns = columns_to_json(stream.tokens(token_key), vocab) or {}
        yield (b"" if first else b",\n") + _dump({"key": token_key, **columns})
        first = False
    yield b'],"events":[\n'
    first = True
    for event in stream.events():
        yield (b"" if first else b",\n") + _dump(event)
        first = False
        if tick is not None:
            tick()
    yield b"]}}}\n"


# Open Loom holds these natively; the extension carries the rest of the loom-json node.
_NATIVE_FIELDS = ("parent", "text", "bookmarked")


def _node_extension(item: StreamNode, vocab: codec.VocabTable) -> dict[str, Any]:
    node = item.node
    ext = node_to_json(node, with_tokens=False)
    for name in _NATIVE_FIELDS:
        del ext[name]
    ext["tokens"] = node_tokens_json(item, vocab)
    if node.scores:  # read by a model that did not write the text, not sampled
        ext["scored"] = [score_to_json(s, columns_to_json(s.tokens, vocab)) for s in node.scores]
    return ext


def read(data: Any, name: str = "") -> LoomDocument:
    top = f.obj(data, "an Open Loom file")
    fmt = top.get("format")
    if fmt is not None and fmt != FORMAT:
        raise FormatError(f"not an Open Loom file (its format is {f.brief(fmt)})")
    version = top.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise FormatError(f"Open Loom version must be an integer, not {f.brief(version)}")
    if version > VERSION:
        raise FormatError(
            f"Open Loom version {version} is newer than this loom reads (up to {VERSION})"
        )
    raw = f.obj(top.get("nodes"), "nodes")
    root_key = f.string(top.get("rootNodeId"), "rootNodeId")
    if root_key not in raw:
        raise FormatError(f"the root node {f.brief(root_key)} is missing")
    tree_ext = _extension(top)
    exts = {key: _extension(f.obj(value, f"node {f.brief(key)}")) for key, value in raw.items()}
    # Keep loom's own ids when every node carries one (a file loom wrote); else number afresh.
    own = [e.get("id") for e in exts.values()]
    keep_ids = all(isinstance(i, int) and not isinstance(i, bool) for i in own)
    keep_ids = keep_ids and len(set(own)) == len(own)
    ids = _ids(raw, root_key, keep_ids, exts)
    # Fresh ids follow reading order, so list the nodes that way too (siblings sort by id).
    keys = list(raw) if keep_ids else sorted(raw, key=ids.__getitem__)
    vocab = vocab_from_json(tree_ext["vocab"]) if tree_ext.get("vocab") is not None else {}
    nodes = [_node(key, raw[key], ids, exts[key], keep_ids, vocab) for key in keys]
    marked = f.obj(top.get("bookmarkedNodes") or {}, "bookmarkedNodes")
    for node, key in zip(nodes, keys, strict=True):
        node.bookmarked = key in marked
    meta: dict[str, Any] = {}
    ext_meta = tree_ext.get("meta")
    if isinstance(ext_meta, dict):
        meta.update(ext_meta)
    else:
        kept = {k: top[k] for k in ("id", "description", "systemMessage") if top.get(k)}
        if kept:
            meta["openloom"] = kept
    current = top.get("currentNodeId")
    if isinstance(current, str) and current in ids:
        meta["current"] = ids[current]
    events = [f.obj(e, "an event") for e in f.array(tree_ext.get("events") or [], "events")]
    if events and keep_ids and version >= 3:
        events = _events_with_data(nodes, exts, keys, tree_ext, events)
    if events and not keep_ids:
        # Nodes were added elsewhere and everything was renumbered: the log no longer fits.
        warnings = meta.setdefault("import_warnings", [])
        warnings.append(f"{len(events)} events dropped: the file was changed outside loom")
        events = []
    title = top.get("title")
    return LoomDocument(
        title=title if isinstance(title, str) else name,
        root=ids[root_key],
        nodes=ordered_nodes(nodes, ids[root_key]),
        personas=personas_from_json(tree_ext.get("personas") or [], "extensions.loom.personas"),
        events=events,
        meta=meta,
    )


def _extension(data: dict[str, Any]) -> dict[str, Any]:
    ext = data.get("extensions")
    loom = ext.get("loom") if isinstance(ext, dict) else None
    return loom if isinstance(loom, dict) else {}


def _ids(
    raw: dict[str, Any], root_key: str, keep: bool, exts: dict[str, dict[str, Any]]
) -> dict[str, int]:
    if keep:
        return {key: int(exts[key]["id"]) for key in raw}
    # Reading order from the root, children in `childrenIds` order, then anything unreached.
    claimed: dict[str, list[str]] = {key: [] for key in raw}
    for key, node in raw.items():
        parent = node.get("parentId") if isinstance(node, dict) else None
        if isinstance(parent, str) and parent in claimed:
            claimed[parent].append(key)
    children: dict[str, list[str]] = {}
    for key, node in raw.items():
        listed = node.get("childrenIds") if isinstance(node, dict) else None
        mine = set(claimed[key])
        order = [c for c in listed if c in mine] if isinstance(listed, list) else []
        taken = set(order)
        children[key] = order + [c for c in claimed[key] if c not in taken]
    order = preorder_ids(root_key, children)
    seen = set(order)
    order += [k for k in raw if k not in seen]
    return {key: i + 1 for i, key in enumerate(order)}


def _tokens(value: Any, where: str, vocab: dict[int, str]) -> TokenArray:
    """A node's tokens: loom-json 2 columns (version 3), or loom-json 1 objects (version 2)."""
    if isinstance(value, dict):
        return columns_from_json(value, where, vocab)
    return tokens_from_json(value or [], where)


def _events_with_data(
    nodes: list[Node],
    exts: dict[str, dict[str, Any]],
    keys: list[str],
    tree_ext: dict[str, Any],
    events: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Version 3 events name token arrays by key: give them their data back (`$tokdata`)."""
    sink = MemorySink()
    vocab = vocab_from_json(tree_ext.get("vocab") or {})
    for node, key in zip(nodes, keys, strict=True):
        tokens = exts[key].get("tokens")
        token_key = tokens.get("key") if isinstance(tokens, dict) else None
        sink.node(node, token_key if isinstance(token_key, int) else None)
    arrays = f.array(tree_ext.get("token_arrays") or [], "extensions.loom.token_arrays")
    for i, item in enumerate(arrays):
        data = f.obj(item, f"token_arrays[{i}]")
        array_key = data.get("key")
        if isinstance(array_key, bool) or not isinstance(array_key, int):
            raise FormatError(f"token_arrays[{i}] has no integer key")
        sink.token_array(array_key, columns_from_json(data, f"token array {array_key}", vocab))
    for event in events:
        try:
            sink.event(event)
        except LoomError as exc:
            raise FormatError(str(exc)) from None
    return sink.events


def _node(
    key: str,
    raw: Any,
    ids: dict[str, int],
    ext: dict[str, Any],
    keep_ids: bool,
    vocab: dict[int, str],
) -> Node:
    where = f"node {f.brief(key)}"
    data = f.obj(raw, where)
    parent_key = data.get("parentId")
    parent: int | None = None
    if parent_key is not None:
        if not isinstance(parent_key, str) or parent_key not in ids:
            raise FormatError(f"{where} has a dangling parent {f.brief(parent_key)}")
        parent = ids[parent_key]
    open_author = data.get("author")
    if open_author not in _AUTHORS and ext.get("author") is None:
        raise FormatError(
            f"{where} author must be user, assistant or system, not {f.brief(open_author)}"
        )
    author = ext.get("author", _AUTHORS.get(str(open_author)))
    if author not in ("human", "model"):
        raise FormatError(f"{where} loom author must be 'human' or 'model', not {f.brief(author)}")
    meta = dict(f.obj(ext.get("meta", {}), f"{where} extensions.loom.meta"))
    if not keep_ids:
        meta["openloom_id"] = key
    if open_author == "system":
        meta["openloom_author"] = "system"
    if data.get("modelId") and not ext:
        meta["openloom_model"] = data["modelId"]
    created = ext.get("created_at")
    created_at = (
        f.number(created, f"{where} created_at")
        if created is not None
        else parse_time(data.get("createdTime")) or 0.0
    )
    return Node(
        id=ids[key],
        parent=parent,
        author=author,
        text=f.string(data.get("text", ""), f"{where} text"),
        created_at=created_at,
        tokens=_tokens(ext.get("tokens"), f"{where} tokens", vocab),
        generation=generation_from_json(ext.get("generation"), f"{where} generation"),
        persona=persona_from_json(ext.get("persona"), f"{where} persona"),
        manual_persona=optional_string(ext.get("manual_persona"), f"{where} manual_persona"),
        bookmarked=False,  # set from bookmarkedNodes by the caller
        pruned=f.boolean(ext.get("pruned", False), f"{where} pruned"),
        tags=f.strings(ext.get("tags") or [], f"{where} tags"),
        meta=meta,
        scores=scores_from_json(
            ext.get("scored"), f"{where} scored", lambda v, w: _tokens(v, w, vocab)
        ),
    )
