"""The data an HTML export embeds: the tree, token probabilities, personas and the replay timeline.

Everything is plain JSON the page's script reads with `JSON.parse` and shows with `textContent`.
Texts pass through `loom.text.inert` first (terminal escapes and NUL become `\\x1b`-style escapes),
token texts are interned in one string table (the same alternatives recur at every position),
and floats are rounded: a 10k-node loom must stay a file a browser opens quickly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from loom.formats.export.colours import PALETTE, UNLABELLED, safe_colour
from loom.intervals import wilson
from loom.store import codec
from loom.store import events as ev
from loom.store.history import HistoryError, NodeView, read_history
from loom.store.model import LoomDocument, Node, shown_tokens
from loom.text import inert, one_line
from loom.tokens import mean_logprob

PRUNED, BOOKMARKED, MANUAL = 1, 2, 4  # node flag bits
TIMELINE_TEXT_CHARS = 2000  # of a node's text in a timeline state (the tree shows previews)


class Strings:
    """An interning table of token texts: each distinct text once (made inert), by index."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.items: list[str] = []

    def __call__(self, raw: str) -> int:
        found = self.index.get(raw)
        if found is None:
            found = self.index[raw] = len(self.items)
            self.items.append(inert(raw))
        return found


def _floats(values: Any, digits: int) -> list[float | None]:
    """Rounded floats, NaN as None (strict JSON has no NaN)."""
    rounded = np.round(np.asarray(values, dtype=np.float64), digits)
    return [None if math.isnan(v) else v for v in rounded.tolist()]


def _tokens(node: Node, strings: Strings) -> dict[str, Any] | None:
    """The node's tokens (or, for text a model read but did not write, the newest reading), if
    they spell (a prefix of) its text; the rest of the text in `rest`."""
    tokens, _reading = shown_tokens(node)
    joined = "".join(tokens.texts)
    if not len(tokens) or not node.text.startswith(joined):
        return None
    n, k = len(tokens), tokens.k
    data: dict[str, Any] = {
        "s": [strings(t) for t in tokens.texts],
        "lp": _floats(tokens.logprobs, 4),
        "k": k,
    }
    if tokens.entropy is not None:
        data["e"] = _floats(tokens.entropy, 3)
    if k:
        top_lps = np.asarray(tokens.top_logprobs, dtype=np.float64).reshape(n * k)
        top_ids = np.asarray(tokens.top_ids).reshape(n * k).tolist()
        index = {i: strings(tokens.top_texts.get(i, "")) for i in set(top_ids)}
        data["ai"] = [
            -1 if lp != lp else index[i]  # lp != lp: NaN padding, no alternative there
            for i, lp in zip(top_ids, top_lps.tolist(), strict=True)
        ]
        data["al"] = _floats(top_lps, 4)
    if len(joined) < len(node.text):
        data["rest"] = inert(node.text[len(joined) :])
    return data


def _node(node: Node, strings: Strings) -> dict[str, Any]:
    label = node.manual_persona or (node.persona.label if node.persona else None)
    flags = (
        (PRUNED if node.pruned else 0)
        | (BOOKMARKED if node.bookmarked else 0)
        | (MANUAL if node.manual_persona else 0)
    )
    out: dict[str, Any] = {
        "i": node.id,
        "p": node.parent,
        "a": "m" if node.author == "model" else "h",
        "x": inert(node.text),
        "f": flags,
        "l": None if label is None else one_line(label),
        "c": round(node.created_at, 3),
    }
    if node.tags:
        out["g"] = [one_line(t) for t in node.tags]
    shown, reading = shown_tokens(node)
    mean = mean_logprob(shown.logprobs)
    if mean is not None:
        out["m"] = round(mean, 4)
    if reading is not None:  # read by that model, not sampled
        out["rb"] = one_line(reading.model)
    tokens = _tokens(node, strings)
    if tokens is not None:
        out["t"] = tokens
    if node.generation is not None:
        g = node.generation
        out["gen"] = {
            "model": one_line(g.model),
            "sha256": one_line(g.model_sha256)[:64],
            "temperature": g.temperature,
            "top_p": g.top_p,
            "top_k": g.top_k,
            "min_p": g.min_p,
            "seed": g.seed,
            "max_tokens": g.max_tokens,
            "batch": None if g.batch_index is None else f"{g.batch_index + 1} of {g.batch_size}",
        }
    if node.persona is not None and node.persona.posterior:
        out["pp"] = {
            one_line(k): round(v, 4) for k, v in node.persona.posterior.items() if math.isfinite(v)
        }
        if node.persona.collapse:
            out["cx"] = 1
    return out


