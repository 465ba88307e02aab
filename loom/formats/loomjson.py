"""loom-json: loom's own full-fidelity interchange file (its fields: docs/user-guide.md).

Version 2 (written by default) keeps each node's tokens as columns — `ids`, `logprobs`,
`entropy`, `top_ids`, `top_logprobs` — with the texts in one `vocab` table (token id -> text, the
ids the file uses) and, per node, only the texts that differ from it (`texts`, `top_texts`).
Events name token arrays by `{"$tok": key}`: the `key` of a node's tokens, or of an entry of
`token_arrays` (the arrays only the log holds). `vocab` comes before `nodes`, and both before
`token_arrays` and `events`: a reader can go through the file once, a node at a time. Version 1
(`write(..., version=1)`) spells every token and alternative out as an object; it is still read.

Beyond the §3 contract a file may carry, all optional: `"current"` (the node the loom was on),
node `"manual_persona"` (the hand label, which always wins over `persona`), node `"meta"` and
top-level `"meta"` (foreign fields kept by importers), node `"scored"` (readings of the node's
text by models that did not write it: `model`, `model_sha256`, `scored_at` and `tokens` in the
version's token encoding — read by the model, not sampled). Unknown logprobs are `null`; a
token's `"entropy"` is written where known. Node ids (and `root`, `current`, `parent`) may be
strings, as hand-written files and other tools have them: see `NodeIds`.

The file is written one node per line: flat, diffable, and never nested deeper than a node.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, cast

import numpy as np
import orjson

from loom.formats import fields as f
from loom.formats import jsonio
from loom.formats.errors import FormatError
from loom.formats.jsonstream import NeedsWholeDocument, RawItem
from loom.formats.tree import ordered_nodes
from loom.store import codec
from loom.store import events as ev
from loom.store.document import ImportSink, PreparedNode
from loom.store.model import (
    GenerationSettings,
    LoomDocument,
    Node,
    NodeScore,
    Persona,
    PersonaLabel,
)
from loom.store.stream import (
    DocumentHead,
    DocumentSink,
    DocumentStream,
    MemorySink,
    MemoryStream,
    StreamNode,
)
from loom.tokens import TokenArray

FORMAT = "loom-json"
VERSION = 2  # the newest, written by default
VERSIONS = (1, 2)
STREAMED = frozenset({"nodes", "token_arrays", "events"})


__all__ = ["NeedsWholeDocument"]  # raised by `read_into` (defined in jsonstream)


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


def node_to_json(node: Node, *, with_tokens: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": node.id,
        "parent": node.parent,
        "author": node.author,
        "text": node.text,
        "created_at": node.created_at,
        "tokens": node.tokens.to_json() if with_tokens else None,
        "generation": None if node.generation is None else node.generation.to_json(),
        "persona": None if node.persona is None else node.persona.to_json(),
        "manual_persona": node.manual_persona,
        "bookmarked": node.bookmarked,
        "pruned": node.pruned,
        "tags": list(node.tags),
    }
    if node.meta:
        out["meta"] = node.meta
    if node.scores and with_tokens:
        out["scored"] = [score_to_json(s, s.tokens.to_json()) for s in node.scores]
    return out


def score_to_json(score: NodeScore, tokens: Any) -> dict[str, Any]:
    """A model's reading of a node: its tokens were read by that model, not sampled."""
    return {
        "model": score.model,
        "model_sha256": score.model_sha256,
        "scored_at": score.scored_at,
        "tokens": tokens,
    }


def scores_from_json(value: Any, where: str, read_tokens: TokensReader) -> list[NodeScore]:
    out = []
    for i, item in enumerate(f.array(value or [], where)):
        data = f.obj(item, f"{where}[{i}]")
        out.append(
            NodeScore(
                model=f.string(data.get("model"), f"{where}[{i}].model"),
                model_sha256=f.string(data.get("model_sha256", ""), f"{where}[{i}].model_sha256"),
                tokens=read_tokens(data.get("tokens"), f"{where}[{i}].tokens"),
                scored_at=f.number(data.get("scored_at", 0.0), f"{where}[{i}].scored_at"),
            )
        )
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


