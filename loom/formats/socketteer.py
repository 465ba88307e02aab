"""socketteer/loom save files (github.com/socketteer/loom, `model.py` save_tree / load_tree_data).

A save file is the app's whole `tree_raw_data`: `"root"` is one nested node
(`id`, `text`, `children`, `parent_id` except on the root, and whatever else the app put there:
`meta` {`creation_timestamp` "%Y-%m-%d-%H.%M.%S", `source` "AI"/"prompt"/"mixed", `modified`,
`generation`}, `generation`, `tags`, `chapter_id`, `visited`, `open`, `mutable`,
`text_attributes`, `masked_head`...), beside top-level `chapters`, `tags` (tag definitions),
`selected_node_id`, `canonical`, `summaries`, `generation_settings`, `preferences`... Older files
mark bookmarks with a node attribute `"bookmark": true`; newer ones with the tag `"bookmark"`.
A bare `{"text", "children"}` tree (socketteer's "simple tree" export) is read too.

Mapping: nodes get fresh int ids in reading order (so siblings keep their order when sorted by
id); the original id stays in `node.meta["socketteer_id"]`, every other foreign node field in
`node.meta["socketteer"]`, and the top-level fields in `doc.meta["socketteer"]`, so an export
rebuilds the same file. Author: `meta.source` "AI" (or `meta.origin` "generated") is the model,
anything else a human ("mixed" is model text a human edited). The tag "bookmark" (or the old
attribute) is `bookmarked`; the tag "archived" (socketteer hides archived nodes) is `pruned`.
Timestamps carry no zone: they are read and written as UTC, so they round-trip unchanged.

loom's own data (tokens, generation settings, persona labels, a node's memory, models'
readings) rides along in a per-node `"loom"` object that socketteer keeps but ignores (the
loom's memory in the top-level one); tokens are restored only while they still spell the node's
text (socketteer may have edited or split the node since).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from loom.formats import fields as f
from loom.formats import jsonio
from loom.formats.errors import FormatError
from loom.formats.loomjson import (
    generation_from_json,
    optional_string,
    persona_from_json,
    personas_from_json,
    score_to_json,
    scores_from_json,
    tokens_from_json,
)
from loom.formats.tree import depths, ordered_nodes
from loom.store.model import MEMORY_KEY, Author, LoomDocument, Node

_TIME_FORMAT = "%Y-%m-%d-%H.%M.%S"
_OWN_KEYS = {"id", "text", "children", "parent_id", "tags", "bookmark", "loom"}
# socketteer's DEFAULT_TAGS: defined by the app whatever the file says.
_DEFAULT_TAGS = {"bookmark", "canonical", "archived", "note", "pinned"}
# Deeper trees are written without indentation: indentation grows with depth (quadratic size).
_INDENT_DEPTH_LIMIT = 64


def parse_timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, _TIME_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def format_timestamp(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, tz=UTC).strftime(_TIME_FORMAT)
    except (OverflowError, OSError, ValueError):
        raise FormatError(f"a node time ({seconds}) is out of range") from None


def _author(raw: dict[str, Any]) -> Author:
    meta = raw.get("meta")
    if isinstance(meta, dict) and (meta.get("source") == "AI" or meta.get("origin") == "generated"):
        return "model"
    return "human"


def read(data: Any, name: str = "") -> LoomDocument:
    top = f.obj(data, "a socketteer file")
    if "root" in top:
        root_raw = top["root"]
        extra = {k: v for k, v in top.items() if k not in ("root", "loom")}
    elif "text" in top and "children" in top:
        root_raw, extra = top, {}
    else:
        raise FormatError("not a socketteer file (no 'root' node)")
    loom_top: dict[str, Any] = top["loom"] if isinstance(top.get("loom"), dict) else {}

    nodes: list[Node] = []
    by_socketteer_id: dict[str, int] = {}
    warnings: list[str] = []
    # (raw node, parent id, parent created_at); a stack, so the walk never recurses.
    stack: list[tuple[Any, int | None, float]] = [(root_raw, None, 0.0)]
    while stack:
        raw, parent, parent_time = stack.pop()
        node_id = len(nodes) + 1
        node = _node(raw, node_id, parent, parent_time, warnings)
        nodes.append(node)
        sid = node.meta.get("socketteer_id")
        if isinstance(sid, str):
            by_socketteer_id.setdefault(sid, node_id)
        children = f.array(raw.get("children", []), f"children of node #{node_id}")
        stack.extend((child, node_id, node.created_at) for child in reversed(children))

    meta: dict[str, Any] = {"socketteer": extra}
    selected = extra.get("selected_node_id")
    if isinstance(selected, str) and selected in by_socketteer_id:
        meta["current"] = by_socketteer_id[selected]
    if warnings:
        meta["import_warnings"] = warnings
    if loom_top.get("memory") is not None:  # checked with the rest of the document on import
        meta[MEMORY_KEY] = loom_top["memory"]
    title = loom_top["title"] if isinstance(loom_top.get("title"), str) else name
    return LoomDocument(
        title=title,
        root=1,
        nodes=ordered_nodes(nodes, 1),
        personas=personas_from_json(loom_top.get("personas") or [], "loom.personas"),
        meta=meta,
    )


def _node(
    raw: Any, node_id: int, parent: int | None, parent_time: float, warnings: list[str]
) -> Node:
    where = f"node #{node_id}"
    raw = f.obj(raw, where)
    meta: dict[str, Any] = {}
    if "id" in raw:
        sid = raw["id"]
        # Real files hold numeric-looking ids as strings; keep whatever is there, as a string.
        meta["socketteer_id"] = sid if isinstance(sid, str) else jsonio.dumps(sid)
        where = f"node {meta['socketteer_id']}"
    text = f.string(raw.get("text", ""), f"{where} text")
    tags = f.strings(raw.get("tags") or [], f"{where} tags")
    foreign = {k: v for k, v in raw.items() if k not in _OWN_KEYS}
    if foreign:
        meta["socketteer"] = foreign
    if "bookmark" in raw:
        meta["socketteer_bookmark_attribute"] = True
    raw_meta = raw.get("meta") if isinstance(raw.get("meta"), dict) else {}
    created = parse_timestamp(raw_meta.get("creation_timestamp"))
    node = Node(
        id=node_id,
        parent=parent,
        author=_author(raw),
        text=text,
        # Untimed nodes take their parent's time, so times never run backwards down a path.
        created_at=parent_time if created is None else created,
        bookmarked="bookmark" in tags or bool(raw.get("bookmark")),
        pruned="archived" in tags,
        tags=[t for t in tags if t not in ("bookmark", "archived")],
        meta=meta,
    )
    ext = raw.get("loom")
    if isinstance(ext, dict):
        _apply_extension(node, ext, where, warnings)
    return node


def _apply_extension(node: Node, ext: dict[str, Any], where: str, warnings: list[str]) -> None:
    where = f"{where} loom"
    if ext.get("created_at") is not None:
        node.created_at = f.number(ext["created_at"], f"{where}.created_at")
    node.generation = generation_from_json(ext.get("generation"), f"{where}.generation")
    node.persona = persona_from_json(ext.get("persona"), f"{where}.persona")
    node.manual_persona = optional_string(ext.get("manual_persona"), f"{where}.manual_persona")
    if ext.get("memory") is not None:  # checked with the rest of the document on import
        node.meta[MEMORY_KEY] = ext["memory"]
    if ext.get("tokens"):
        tokens = tokens_from_json(ext["tokens"], f"{where}.tokens")
        if tokens.text == node.text:
            node.tokens = tokens
        else:
            warnings.append(f"{where}: tokens dropped, the text was edited outside loom")
    # A reading of other text than the node's (edited outside loom) is dropped on import.
    node.scores = scores_from_json(ext.get("scored"), f"{where}.scored", tokens_from_json)


def write(doc: LoomDocument, current: int | None) -> str:
    top_meta = doc.meta.get("socketteer")
    top: dict[str, Any] = dict(top_meta) if isinstance(top_meta, dict) else {}
    ids = _socketteer_ids(doc)
    built: dict[int, dict[str, Any]] = {}
    used_tags: set[str] = set()
    for node in doc.nodes:
        built[node.id] = _node_dict(node, ids, used_tags)
    # Nest bottom-up by reference: every dict exists before it is placed, so no recursion.
    for node in doc.nodes:
        if node.parent is not None:
            built[node.parent]["children"].append(built[node.id])

    out: dict[str, Any] = {"root": built[doc.root]}
    out.update((k, v) for k, v in top.items() if k != "root")
    if current is not None:
        out["selected_node_id"] = ids[current]
    elif out.get("selected_node_id") not in ids.values():
        out.pop("selected_node_id", None)
    custom = sorted(used_tags - _DEFAULT_TAGS - set(out.get("tags") or {}))
    if custom:
        tags = dict(out.get("tags") or {})
        for tag in custom:  # the definition socketteer's own add_tag() would create
            tags[tag] = {
                "name": tag,
                "scope": "node",
                "hide": False,
                "show_only": False,
                "toggle_key": "None",
                "icon": "None",
            }
        out["tags"] = tags
    loom_top: dict[str, Any] = {}
    if doc.title:
        loom_top["title"] = doc.title
    if doc.personas:
        loom_top["personas"] = [p.to_json() for p in doc.personas]
    if doc.meta.get(MEMORY_KEY) is not None:
        loom_top["memory"] = doc.meta[MEMORY_KEY]
    if loom_top:
        out["loom"] = loom_top
    deep = max(depths(doc).values(), default=0) > _INDENT_DEPTH_LIMIT
    return jsonio.dumps(out, indent=None if deep else 2) + "\n"


# Nodes made in loom get ids derived from their loom ids, so exporting twice gives the same file.
_LOOM_IDS = uuid.UUID("6f0c2b7e-2d0e-4a57-9b8e-1f6f3c7b5a10")


def _socketteer_ids(doc: LoomDocument) -> dict[int, str]:
    ids: dict[int, str] = {}
    taken: set[str] = set()
    for node in doc.nodes:
        sid = node.meta.get("socketteer_id")
        salt = 0
        while not isinstance(sid, str) or sid in taken:
            sid = str(uuid.uuid5(_LOOM_IDS, f"{node.id}.{salt}"))
            salt += 1
        taken.add(sid)
        ids[node.id] = sid
    return ids


def _node_dict(node: Node, ids: dict[int, str], used_tags: set[str]) -> dict[str, Any]:
    foreign = node.meta.get("socketteer")
    foreign = dict(foreign) if isinstance(foreign, dict) else {}
    out: dict[str, Any] = {"id": ids[node.id], "text": node.text}
    out.update((k, v) for k, v in foreign.items() if k not in _OWN_KEYS)
    if node.parent is not None:
        out["parent_id"] = ids[node.parent]
    meta = _meta(node, foreign)
    if meta is not None:
        out["meta"] = meta
    tags = list(node.tags)
    if node.bookmarked:
        tags.append("bookmark")
    if node.pruned:
        tags.append("archived")
    used_tags.update(tags)
    if tags:
        out["tags"] = tags
    if node.meta.get("socketteer_bookmark_attribute"):
        out["bookmark"] = node.bookmarked
    ext = _extension(node)
    if ext:
        out["loom"] = ext
    out["children"] = []
    return out


def _meta(node: Node, foreign: dict[str, Any]) -> dict[str, Any] | None:
    """The node's socketteer `meta`, with `source` agreeing with the loom author."""
    original = foreign.get("meta")
    if not isinstance(original, dict):
        if "socketteer_id" in node.meta or node.meta.get("socketteer"):
            # A node read from socketteer without meta: add one only if the author needs it.
            return {"source": "AI"} if node.author == "model" else original
        return {  # a loom node: what socketteer itself writes for a new node
            "creation_timestamp": format_timestamp(node.created_at),
            "source": "AI" if node.author == "model" else "prompt",
            "modified": False,
        }
    meta = dict(original)
    if _author({"meta": meta}) != node.author:
        meta["source"] = "AI" if node.author == "model" else "prompt"
        meta.pop("origin", None)
    return meta


def _extension(node: Node) -> dict[str, Any]:
    ext: dict[str, Any] = {}
    if len(node.tokens):
        ext["tokens"] = node.tokens.to_json()
    if node.generation is not None:
        ext["generation"] = node.generation.to_json()
    if node.persona is not None:
        ext["persona"] = node.persona.to_json()
    if node.manual_persona is not None:
        ext["manual_persona"] = node.manual_persona
    if node.meta.get(MEMORY_KEY) is not None:
        ext["memory"] = node.meta[MEMORY_KEY]
    if node.scores:  # readings by models that did not write the text (not sampled)
        ext["scored"] = [score_to_json(s, s.tokens.to_json()) for s in node.scores]
    if ext:
        ext["created_at"] = node.created_at
    return ext
