"""What `loom import` accepts can later be exported, replayed, forked and extended; the rest is
refused in one line naming the node or event, with nothing written.

Also: tokens that do not spell their node's text (kept only as far as they do, the rest of the
text left for the model to tokenize), and loom-json files whose ids are strings.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from support.cli import Result, assert_one_line_error, run_loom
from support.store import WordTokenizer, model_tokens

from loom.store.errors import TokensUnavailableError
from loom.store.loom import Loom, NewNode


def _token(text: str, token_id: int = 5, **extra: Any) -> dict[str, Any]:
    return {"id": token_id, "text": text, "logprob": -0.5, "top": [], **extra}


def _base() -> dict[str, Any]:
    """A small loom-json file with tokens, a persona and no events."""
    return {
        "format": "loom-json",
        "version": 1,
        "title": "t",
        "root": 1,
        "current": 3,
        "personas": [],
        "nodes": [
            {
                "id": 1,
                "parent": None,
                "author": "human",
                "text": "Root",
                "created_at": 1.0,
                "tokens": [_token("Root", 3)],
            },
            {
                "id": 2,
                "parent": 1,
                "author": "model",
                "text": " child",
                "created_at": 2.0,
                "tokens": [_token(" chi", 7), _token("ld", 8)],
                "persona": {"label": "luigi", "source": "model", "posterior": {"luigi": 0.9}},
            },
            {
                "id": 3,
                "parent": 2,
                "author": "human",
                "text": " more",
                "created_at": 3.0,
                "tokens": [_token(" more", 4)],
            },
        ],
    }


@pytest.fixture(scope="module")
def log_doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A loom-json file with a real event log (edits, undo, a group), as `loom export` writes."""
    folder = tmp_path_factory.mktemp("log")
    with Loom.create(folder / "src.loom", title="t", prompt="Root") as lm:
        a = lm.add_child(lm.root_id, " child", author="model", tokens=model_tokens(" child"))
        lm.edit(a, " child, edited")
        lm.undo()
        with lm.batch():
            lm.add_tag(a, "x")
            lm.set_bookmark(a, True)
        lm.set_current(a)
    done = run_loom("export", folder / "src.loom", "--format", "loom-json")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    assert [e["kind"] for e in data["events"]][:4] == ["create", "add", "edit", "undo"]
    return data


def _write(folder: Path, doc: dict[str, Any], name: str = "in.json") -> Path:
    text = json.dumps(doc)
    for literal in ("1e300", "-1e300", "Infinity", "NaN"):  # numbers json.dumps will not write
        text = text.replace(f'"<{literal}>"', literal)
    text = text.replace(json.dumps(DEEP), '{"x": ' * 100_000 + "{}" + "}" * 100_000)
    path = folder / name
    path.write_text(text)
    return path


def _import(tmp_path: Path, doc: dict[str, Any]) -> tuple[Result, Path]:
    src = _write(tmp_path, doc)
    out = tmp_path / "out.loom"
    return run_loom("import", src, "-o", out), out


DEEP = "<100k levels of nesting>"  # json.dumps cannot write that deep: _write puts it in


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"end": True}
    for _ in range(levels - 1):
        value = {"x": value}
    return value


# --- refused --------------------------------------------------------------------------------------


def _node2(key: str, value: Any) -> Any:
    return lambda doc, log: doc["nodes"][1].__setitem__(key, value)


def _token2(key: str, value: Any) -> Any:
    return lambda doc, log: doc["nodes"][1]["tokens"][0].__setitem__(key, value)


def _event(index: int, key: str, value: Any) -> Any:
    def change(doc: dict[str, Any], log: dict[str, Any]) -> None:
        doc.clear()
        doc.update(log)
        doc["events"][index][key] = value

    return change


def _log_events(edit: Any) -> Any:
    def change(doc: dict[str, Any], log: dict[str, Any]) -> None:
        doc.clear()
        doc.update(log)
        edit(doc["events"])

    return change