class IntIds:
    """The ids of a file read in one pass: integers, kept as they are (strings need the whole
    file: `NodeIds`)."""

    renumbered = False

    def own(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str):
                raise NeedsWholeDocument
            raise FormatError(f"node id must be an integer or a string, not {f.kind(value)}")
        return value

    def ref(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str):
                raise NeedsWholeDocument
            raise FormatError(f"{where} must be an integer or a string, not {f.kind(value)}")
        return value


TokensReader = Callable[[Any, str], TokenArray]


def node_from_json(
    value: Any,
    index: int,
    ids: NodeIds | IntIds,
    tokens: TokensReader | None = None,
    score_tokens: TokensReader | None = None,
) -> Node:
    """A node of the file; `tokens` reads its tokens, `score_tokens` its readings' (default:
    `tokens`)."""
    data = f.obj(value, f"node #{index}")
    node_id = ids.own(data.get("id"))
    where = f"node {node_id}"
    read_tokens = tokens or (lambda v, w: tokens_from_json(v or [], w))
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
        tokens=read_tokens(data.get("tokens"), f"{where} tokens"),
        generation=generation_from_json(data.get("generation"), f"{where} generation"),
        persona=persona_from_json(data.get("persona"), f"{where} persona"),
        manual_persona=optional_string(data.get("manual_persona"), f"{where} manual_persona"),
        bookmarked=f.boolean(data.get("bookmarked", False), f"{where} bookmarked"),
        pruned=f.boolean(data.get("pruned", False), f"{where} pruned"),
        tags=f.strings(data.get("tags") or [], f"{where} tags"),
        meta=meta,
        scores=scores_from_json(data.get("scored"), f"{where} scored", score_tokens or read_tokens),
    )


# --- version 2: columns and one vocabulary ----------------------------------------------------


def columns_to_json(
    tokens: TokenArray, vocab: Mapping[int, str] | codec.VocabTable
) -> dict[str, Any] | None:
    """A token array as version 2 writes it (numpy columns, for orjson), None if empty."""
    return token_columns_json(codec.TokenColumns.of(tokens, vocab)) if len(tokens) else None


def token_columns_json(columns: codec.TokenColumns) -> dict[str, Any] | None:
    """`columns_to_json` of tokens already in columns (as the store keeps them)."""
    if len(columns) == 0:
        return None
    out: dict[str, Any] = {"ids": columns.ids}
    if not np.isnan(columns.logprobs).all():
        out["logprobs"] = columns.logprobs
    if columns.entropy is not None:
        out["entropy"] = columns.entropy
    if columns.k:
        out["top_ids"] = columns.top_ids
        out["top_logprobs"] = columns.top_logprobs
    if columns.own:
        out["texts"] = {str(i): t for i, t in columns.own.items()}
    if columns.top:
        out["top_texts"] = {str(i): t for i, t in columns.top.items()}
    return out


def _int_column(value: Any, where: str, n: int | None = None, k: int = 0) -> np.ndarray[Any, Any]:
    """Token ids, checked a whole column at a time. `k`: a flattened n×k matrix (for messages)."""
    items = f.array(value, where)
    if n is not None and len(items) != n:
        raise FormatError(f"{where} has {len(items)} entries, not {n} (one per token)")

    def at(i: int) -> str:
        return f"{where}[{i // k}][{i % k}]" if k else f"{where}[{i}]"

    if not set(map(type, items)) <= {int}:
        bad = next(i for i, v in enumerate(items) if type(v) is not int)
        raise FormatError(f"{at(bad)} must be an integer, not {f.kind(items[bad])}")
    try:
        column = np.asarray(items, dtype=np.int64).reshape(len(items))
    except OverflowError:
        column = np.asarray([min(max(v, -1), _TOKEN_ID_MAX + 1) for v in items], dtype=np.int64)
    bad_ids = np.nonzero((column < 0) | (column > _TOKEN_ID_MAX))[0]
    if bad_ids.size:
        raise FormatError(f"{at(int(bad_ids[0]))} is out of range (0 to {_TOKEN_ID_MAX})")
    return column.astype(np.int32)


_NUMBER_TYPES = frozenset({float, int, type(None)})


