"""loom-json 2 and the streaming import/export around it (loom.app.transfer).

The loom under test is the schema-1 fixture after its migration: labels (model and hand), a
bookmark, a tag, model tokens with top-k and entropy, human tokens, an undo history and a census.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from support.compare import differences

from loom.app.transfer import export_loom, import_file
from loom.formats import FormatError, read_document, write_document
from loom.store.errors import LoomError
from loom.store.loom import Loom
from loom.store.model import LoomDocument

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "store" / "schema1_labelled.loom"


@pytest.fixture
def rich(tmp_path: Path) -> Path:
    path = tmp_path / "rich.loom"
    shutil.copyfile(FIXTURE, path)
    Loom.open(path).close()  # migrated to the current schema
    return path


def _doc(path: Path) -> LoomDocument:
    with Loom.open(path, readonly=True) as lm:
        return lm.to_document()


def _same_loom(a: LoomDocument, b: LoomDocument) -> None:
    """b is a imported: the same tree, and a's log as the first events of b's."""
    assert differences(a, b, ignore_meta=()) in ([], ["events differs"])
    assert b.events[: len(a.events)] == a.events
    assert [e["kind"] for e in b.events[len(a.events) :]] == ["import"]


def test_v2_round_trip_keeps_everything(rich: Path, tmp_path: Path) -> None:
    out = tmp_path / "rich.json"
    assert export_loom(Loom.open(rich, readonly=True), "loom-json", out) == 6
    text = out.read_text()
    top = json.loads(text)
    assert top["version"] == 2 and top["vocab"] and "token_arrays" in top
    node = next(n for n in top["nodes"] if n["id"] == 2)
    assert set(node["tokens"]) >= {"ids", "logprobs", "entropy", "top_ids", "top_logprobs"}
    assert "texts" not in node["tokens"]  # every text is the vocabulary's
    assert all(isinstance(v, str) for v in top["vocab"].values())
    done = import_file(out, tmp_path / "again.loom")
    assert done.nodes == 6 and done.warnings == []
    original, again = _doc(rich), _doc(tmp_path / "again.loom")
    _same_loom(original, again)
    assert differences(original, read_document(out)) == []  # the in-memory reader agrees
    with Loom.open(tmp_path / "again.loom", readonly=True) as lm:
        census = lm.censuses()
        assert [c.node_id for c in census] == [2]
        assert lm.node(3).manual_persona is None and lm.node(4).manual_persona == "luigi"
        assert lm.node(2).persona is not None and lm.node(2).persona.label == "luigi"


def test_v1_is_still_written_and_read(rich: Path, tmp_path: Path) -> None:
    out = tmp_path / "v1.json"
    export_loom(Loom.open(rich, readonly=True), "loom-json", out, version=1)
    top = json.loads(out.read_text())
    assert top["version"] == 1 and "vocab" not in top
    assert isinstance(top["nodes"][1]["tokens"], list) and "top" in top["nodes"][1]["tokens"][0]
    import_file(out, tmp_path / "from-v1.loom")
    _same_loom(_doc(rich), _doc(tmp_path / "from-v1.loom"))
    old = FIXTURE.with_suffix(".loom.json")  # written by the code of schema 1
    import_file(old, tmp_path / "old.loom")
    assert differences(read_document(old), _doc(tmp_path / "old.loom")) == ["events differs"]


def test_v2_of_any_layout_is_read(rich: Path, tmp_path: Path) -> None:
    out = tmp_path / "rich.json"
    export_loom(Loom.open(rich, readonly=True), "loom-json", out)
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(json.loads(out.read_text()), indent=2))
    import_file(pretty, tmp_path / "pretty.loom")  # through ijson, not the line reader
    _same_loom(_doc(rich), _doc(tmp_path / "pretty.loom"))


def test_write_document_writes_either_version(rich: Path) -> None:
    doc = _doc(rich)
    for version in (1, 2):
        text = _render(doc, version)
        assert json.loads(text)["version"] == version
        assert differences(doc, read_document(text.encode())) == []


def _render(doc: LoomDocument, version: int) -> str:
    import io

    buffer = io.StringIO()
    write_document(doc, "loom-json", buffer, version=version)
    return buffer.getvalue()


def test_openloom_extension_uses_the_columns(rich: Path, tmp_path: Path) -> None:
    out = tmp_path / "rich.openloom.json"
    export_loom(Loom.open(rich, readonly=True), "openloom", out)
    top = json.loads(out.read_text())
    assert top["version"] == 3
    ext = top["extensions"]["loom"]
    assert ext["vocab"] and isinstance(ext["events"], list)
    tokens = top["nodes"]["2"]["extensions"]["loom"]["tokens"]
    assert set(tokens) >= {"ids", "logprobs", "top_ids", "top_logprobs"}
    assert top["nodes"]["2"]["text"] == " Luigi bows and smiles"  # the text still spelled out
    import_file(out, tmp_path / "from-openloom.loom")
    _same_loom(_doc(rich), _doc(tmp_path / "from-openloom.loom"))


def test_subtree_and_path_exports(rich: Path, tmp_path: Path) -> None:
    lm = Loom.open(rich, readonly=True)
    sub = tmp_path / "sub.json"
    assert export_loom(lm, "loom-json", sub, node=2) == 3  # node 2, its child 4, 4's child 5
    top = json.loads(sub.read_text())
    assert top["root"] == 2 and [n["id"] for n in top["nodes"]] == [2, 4, 5]
    assert top["nodes"][0]["parent"] is None and top["events"] == []
    assert set(map(int, top["vocab"])) >= set(top["nodes"][0]["tokens"]["ids"])
    import_file(sub, tmp_path / "sub.loom")
    with Loom.open(tmp_path / "sub.loom", readonly=True) as again:
        assert again.root_id == 2 and again.node(4).text == " and waves"
    path = tmp_path / "path.json"
    assert export_loom(lm, "loom-json", path, path=True) == 3  # root, 2, 4 (the current node)
    assert [n["id"] for n in json.loads(path.read_text())["nodes"]] == [1, 2, 4]
    assert export_loom(lm, "loom-json", path, node=5, path=True) == 4
    lm.close()


def test_progress_is_reported_and_bounded(rich: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    out = tmp_path / "rich.json"
    export_loom(
        Loom.open(rich, readonly=True), "loom-json", out, progress=lambda *a: calls.append(a)
    )
    assert calls and calls[-1][0] == calls[-1][1]
    assert len(calls) <= 101 and [d for d, _ in calls] == sorted(d for d, _ in calls)
    calls.clear()
    import_file(out, tmp_path / "again.loom", progress=lambda *a: calls.append(a))
    assert calls and calls[-1] == (1000, 1000) and len(calls) <= 202
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


# --- bad input: one error naming the node, nothing written ---------------------------------------


def _v2(rich: Path, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "good.json"
    export_loom(Loom.open(rich, readonly=True), "loom-json", out)
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _refused(tmp_path: Path, text: str, *needles: str) -> str:
    src = tmp_path / "bad.json"
    src.write_text(text)
    target = tmp_path / "bad.loom"
    with pytest.raises((FormatError, LoomError)) as caught:
        import_file(src, target)
    message = str(caught.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    assert not target.exists()
    return message


def _lines(data: dict[str, Any]) -> str:
    """The document in loom's own one-item-a-line layout (so the line reader is the one tested)."""
    from loom.formats import loomjson
    from loom.store.stream import MemorySink

    del loomjson, MemorySink
    head = {k: data[k] for k in ("format", "version", "title", "root", "current", "personas")}
    parts = [json.dumps(head)[:-1] + ",", '"vocab":' + json.dumps(data["vocab"]) + ","]
    for name in ("nodes", "token_arrays", "events"):
        items = ",\n".join(json.dumps(item) for item in data[name])
        parts.append(f'"{name}":[\n{items}\n],' if items else f'"{name}":[\n],')
    parts[-1] = parts[-1][:-1] + "}"
    return "\n".join(parts) + "\n"