REFUSED = {
    "logprob 1e300 (inf as float32)": (_token2("logprob", "<1e300>"), "node 2"),
    "top logprob -1e300": (_token2("top", [{"id": 9, "logprob": "<-1e300>"}]), "node 2"),
    "entropy 1e300": (_token2("entropy", "<1e300>"), "node 2"),
    "created_at 1e300": (_node2("created_at", "<1e300>"), "node 2"),
    "created_at before year 1": (_node2("created_at", -1e12), "node 2"),
    "node id 2**63-1": (
        lambda doc, log: (doc["nodes"][2].__setitem__("id", 2**63 - 1), doc.pop("current")),
        "node",
    ),
    "node id 2**53": (
        lambda doc, log: (doc["nodes"][2].__setitem__("id", 2**53), doc.pop("current")),
        "node",
    ),
    "event ts Infinity": (_event(1, "ts", "<Infinity>"), "event"),
    "event ts 1e300": (_event(1, "ts", "<1e300>"), "event"),
    "event seq 2**63": (_event(-1, "seq", 2**63), "event"),
    "create payload empty": (_event(0, "payload", {}), "event 1"),
    "add payload without nodes": (_event(1, "payload", {"parent": 1}), "event 2"),
    "add under a missing parent": (
        _log_events(lambda events: events[1]["payload"]["nodes"][0].__setitem__("parent", 99)),
        "event 2",
    ),
    "undo of a missing event": (_event(3, "payload", {"target": 77}), "event 4"),
    "log not starting with a snapshot": (_log_events(lambda events: events.pop(0)), "event"),
    "payload with NaN": (_event(1, "payload", {"parent": 1, "nodes": "<NaN>"}), "event 2"),
    "payload nested 100k deep": (_event(1, "payload", DEEP), "event 2"),
    "node meta 100k deep": (_node2("meta", DEEP), "node 2"),
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_import_refuses_what_later_steps_could_not_use(
    tmp_path: Path, log_doc: dict[str, Any], case: tuple[Any, str]
) -> None:
    change, where = case
    doc = _base()
    change(doc, copy.deepcopy(log_doc))
    done, out = _import(tmp_path, doc)
    assert_one_line_error(done, where)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))] == []


# --- accepted: and then everything works ----------------------------------------------------------


def _string_ids(doc: dict[str, Any], log: dict[str, Any]) -> None:
    names = {1: "root", 2: "kid", 3: "grandkid"}
    doc["root"], doc["current"] = "root", "grandkid"
    for node in doc["nodes"]:
        node["id"] = names[node["id"]]
        node["parent"] = None if node["parent"] is None else names[node["parent"]]


ACCEPTED = {
    "the base file": lambda doc, log: None,
    "a real event log": lambda doc, log: (doc.clear(), doc.update(log)),
    "largest node id": lambda doc, log: (
        doc["nodes"][2].__setitem__("id", 2**53 - 1),
        doc.__setitem__("current", 2**53 - 1),
    ),
    "times at the edges": lambda doc, log: (
        doc["nodes"][1].__setitem__("created_at", -62135596800.0 + 86400),
        doc["nodes"][2].__setitem__("created_at", 253402300799.0 - 86400),
    ),
    "logprob -3e38": _token2("logprob", -3e38),
    "meta 32 deep": _node2("meta", _deep(32)),
    "string ids": _string_ids,
    "tokens that do not spell the text": _token2("text", " chX"),
}