def _float_column(value: Any, where: str, n: int, k: int = 0) -> np.ndarray[Any, Any]:
    """Logprobs or entropies (null: unknown), checked a whole column at a time."""
    items = f.array(value, where)
    if len(items) != n:
        raise FormatError(f"{where} has {len(items)} entries, not {n} (one per token)")

    def at(i: int) -> str:
        return f"{where}[{i // k}][{i % k}]" if k else f"{where}[{i}]"

    kinds = set(map(type, items))
    if not kinds <= _NUMBER_TYPES:
        bad = next(i for i, v in enumerate(items) if type(v) not in _NUMBER_TYPES)
        raise FormatError(f"{at(bad)} must be a number or null, not {f.kind(items[bad])}")
    if type(None) in kinds:
        items = [np.nan if v is None else v for v in items]
    try:
        column = np.asarray(items, dtype=np.float64).reshape(n)
    except OverflowError:
        raise FormatError(f"{where} holds a number out of range (beyond ±3.4e38)") from None
    if column.size and (np.abs(column) > f.FLOAT32_MAX).any():  # infinities too, NaN is not
        raise FormatError(f"{where} holds a number out of range (beyond ±3.4e38)")
    return column.astype(np.float32)


def _matrix(value: Any, where: str, n: int, ints: bool) -> np.ndarray[Any, Any]:
    rows = f.array(value, where)
    if len(rows) != n:
        raise FormatError(f"{where} has {len(rows)} rows, not {n} (one per token)")
    if not rows:
        return np.zeros((0, 0), dtype=np.int32 if ints else np.float32)
    if not set(map(type, rows)) <= {list}:
        bad = next(i for i, v in enumerate(rows) if type(v) is not list)
        raise FormatError(f"{where}[{bad}] must be a JSON array, not {f.kind(rows[bad])}")
    k = len(rows[0])
    if set(map(len, rows)) != {k}:
        bad = next(i for i, v in enumerate(rows) if len(v) != k)
        raise FormatError(f"{where}[{bad}] has {len(rows[bad])} alternatives, not {k} as the first")
    flat = list(itertools.chain.from_iterable(rows))
    if ints:
        return _int_column(flat, where, k=k).reshape(n, k)
    return _float_column(flat, where, n * k, k=k).reshape(n, k)


def columns_from_json(
    value: Any, where: str, vocab: Mapping[int, str] | codec.VocabTable
) -> TokenArray:
    """The inverse of `columns_to_json`; a `FormatError` naming the node for anything amiss."""
    columns = token_columns_from_json(value, where)
    return TokenArray.empty() if columns is None else tokens_of(columns, where, vocab)


def tokens_of(
    columns: codec.TokenColumns, where: str, vocab: Mapping[int, str] | codec.VocabTable
) -> TokenArray:
    """The token array `columns` (from `token_columns_from_json`) and `vocab` spell."""
    try:
        return codec.tokens_of(columns, vocab)
    except KeyError as exc:
        raise FormatError(f"{where}: token id {exc.args[0]} is not in the vocabulary") from None


def token_columns_from_json(value: Any, where: str) -> codec.TokenColumns | None:
    """A version-2 token object as columns and text exceptions, checked (None: no tokens); the
    texts are the vocabulary's (`tokens_of`)."""
    if value is None:
        return None
    data = f.obj(value, where)
    ids = _int_column(data.get("ids"), f"{where}.ids")
    n = len(ids)
    logprobs = (
        _float_column(data["logprobs"], f"{where}.logprobs", n)
        if data.get("logprobs") is not None
        else np.full(n, np.nan, dtype=np.float32)
    )
    entropy = (
        None
        if data.get("entropy") is None
        else _float_column(data["entropy"], f"{where}.entropy", n)
    )
    if data.get("top_ids") is not None or data.get("top_logprobs") is not None:
        top_ids = _matrix(data.get("top_ids"), f"{where}.top_ids", n, ints=True)
        top_lps = _matrix(data.get("top_logprobs"), f"{where}.top_logprobs", n, ints=False)
        if top_ids.shape != top_lps.shape and top_ids.size + top_lps.size:
            raise FormatError(
                f"{where}: top_ids and top_logprobs differ in shape "
                f"({top_ids.shape[1]} vs {top_lps.shape[1]} alternatives)"
            )
    else:
        top_ids = np.zeros((n, 0), dtype=np.int32)
        top_lps = np.zeros((n, 0), dtype=np.float32)
    own = _exceptions(data.get("texts"), f"{where}.texts", n, nullable=False)
    top = _exceptions(data.get("top_texts"), f"{where}.top_texts", None, nullable=True)
    return codec.TokenColumns(ids, logprobs, top_ids, top_lps, entropy, own, top)


