"""loomsidian (github.com/cosmicoptima/loom, the Obsidian plugin): import only.

The plugin keeps everything in its `data.json`: `{"settings": {...}, "state": {note path:
NoteState}}` where a NoteState is `{"current": id, "hoisted": [ids], "nodes": {id: {"text",
"parentId", "unread", "collapsed", "bookmarked", "lastVisited"?, "color"?,
"searchResultState"?}}, "generating": id|null}` (main.ts `save()`, common.ts `NoteState`). A
node's text is its own piece; the note's text is the concatenation down the path. Later forks
store `nodes` as a list of `{id, ...}` and may add an `author` (a model name, or "genesis"/"N/A"
for people). A bare NoteState is read too.

One data.json holds every note the plugin has seen: `note=` picks one, else the first is taken
and `doc.meta["import_warnings"]` says which and lists the others. Several parentless nodes (the
plugin allows several roots) hang under a new empty root. `settings` is never imported: it holds
API keys. loomsidian records no creation times and (upstream) no authors: `lastVisited` stands in
for the time, and nodes without an `author` are taken as written by a person.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from loom.formats import fields as f
from loom.formats.errors import FormatError
from loom.formats.tree import ordered_nodes, preorder_ids
from loom.store.model import Author, LoomDocument, Node

_PEOPLE = {"genesis", "N/A", "human", "user", "you"}
# Never a real id: loomsidian ids are UUIDs.
_SYNTHETIC_ROOT = "\x00root"
_NODE_KEYS = {"id", "text", "value", "parentId", "bookmarked", "lastVisited", "author"}


def notes(data: Any) -> list[str]:
    """The note paths a parsed data.json holds, in file order."""
    if isinstance(data, dict) and isinstance(data.get("state"), dict):
        return [str(k) for k in data["state"]]
    return []


def read(data: Any, name: str = "", note: str | None = None) -> LoomDocument:
    top = f.obj(data, "a loomsidian file")
    warnings: list[str] = []
    if "state" in top:
        state = f.obj(top["state"], "state")
        paths = list(state)
        if not paths:
            raise FormatError("this loomsidian data.json holds no notes")
        if note is None:
            note = paths[0]
            if len(paths) > 1:
                others = f.listing(paths[1:], 10)
                warnings.append(
                    f"data.json holds {len(paths)} notes; imported {f.brief(note)} "
                    f"(choose another with the note option: {others})"
                )
        elif note not in state:
            listed = f.listing(paths, 10)
            raise FormatError(f"no note {f.brief(note)} in this data.json (it holds {listed})")
        note_state = f.obj(state[note], f"note {f.brief(note)}")
        title = PurePosixPath(note).stem
    elif "nodes" in top:
        note_state, title = top, name
    else:
        raise FormatError("not a loomsidian file (no 'state' or 'nodes')")
    doc = _read_note(note_state, title, warnings)
    if note is not None:
        doc.meta["loomsidian_note"] = note
    if warnings:
        doc.meta["import_warnings"] = warnings
    return doc


def _raw_nodes(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    raw = state.get("nodes")
    out: dict[str, dict[str, Any]] = {}
    if isinstance(raw, dict):
        for key, value in raw.items():
            out[str(key)] = f.obj(value, f"node {f.brief(key)}")
    elif isinstance(raw, list):
        for i, value in enumerate(raw):
            item = f.obj(value, f"nodes[{i}]")
            key = f.string(item.get("id"), f"nodes[{i}].id")
            if key in out:
                raise FormatError(f"duplicate node id {f.brief(key)}")
            out[key] = item
    else:
        raise FormatError(f"the note's nodes must be an object or an array, not {f.kind(raw)}")
    if not out:
        raise FormatError("the note has no nodes")
    return out


def _read_note(state: dict[str, Any], title: str, warnings: list[str]) -> LoomDocument:
    raw = _raw_nodes(state)
    children: dict[str, list[str]] = {key: [] for key in raw}
    roots: list[str] = []
    for key, node in raw.items():
        parent = node.get("parentId")
        if parent is None:
            roots.append(key)
        elif not isinstance(parent, str) or parent not in raw:
            warnings.append(
                f"node {f.brief(key)} has a missing parent {f.brief(parent)}; kept under the root"
            )
            roots.append(key)
        else:
            children[parent].append(key)  # file order: the order the plugin shows children in
    if not roots:
        raise FormatError("the loomsidian nodes form a cycle (no root)")

    synthetic = len(roots) > 1
    top = _SYNTHETIC_ROOT if synthetic else roots[0]
    children[_SYNTHETIC_ROOT] = roots if synthetic else []
    order = preorder_ids(top, children)
    reached = set(order)
    if len(reached) - synthetic < len(raw):
        lost = next(k for k in raw if k not in reached)
        raise FormatError(f"the loomsidian nodes form a cycle through node {f.brief(lost)}")

    ids = {key: i + 1 for i, key in enumerate(order)}
    parents: dict[str, str | None] = {key: None for key in roots}
    for key, kids in children.items():
        for kid in kids:
            parents[kid] = key
    nodes: list[Node] = []
    times: dict[str, float] = {}
    for key in order:
        parent_key = parents.get(key)
        parent_time = 0.0 if parent_key is None else times[parent_key]
        if key == _SYNTHETIC_ROOT:
            times[key] = 0.0
            nodes.append(Node(id=ids[key], parent=None, author="human", text="", created_at=0.0))
            continue
        times[key] = _time(raw[key], parent_time)
        parent = None if parent_key is None else ids[parent_key]
        nodes.append(_node(key, raw[key], ids[key], parent, times[key]))
    meta: dict[str, Any] = {"loomsidian": _note_fields(state)}
    current = state.get("current")
    if isinstance(current, str) and current in ids:
        meta["current"] = ids[current]
    return LoomDocument(title=title, root=1, nodes=ordered_nodes(nodes, 1), meta=meta)


def _time(node: dict[str, Any], parent_time: float) -> float:
    visited = node.get("lastVisited")
    if isinstance(visited, (int, float)) and not isinstance(visited, bool) and visited > 0:
        return float(visited) / 1000.0  # JavaScript milliseconds
    return parent_time


def _node(key: str, raw: dict[str, Any], node_id: int, parent: int | None, when: float) -> Node:
    where = f"node {f.brief(key)}"
    text = raw.get("text", raw.get("value", ""))
    author_name = raw.get("author")
    author: Author = "human"
    if isinstance(author_name, str) and author_name not in _PEOPLE:
        author = "model"
    meta: dict[str, Any] = {"loomsidian_id": key}
    foreign = {k: v for k, v in raw.items() if k not in _NODE_KEYS}
    if foreign:
        meta["loomsidian"] = foreign
    if isinstance(author_name, str):
        meta["loomsidian_author"] = author_name
    return Node(
        id=node_id,
        parent=parent,
        author=author,
        text=f.string(text if text is not None else "", f"{where} text"),
        created_at=when,
        bookmarked=bool(raw.get("bookmarked", False)),
        meta=meta,
    )


def _note_fields(state: dict[str, Any]) -> dict[str, Any]:
    # Only the note's own navigation fields: hoisted, searchTerm...; never nodes or live state.
    return {k: v for k, v in state.items() if k not in ("nodes", "current", "generating")}