@pytest.mark.parametrize("change", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_whatever_import_accepts_can_be_exported_replayed_forked_and_extended(
    tmp_path: Path, log_doc: dict[str, Any], change: Any
) -> None:
    doc = _base()
    change(doc, copy.deepcopy(log_doc))
    done, path = _import(tmp_path, doc)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    for fmt in ("loom-json", "openloom", "socketteer", "html", "svg", "dot"):
        exported = run_loom("export", path, "--format", fmt, "-o", tmp_path / f"x.{fmt}")
        assert exported.returncode == 0, (fmt, exported.stderr)
    assert run_loom("export", path, "--format", "markdown", "--tree").returncode == 0
    replayed = run_loom("replay", "--headless", path)
    assert replayed.returncode == 0, replayed.stderr
    last = replayed.stdout.splitlines()[-1].split()[0]
    forked = run_loom("fork", path, "--at", last, "-o", tmp_path / "fork.loom")
    assert forked.returncode == 0, forked.stderr
    again = run_loom("import", tmp_path / "x.loom-json", "-o", tmp_path / "again.loom")
    assert again.returncode == 0, again.stderr
    for target in (path, tmp_path / "fork.loom", tmp_path / "again.loom"):
        with Loom.open(target) as lm:
            new = lm.add_child(lm.current, " and one more", author="human")
            assert lm.path_text(new).endswith(" and one more")
            lm.undo()
    html = (tmp_path / "x.html").read_text()
    assert "cannot be replayed" not in html


# --- tokens that do not spell the text ------------------------------------------------------------


def test_tokens_are_kept_only_as_far_as_they_spell_the_text(tmp_path: Path) -> None:
    doc = _base()
    doc["nodes"][1]["tokens"] = [_token(" chi", 7), _token("XX", 8), _token("ld", 9)]
    done, path = _import(tmp_path, doc)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "node 2" in line]
    assert len(warnings) == 1 and warnings[0].startswith("loom: warning: "), done.stderr
    with Loom.open(path) as lm:
        node = lm.node(2)
        assert node.text == " child"
        assert node.tokens.texts == [" chi"] and lm.header(2).tokens_partial
        with pytest.raises(TokensUnavailableError, match="node 2"):
            lm.path_tokens(3)  # never a context other than the text the user sees
    with Loom.open(path, tokenizer=WordTokenizer()) as lm:
        tokens = lm.path_tokens(3)
        assert "".join(tokens.texts) == lm.path_text(3) == "Root child more"
        assert tokens.texts[1:3] == [" chi", "ld"]  # the kept token, then the rest tokenized


def test_tokens_running_past_the_text_are_cut_where_it_ends(tmp_path: Path) -> None:
    doc = _base()
    doc["nodes"][1]["tokens"] = [_token(" chi"), _token("ld"), _token(" extra")]
    done, path = _import(tmp_path, doc)
    assert done.returncode == 0, done.stderr
    assert "node 2" in done.stderr
    with Loom.open(path) as lm:
        assert lm.node(2).tokens.texts == [" chi", "ld"]
        assert not lm.header(2).tokens_partial


def test_tokens_that_spell_the_text_are_kept_whole_and_exact(tmp_path: Path) -> None:
    done, path = _import(tmp_path, _base())
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr
    with Loom.open(path) as lm:
        tokens = lm.node(2).tokens
        assert tokens.texts == [" chi", "ld"] and list(tokens.ids) == [7, 8]
        assert [round(float(x), 3) for x in tokens.logprobs] == [-0.5, -0.5]
        assert not lm.header(2).tokens_partial


# --- string ids -----------------------------------------------------------------------------------


def test_string_ids_are_mapped_to_fresh_integers(tmp_path: Path) -> None:
    doc = _base()
    _string_ids(doc, {})
    done, path = _import(tmp_path, doc)
    assert done.returncode == 0, done.stderr
    with Loom.open(path) as lm:
        assert lm.root_id == 1 and lm.current == 3
        assert lm.path_text(3) == "Root child more"
        assert [h.id for h in lm.children(1)] == [2]
        assert lm.node(2).meta.get("loomjson_id") == "kid"
        assert lm.node(2).tokens.texts == [" chi", "ld"]


def test_string_references_to_integer_ids_are_read_as_those_ids(tmp_path: Path) -> None:
    doc = _base()
    doc["root"], doc["current"] = "1", "3"
    doc["nodes"][1]["parent"] = "1"
    done, path = _import(tmp_path, doc)
    assert done.returncode == 0, done.stderr
    with Loom.open(path) as lm:
        assert lm.root_id == 1 and lm.current == 3 and lm.path_text(3) == "Root child more"
        assert "loomjson_id" not in lm.node(2).meta  # nothing was renumbered