def _exceptions(value: Any, where: str, n: int | None, nullable: bool) -> dict[int, Any]:
    if value is None:
        return {}
    out: dict[int, Any] = {}
    for key, text in f.obj(value, where).items():
        try:
            index = int(key)
        except ValueError:
            raise FormatError(f"{where} key {f.brief(key)} is not a whole number") from None
        if n is not None and not 0 <= index < n:
            raise FormatError(f"{where} names token {index}, beyond the {n} tokens")
        if not (nullable and text is None):
            f.string(text, f"{where}[{f.brief(key)}]")
        out[index] = text
    return out


def vocab_from_json(value: Any) -> dict[int, str]:
    out: dict[int, str] = {}
    for key, text in f.obj(value, "vocab").items():
        try:
            token_id = int(key)
        except ValueError:
            raise FormatError(f"vocab key {f.brief(key)} is not a token id") from None
        if not 0 <= token_id <= _TOKEN_ID_MAX:
            raise FormatError(f"vocab key {f.brief(key)} is out of range")
        out[token_id] = f.string(text, f"vocab[{f.brief(key)}]")
    return out


# --- writing, a node at a time ------------------------------------------------------------------

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def _dump(value: Any) -> bytes:
    """orjson, fast; ASCII JSON through jsonio for a line that is not ASCII (non-English text)
    or that orjson refuses (lone surrogates in a token's text, integers beyond 64 bits)."""
    try:
        out = orjson.dumps(value, option=_OPTIONS)
        if out.isascii():  # loom's JSON is ASCII, as the store's is: escapes for the rest
            return out
    except (orjson.JSONEncodeError, TypeError):
        pass
    return jsonio.dumps(_plain(value)).encode("ascii")


def _plain(value: Any) -> Any:
    """numpy columns as lists (NaN as None) for the strict fallback writer."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":
            nested: Any = value.tolist()
            return _nan_to_none(nested)
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return None if isinstance(value, float) and value != value else value


def node_tokens_json(item: StreamNode, vocab: codec.VocabTable) -> dict[str, Any] | None:
    """A streamed node's tokens as version 2 writes them (from its columns where it has them)."""
    if item.columns is not None:
        tokens = token_columns_json(item.columns)
    else:
        tokens = columns_to_json(item.node.tokens, vocab)
    if tokens is not None and item.key is not None:
        tokens = {"key": item.key, **tokens}
    return tokens


def _node_v2(item: StreamNode, vocab: codec.VocabTable) -> dict[str, Any]:
    node = item.node
    out = node_to_json(node, with_tokens=False)
    tokens = node_tokens_json(item, vocab)
    out["tokens"] = tokens
    if node.scores:
        out["scored"] = [score_to_json(s, columns_to_json(s.tokens, vocab)) for s in node.scores]
    return out


def write_stream(
    stream: DocumentStream, *, version: int = VERSION, tick: Callable[[], None] | None = None
) -> Iterator[bytes]:
    """The file, a line at a time (bytes). `tick` is called once a node and once an event."""
    if version not in VERSIONS:
        raise FormatError(f"loom-json has versions {VERSIONS}, not {version!r}")
    head = stream.head
    top: dict[str, Any] = {
        "format": FORMAT,
        "version": version,
        "title": head.title,
        "root": head.root,
    }
    if head.current is not None:
        top["current"] = head.current
    top["personas"] = [p.to_json() for p in head.personas]
    yield _dump(top)[:-1] + b",\n"
    table = codec.VocabTable({})
    if version >= 2:
        vocab = dict(stream.vocabulary())
        yield b'"vocab":' + _dump({str(i): t for i, t in vocab.items()}) + b",\n"
        table = codec.VocabTable(vocab)
        del vocab
    yield b'"nodes":[\n'
    first = True
    for item in stream.nodes(columns=version >= 2):
        line = _dump(_node_v2(item, table) if version >= 2 else node_to_json(item.node))
        yield (b"" if first else b",\n") + line
        first = False
        if tick is not None:
            tick()
    yield (b"" if first else b"\n") + b"],\n"
    if version >= 2:
        yield b'"token_arrays":[\n'
        first = True
        for key in stream.event_token_keys():
            line = _dump({"key": key, **(columns_to_json(stream.tokens(key), table) or {})})
            yield (b"" if first else b",\n") + line
            first = False
        yield (b"" if first else b"\n") + b"],\n"
    yield b'"events":[\n'
    first = True

    def inline(value: dict[str, Any]) -> dict[str, Any]:
        row = codec.encode(stream.tokens(int(value[ev.TOKEN_REF])))
        return {ev.TOKEN_DATA: codec.row_to_json(row)}

    for event in stream.events():
        if version < 2:
            event = ev.map_tokens(event, inline)
        yield (b"" if first else b",\n") + _dump(event)
        first = False
        if tick is not None:
            tick()
    meta = {k: v for k, v in head.meta.items() if k != "current"}
    yield (b"" if first else b"\n") + b"]"
    if meta:
        yield b',\n"meta":' + _dump(meta)
    yield b"}\n"