def _state(view: NodeView) -> list[Any]:
    flags = (
        (PRUNED if view.pruned else 0)
        | (BOOKMARKED if view.bookmarked else 0)
        | (MANUAL if view.manual is not None else 0)
    )
    label = view.label
    return [
        view.parent,
        view.position,
        "m" if view.author == "model" else "h",
        inert(view.text[:TIMELINE_TEXT_CHARS]),
        flags,
        None if label is None else one_line(label),
        [one_line(t) for t in view.tags],
    ]


def timeline(doc: LoomDocument) -> tuple[list[list[Any]], str]:
    """Per event: [seq, ts, kind, node, summary, changes, current]; and a note if it failed."""
    if not doc.events:
        return [], "this export has no event log"
    try:
        _, steps = read_history(doc.events)
    except HistoryError as exc:
        return [], f"the event log cannot be replayed here ({one_line(str(exc))[:200]})"
    out = []
    for s in steps:
        changes = [[i, None if v is None else _state(v)] for i, v in s.changes.items()]
        out.append([s.seq, round(s.ts, 3), s.kind, s.node, s.summary, changes, s.current])
    return out, ""


CENSUS_EXAMPLES = 2  # rollouts shown per persona of an outcome
CENSUS_TEXT_CHARS = 400


def _rollout_text(tokens: Any) -> str:
    if isinstance(tokens, dict) and ev.TOKEN_DATA in tokens:
        return codec.decode_row(codec.row_from_json(tokens[ev.TOKEN_DATA])).text
    return ""


def census_records(doc: LoomDocument) -> dict[int, list[dict[str, Any]]]:
    """The censuses in effect, by node: per outcome, each label's count, share and 95 % interval,
    and a few rollouts of each."""
    censuses = [e for e in doc.events if e.get("kind") == ev.CENSUS]
    in_effect = ev.still_done(
        (int(e["seq"]) for e in censuses),
        (
            (str(e["kind"]), int(e["payload"].get("target", -1)))
            for e in doc.events
            if e.get("kind") in (ev.UNDO, ev.REDO)
        ),
    )
    out: dict[int, list[dict[str, Any]]] = {}
    for event in censuses:
        if int(event["seq"]) not in in_effect:
            continue
        payload = event["payload"]
        settings = payload.get("settings") or {}
        outcomes = []
        for outcome in payload.get("outcomes") or []:
            rollouts = outcome.get("rollouts") or []
            n = len(rollouts)
            by_label: dict[str, list[dict[str, Any]]] = {}
            for rollout in rollouts:
                by_label.setdefault(str(rollout.get("label")), []).append(rollout)
            labels = []
            for label, mine in sorted(by_label.items(), key=lambda kv: -len(kv[1])):
                low, high = wilson(len(mine), n)
                examples = [
                    inert(_rollout_text(r.get("tokens"))[:CENSUS_TEXT_CHARS])
                    for r in mine[:CENSUS_EXAMPLES]
                ]
                labels.append([one_line(label), len(mine), len(mine) / n, low, high, examples])
            outcomes.append(
                {
                    "text": inert(str(outcome.get("text", ""))),
                    "p": outcome.get("p"),
                    "n": n,
                    "labels": labels,
                }
            )
        out.setdefault(int(payload["node"]), []).append(
            {
                "seq": int(event["seq"]),
                "ts": round(float(event["ts"]), 3),
                "seed": payload.get("seed"),
                "rollouts": settings.get("rollouts"),
                "tokens": settings.get("tokens"),
                "token_index": payload.get("token_index"),
                "model": one_line(str(payload.get("model", ""))),
                "outcomes": outcomes,
            }
        )
    return out


def build(doc: LoomDocument, current: int | None) -> dict[str, Any]:
    strings = Strings()
    nodes = [_node(n, strings) for n in doc.nodes]
    personas = [
        {
            "name": one_line(p.name),
            "color": safe_colour(p.color, i),
            "description": inert(p.description),
            "prior": p.prior if math.isfinite(p.prior) else None,
        }
        for i, p in enumerate(doc.personas)
    ]
    events, note = timeline(doc)
    return {
        "title": one_line(doc.title),
        "root": doc.root,
        "current": current if current is not None else doc.root,
        "personas": personas,
        "unlabelled": UNLABELLED,
        "palette": list(PALETTE),
        "strings": strings.items,
        "nodes": nodes,
        "events": events,
        "timelineNote": note,
        "censuses": {str(k): v for k, v in census_records(doc).items()},
    }