def test_string_ids_drop_the_event_log_with_a_warning(
    tmp_path: Path, log_doc: dict[str, Any]
) -> None:
    doc = copy.deepcopy(log_doc)
    ids = {n["id"]: f"n{n['id']}" for n in doc["nodes"]}
    for node in doc["nodes"]:
        node["id"] = ids[node["id"]]
        node["parent"] = None if node["parent"] is None else ids[node["parent"]]
    doc["root"], doc["current"] = ids[doc["root"]], ids[doc["current"]]
    events = len(doc["events"])
    done, path = _import(tmp_path, doc)
    assert done.returncode == 0, done.stderr
    assert f"loom: warning: {events} events dropped" in done.stderr
    with Loom.open(path) as lm:
        assert [e.kind for e in lm.events()] == ["import"]


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (("a", "a"), "duplicate node id"),
        ((1, "1"), "duplicate node id"),
        ((1, 1.5), "integer or a string"),
        ((1, [2]), "integer or a string"),
        ((1, ""), "empty"),
    ],
)
def test_bad_ids_are_refused(tmp_path: Path, ids: tuple[Any, Any], message: str) -> None:
    doc = _base()
    doc["nodes"] = doc["nodes"][:2]
    doc["nodes"][0]["id"], doc["nodes"][1]["id"] = ids
    doc["nodes"][1]["parent"] = ids[0]
    doc["root"] = ids[0]
    doc.pop("current")
    done, out = _import(tmp_path, doc)
    assert_one_line_error(done, message)
    assert not out.exists()


# --- loom-json 2: bad input to the streaming reader ----------------------------------------------


def _v2_file(tmp_path: Path, edit: Any = None, cut: int | None = None) -> Path:
    """A loom-json 2 export of a small model-written loom, edited (as JSON) or cut short."""
    src = tmp_path / "src.loom"
    with Loom.create(src, prompt="Bob:", prompt_tokens=model_tokens("Bob:")) as lm:
        lm.add_children(
            lm.root_id,
            [NewNode(" says hi", tokens=model_tokens(" says hi", k=3)), NewNode(" waves")],
        )
    out = tmp_path / "v2.json"
    assert run_loom("export", src, "--format", "loom-json", "-o", out).returncode == 0
    text = out.read_text()
    if edit is not None:
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith('{"id":2,'):
                node = json.loads(line.rstrip(","))
                edit(node, json.loads(lines[1][len('"vocab":') :].rstrip(",")))
                lines[i] = json.dumps(node) + ("," if line.endswith(",") else "")
        text = "\n".join(lines) + "\n"
    if cut is not None:
        text = text[:cut]
    out.write_text(text)
    return out


def _drop_vocab_entry(node: dict[str, Any], vocab: dict[str, str]) -> None:
    node["tokens"]["ids"][0] = 9_999_999  # an id the vocabulary does not hold


def _short_column(node: dict[str, Any], vocab: dict[str, str]) -> None:
    node["tokens"]["logprobs"].pop()


V2_REFUSED = {
    "truncated": ({"cut": -60}, "truncated"),
    "vocabulary id missing": ({"edit": _drop_vocab_entry}, "node 2"),
    "columns of unequal length": ({"edit": _short_column}, "node 2"),
}


@pytest.mark.parametrize("case", V2_REFUSED.values(), ids=V2_REFUSED.keys())
def test_import_of_a_bad_v2_file_is_one_error_and_nothing_written(
    tmp_path: Path, case: tuple[dict[str, Any], str]
) -> None:
    spec, where = case
    cut = spec.get("cut")
    src = _v2_file(tmp_path, spec.get("edit"))
    if cut is not None:
        src.write_text(src.read_text()[:cut])
    out = tmp_path / "out.loom"
    message = assert_one_line_error(run_loom("import", src, "-o", out), where)
    if "node 2" in where:
        assert "vocabulary" in message or "entries" in message
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))] == []
