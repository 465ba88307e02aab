"""loom-json: loom's own full-fidelity interchange file (its fields: docs/user-guide.md).

Beyond the §3 contract a file may carry, all optional: `"current"` (the node the loom was on),
node `"manual_persona"` (the hand label, which always wins over `persona`), node `"meta"` and
top-level `"meta"` (foreign fields kept by importers). Unknown logprobs are `null`; a token's
`"entropy"` is written where known. Node ids (and `root`, `current`, `parent`) may be strings, as
hand-written files and other tools have them: see `NodeIds`.

The file is written one node per line: flat, diffable, and never nested deeper than a node.
"""

from __future__ import annotations

from typing import Any

from loom.formats import fields as f
from loom.formats import jsonio
from loom.formats.errors import FormatError
from loom.formats.tree import ordered_nodes
from loom.store.model import GenerationSettings, LoomDocument, Node, Persona, PersonaLabel
from loom.tokens import TokenArray

FORMAT = "loom-json"
VERSION = 1


# --- pieces shared with the formats that carry loom data in an extension block --------------


# Token ids and probabilities are stored as int32 and float32 (see codec).
_TOKEN_ID_MAX = 2**31 - 1


def tokens_from_json(value: Any, where: str) -> TokenArray:
    items = f.array(value, where)
    for i, item in enumerate(items):
        token = f.obj(item, f"{where}[{i}]")
        f.integer_in(token.get("id"), f"{where}[{i}].id", 0, _TOKEN_ID_MAX)
        f.string(token.get("text"), f"{where}[{i}].text")
        if token.get("logprob") is not None:
            f.float32(token["logprob"], f"{where}[{i}].logprob")
        for j, alt in enumerate(f.array(token.get("top") or [], f"{where}[{i}].top")):
            alt = f.obj(alt, f"{where}[{i}].top[{j}]")
            f.integer_in(alt.get("id"), f"{where}[{i}].top[{j}].id", 0, _TOKEN_ID_MAX)
            f.float32(alt.get("logprob"), f"{where}[{i}].top[{j}].logprob")
        if token.get("entropy") is not None:
            f.float32(token["entropy"], f"{where}[{i}].entropy")
    try:
        return TokenArray.from_json(items)
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{where} is malformed: {exc}") from None


def generation_from_json(value: Any, where: str) -> GenerationSettings | None:
    if value is None:
        return None
    try:
        settings = GenerationSettings.from_json(f.obj(value, where))
    except (TypeError, ValueError, OverflowError) as exc:
        raise FormatError(f"{where} is malformed: {exc}") from None
    for name in ("temperature", "top_p", "min_p"):
        f.number(getattr(settings, name), f"{where}.{name}")
    return settings


_POSTERIORS = ("posterior", "raw_posterior", "path_posterior", "bias")


def persona_from_json(value: Any, where: str) -> PersonaLabel | None:
    if value is None:
        return None
    data = f.obj(value, where)
    for key in _POSTERIORS:  # persona name -> a finite number
        for name, p in f.obj(data.get(key) or {}, f"{where}.{key}").items():
            f.number(p, f"{where}.{key}[{f.brief(name, 24)}]")
    try:
        label = PersonaLabel.from_json(data)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"{where} is malformed: {exc}") from None
    if label.label is not None:
        f.string(label.label, f"{where}.label")
    return label


def personas_from_json(value: Any, where: str) -> list[Persona]:
    out = []
    for i, item in enumerate(f.array(value, where)):
        data = f.obj(item, f"{where}[{i}]")
        f.string(data.get("name"), f"{where}[{i}].name")
        f.number(data.get("prior", 1.0), f"{where}[{i}].prior")
        try:
            out.append(Persona.from_json(data))
        except (TypeError, ValueError) as exc:
            raise FormatError(f"{where}[{i}] is malformed: {exc}") from None
    return out


def optional_string(value: Any, where: str) -> str | None:
    return None if value is None else f.string(value, where)


# --- loom-json itself ------------------------------------------------------------------------


def node_to_json(node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": node.id,
        "parent": node.parent,
        "author": node.author,
        "text": node.text,
        "created_at": node.created_at,
        "tokens": node.tokens.to_json(),
        "generation": None if node.generation is None else node.generation.to_json(),
        "persona": None if node.persona is None else node.persona.to_json(),
        "manual_persona": node.manual_persona,
        "bookmarked": node.bookmarked,
        "pruned": node.pruned,
        "tags": list(node.tags),
    }
    if node.meta:
        out["meta"] = node.meta
    return out