def write(doc: LoomDocument, current: int | None, *, version: int = VERSION) -> str:
    """The whole file as text (for small documents; `write_stream` for any size)."""
    stream = MemoryStream(doc, current)
    if current is None:
        stream.head.current = None
    return b"".join(write_stream(stream, version=version)).decode("utf-8")


# --- reading, a node at a time ------------------------------------------------------------------


class NodeWorkers(Protocol):
    """Reads raw node lines elsewhere (see `prepare.Preparer`), for a sink that stores what they
    prepare (`ImportSink.prepared`): `start` with the file's vocabulary, `add` a line and get back,
    in file order, those done so far with what became of each (None: read it here)."""

    def start(self, vocab: dict[int, str]) -> None: ...

    def add(self, item: RawItem) -> Iterator[tuple[RawItem, PreparedNode | None]]: ...

    def drain(self) -> Iterator[tuple[RawItem, PreparedNode | None]]: ...


def read_into(
    pieces: Iterable[tuple[str, str, Any]],
    sink: DocumentSink,
    *,
    tick: Callable[[], None] | None = None,
    ids: NodeIds | IntIds | None = None,
    workers: NodeWorkers | None = None,
) -> DocumentHead:
    """Feed a loom-json file's pieces (see jsonstream) to `sink`; returns its head.

    `workers` read the raw node lines of a version-2 file (the sink must then take what they
    prepare: `ImportSink.prepared`). Raises `NeedsWholeDocument` for a file whose node ids are
    strings (then `read` it whole).
    """
    head = DocumentHead()
    version: int | None = None
    vocab: codec.VocabTable | None = None
    ids = ids if ids is not None else IntIds()
    index = 0
    dropped = 0
    seen: set[str] = set()
    current: Any = None
    pool: NodeWorkers | None = None

    def node_done(item: RawItem | Any, prepared: PreparedNode | None) -> None:
        nonlocal index
        if prepared is not None:
            cast(ImportSink, sink).prepared(prepared)
        else:
            value = item.value() if isinstance(item, RawItem) else item
            node, key, columns = read_node(value, index, ids, version or 1, vocab)
            sink.node(node, key, columns)
        index += 1
        if tick is not None:
            tick()

    for kind, name, value in pieces:
        if kind == "raw" and name == "nodes" and pool is not None:
            for item, prepared in pool.add(value):
                node_done(item, prepared)
            continue
        if pool is not None:  # the nodes are over: every one in the sink before what follows
            for item, prepared in pool.drain():
                node_done(item, prepared)
            pool = None
        if kind == "field":
            seen.add(name)
            if name == "format":
                if value != FORMAT:
                    raise FormatError(f"not a loom-json file (its format is {f.brief(value)})")
            elif name == "version":
                version = _version(value)
            elif name == "title":
                head.title = f.string(value, "title")
            elif name == "root":
                if value is None:
                    raise FormatError("loom-json file has no root")
                head.root = ids.ref(value, "root")
            elif name == "current":
                current = value
            elif name == "personas":
                head.personas = personas_from_json(value or [], "personas")
            elif name == "meta":
                head.meta = dict(f.obj(value, "meta"))
            elif name == "vocab":
                entries = vocab_from_json(value)
                sink.vocabulary(entries)
                vocab = codec.VocabTable(entries)
                if workers is not None and version is not None and version >= 2:
                    workers.start(entries)
                    pool = workers
            continue
        if "format" not in seen or version is None:
            raise FormatError("not a loom-json file: its format and version must come first")
        if name == "nodes":
            if version >= 2 and vocab is None:
                raise FormatError("loom-json 2: the vocab must come before the nodes")
            node_done(value, None)
            continue
        if name == "token_arrays":
            data = f.obj(value, f"token_arrays[{index}]")
            key = _key(data.get("key"), "a token array's key")
            if key is None:
                raise FormatError("a token array has no key")
            table = vocab or codec.VocabTable({})
            sink.token_array(key, columns_from_json(data, f"token array {key}", table))
        elif ids.renumbered:
            f.obj(value, "an event")
            dropped += 1  # the log names nodes by loom ids; renumbered, it no longer fits them
        else:
            sink.event(f.obj(value, "an event"))
        if tick is not None:
            tick()
    if pool is not None:
        for item, prepared in pool.drain():
            node_done(item, prepared)
    if "format" not in seen:
        raise FormatError("not a loom-json file (it has no format)")
    if version is None:
        raise FormatError("loom-json version must be an integer, not None")
    if head.root is None:
        raise FormatError("loom-json file has no root")
    if current is not None:
        head.current = ids.ref(current, "the current node")
    if dropped:
        warnings = head.meta.get("import_warnings")
        warnings = list(warnings) if isinstance(warnings, list) else []
        warnings.append(f"{dropped} events dropped: the file's node ids are strings")
        head.meta["import_warnings"] = warnings
    return head