def test_a_truncated_v2_file_is_refused(rich: Path, tmp_path: Path) -> None:
    text = _lines(_v2(rich, tmp_path))
    cut = text[: text.index('"token_arrays"')]
    _refused(tmp_path, cut, "truncated")
    _refused(tmp_path, text[: len(text) // 2], "line")  # cut inside a node's line


def test_a_missing_vocabulary_id_names_the_node(rich: Path, tmp_path: Path) -> None:
    data = _v2(rich, tmp_path)
    node = next(n for n in data["nodes"] if n["id"] == 4)
    del data["vocab"][str(node["tokens"]["ids"][1])]
    message = _refused(tmp_path, _lines(data), "node 4", "not in the vocabulary")
    assert message.startswith("node 4")


@pytest.mark.parametrize("column", ["logprobs", "entropy", "top_ids", "top_logprobs"])
def test_columns_of_unequal_length_name_the_node(rich: Path, tmp_path: Path, column: str) -> None:
    data = _v2(rich, tmp_path)
    node = next(n for n in data["nodes"] if n["id"] == 2)
    node["tokens"][column] = node["tokens"][column][:-1]
    _refused(tmp_path, _lines(data), "node 2", column)
    _refused(tmp_path, json.dumps(data, indent=1), "node 2", column)  # the ijson reader too


def test_corrupt_v2_files_are_refused(rich: Path, tmp_path: Path) -> None:
    data = _v2(rich, tmp_path)
    text = _lines(data)
    _refused(tmp_path, text.replace('"author"', '"author" "', 1), "line 4")
    bad = json.loads(json.dumps(data))
    bad["nodes"][1]["tokens"]["top_ids"][0][0] = "x"
    _refused(tmp_path, _lines(bad), "node 2", "top_ids[0][0]")
    bad = json.loads(json.dumps(data))
    bad["events"][3]["payload"]["nodes"][0]["tokens"] = {"$tok": 99999}
    _refused(tmp_path, _lines(bad), "event 4", "99999")
    late = json.loads(json.dumps(data))
    vocab = late.pop("vocab")
    late["vocab"] = vocab  # after the nodes: a one-pass reader cannot resolve them
    _refused(tmp_path, json.dumps(late), "vocab must come before the nodes")