class NodeIds:
    """The ids of a file's nodes as loom ids.

    Files loom writes use integers, kept as they are. Hand-written files and other tools often
    use strings ("a", "n1", "1"); then every node gets a fresh integer in file order, its own id
    kept in `meta["loomjson_id"]`. A reference matches a node whose id has the same text, so
    `"parent": "1"` finds the node `"id": 1` and the other way round.
    """

    def __init__(self, items: list[Any]) -> None:
        own = [f.obj(item, f"node #{i}").get("id") for i, item in enumerate(items)]
        keys = [_id_key(value, f"node #{i} id") for i, value in enumerate(own)]
        self.renumbered = not all(isinstance(value, int) for value in own)
        self._ids: dict[str, int] = {}
        for key, value in zip(keys, own, strict=True):  # an int's key is its decimal text
            if key in self._ids:
                raise FormatError(f"duplicate node id {f.brief(value)}")
            self._ids[key] = len(self._ids) + 1 if self.renumbered else int(key)

    def own(self, value: Any) -> int:
        return self._ids[_id_key(value, "a node id")]

    def ref(self, value: Any, where: str) -> int:
        """The loom id a reference names; an integer naming no node is kept, so the tree check
        can call it dangling."""
        key = _id_key(value, where)
        if key in self._ids:
            return self._ids[key]
        if isinstance(value, int) and not self.renumbered:
            return value
        raise FormatError(f"{where} {f.brief(value)} is not the id of a node in the file")


def _id_key(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise FormatError(f"{where} must be an integer or a string, not {f.kind(value)}")
    if value == "":
        raise FormatError(f"{where} is an empty string")
    return str(value)


def node_from_json(value: Any, index: int, ids: NodeIds) -> Node:
    data = f.obj(value, f"node #{index}")
    node_id = ids.own(data.get("id"))
    where = f"node {node_id}"
    parent = data.get("parent")
    author = data.get("author")
    if author not in ("human", "model"):
        raise FormatError(f"{where} author must be 'human' or 'model', not {f.brief(author)}")
    meta = dict(f.obj(data.get("meta", {}), f"{where} meta"))
    if ids.renumbered:
        meta["loomjson_id"] = data["id"]
    return Node(
        id=node_id,
        parent=None if parent is None else ids.ref(parent, f"{where} parent"),
        author=author,
        text=f.string(data.get("text"), f"{where} text"),
        created_at=f.number(data.get("created_at", 0.0), f"{where} created_at"),
        tokens=tokens_from_json(data.get("tokens") or [], f"{where} tokens"),
        generation=generation_from_json(data.get("generation"), f"{where} generation"),
        persona=persona_from_json(data.get("persona"), f"{where} persona"),
        manual_persona=optional_string(data.get("manual_persona"), f"{where} manual_persona"),
        bookmarked=f.boolean(data.get("bookmarked", False), f"{where} bookmarked"),
        pruned=f.boolean(data.get("pruned", False), f"{where} pruned"),
        tags=f.strings(data.get("tags") or [], f"{where} tags"),
        meta=meta,
    )


def write(doc: LoomDocument, current: int | None) -> str:
    head: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "title": doc.title,
        "root": doc.root,
    }
    if current is not None:
        head["current"] = current
    head["personas"] = [p.to_json() for p in doc.personas]
    meta = {k: v for k, v in doc.meta.items() if k != "current"}
    # Hand-assembled so each node sits on its own line; every piece is strict JSON.
    parts = [jsonio.dumps(head)[:-1]]
    parts.append(',\n "nodes": [' + _lines([node_to_json(n) for n in doc.nodes]) + "]")
    parts.append(',\n "events": [' + _lines(doc.events) + "]")
    if meta:
        parts.append(',\n "meta": ' + jsonio.dumps(meta))
    return "".join(parts) + "}\n"


def _lines(items: list[Any]) -> str:
    if not items:
        return ""
    return "\n  " + ",\n  ".join(jsonio.dumps(item) for item in items) + "\n "


def read(data: Any) -> LoomDocument:
    top = f.obj(data, "a loom-json file")
    if top.get("format") != FORMAT:
        raise FormatError(f"not a loom-json file (its format is {f.brief(top.get('format'))})")
    version = top.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise FormatError(f"loom-json version must be an integer, not {f.brief(version)}")
    if version > VERSION:
        raise FormatError(
            f"loom-json version {version} is newer than this loom reads (up to {VERSION}): "
            "update loom"
        )
    if version < 1:
        raise FormatError(f"loom-json version {version} does not exist")
    if "root" not in top or top["root"] is None:
        raise FormatError("loom-json file has no root")
    items = f.array(top.get("nodes"), "nodes")
    ids = NodeIds(items)
    root = ids.ref(top["root"], "root")
    nodes = [node_from_json(item, i, ids) for i, item in enumerate(items)]
    nodes = ordered_nodes(nodes, root)
    events = f.array(top.get("events") or [], "events")
    for i, event in enumerate(events):
        f.obj(event, f"events[{i}]")
    meta = dict(f.obj(top.get("meta", {}), "meta"))
    if events and ids.renumbered:
        # The log names nodes by loom ids; with the nodes renumbered it no longer fits them.
        warnings = meta.get("import_warnings")
        warnings = list(warnings) if isinstance(warnings, list) else []
        warnings.append(f"{len(events)} events dropped: the file's node ids are strings")
        meta["import_warnings"] = warnings
        events = []
    if top.get("current") is not None:
        current = ids.ref(top["current"], "the current node")
        if current not in {n.id for n in nodes}:
            raise FormatError(f"the current node {current} is not in the file")
        meta["current"] = current
    return LoomDocument(
        title=f.string(top.get("title", ""), "title"),
        root=root,
        nodes=nodes,
        personas=personas_from_json(top.get("personas") or [], "personas"),
        events=events,
        meta=meta,
    )