def _key(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(f"{where} must be an integer, not {f.kind(value)}")
    return value


def read_node(
    value: Any, index: int, ids: NodeIds | IntIds, version: int, vocab: codec.VocabTable | None
) -> tuple[Node, int | None, codec.TokenColumns | None]:
    """A node of the file, the key its events name its tokens by, and, where its tokens can be
    kept as the file has them (every id in the vocabulary, as the loom's will be), those columns
    (then `node.tokens` is empty)."""
    if version < 2:
        return node_from_json(value, index, ids), None, None
    table = vocab if vocab is not None else codec.VocabTable({})
    kept: list[codec.TokenColumns] = []

    def read_own(raw: Any, where: str) -> TokenArray:
        columns = token_columns_from_json(raw, where)
        if columns is None or len(columns) == 0:
            return TokenArray.empty()
        if table.first_unknown(columns.ids, columns.top_ids) is None:
            kept.append(columns)
            return TokenArray.empty()
        return tokens_of(columns, where, table)

    node = node_from_json(
        value, index, ids, read_own, lambda raw, where: columns_from_json(raw, where, table)
    )
    tokens = value.get("tokens")
    raw_key = tokens.get("key") if isinstance(tokens, dict) else None
    return node, _key(raw_key, f"node {node.id} tokens.key"), (kept[0] if kept else None)


def _version(version: Any) -> int:
    if isinstance(version, bool) or not isinstance(version, int):
        raise FormatError(f"loom-json version must be an integer, not {f.brief(version)}")
    if version > VERSION:
        raise FormatError(
            f"loom-json version {version} is newer than this loom reads (up to {VERSION}): "
            "update loom"
        )
    if version < 1:
        raise FormatError(f"loom-json version {version} does not exist")
    return version


def _dict_pieces(top: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    order = ["format", "version"] + [k for k in top if k not in ("format", "version")]
    for name in order:
        if name not in top:
            continue
        value = top[name]
        if name in STREAMED:
            for item in f.array(value, name):
                yield "item", name, item
        else:
            yield "field", name, value


def _read_v2(top: dict[str, Any]) -> LoomDocument:
    sink = MemorySink()
    pieces = list(_dict_pieces(top))
    # vocab before everything streamed, whatever the order of the keys in memory
    pieces.sort(key=lambda p: 0 if p[0] == "field" else 1)
    head = read_into(pieces, sink, ids=NodeIds(f.array(top.get("nodes"), "nodes")))
    doc = sink.document(head)
    doc.nodes = ordered_nodes(doc.nodes, doc.root)
    if doc.meta.get("current") is not None and doc.meta["current"] not in {n.id for n in doc.nodes}:
        raise FormatError(f"the current node {doc.meta['current']} is not in the file")
    return doc


def read(data: Any) -> LoomDocument:
    """A whole parsed file (either version) as a `LoomDocument`."""
    top = f.obj(data, "a loom-json file")
    if top.get("format") != FORMAT:
        raise FormatError(f"not a loom-json file (its format is {f.brief(top.get('format'))})")
    version = _version(top.get("version"))
    if version >= 2:
        return _read_v2(top)
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
