"""Format detection by content, and bad inputs rejected with one-line FormatErrors."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from support.formats import DATA, random_document

from loom.formats import (
    FORMATS,
    FormatError,
    detect_format,
    read_document,
    render_document,
)


def _loom_json(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(render_document(random_document(2, size=6), "loom-json"))
    data.update(changes)
    return data


def _error(source: bytes, fmt: str | None = None) -> str:
    with pytest.raises(FormatError) as info:
        read_document(source, fmt)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert isinstance(info.value, ValueError)
    return message


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("socketteer_dialectical.json", "socketteer"),
        ("socketteer_teleology.json", "socketteer"),
        ("loomsidian_data.json", "loomsidian"),
        ("openloom_v1.json", "openloom"),
    ],
)
def test_fixtures_are_detected(path: str, fmt: str) -> None:
    assert detect_format(DATA / path) == fmt


@pytest.mark.parametrize("fmt", ["loom-json", "socketteer", "openloom"])
def test_every_written_format_is_detected_by_content_not_name(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "misleading.md"  # the extension lies; content decides
    path.write_text(render_document(random_document(1), fmt), encoding="utf-8")
    assert detect_format(path) == fmt
    assert detect_format(path.read_bytes()) == fmt


def test_a_sqlite_loom_is_detected_but_not_imported(tmp_path: Path) -> None:
    path = tmp_path / "story.json"
    with sqlite3.connect(path) as db:
        db.execute("create table t (x)")
    assert detect_format(path) == "loom"
    assert "open it" in _error(path.read_bytes())


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (b"", "the file is empty"),
        (b"   \n", "the file is empty"),
        (b"hello, world", "neither JSON nor"),
        (b"[1, 2]", "not an object"),
        (b'{"hello": "world"}', "keys 'hello'"),
        (b'{"format": "tapestry-weave"}', "format is 'tapestry-weave'"),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
)
def test_unrecognised_inputs(source: bytes, expected: str) -> None:
    message = _error(source)
    assert expected in message
    if source.strip() and source[:1] not in (b"\xff",):
        assert message.startswith("not a recognised loom format")


def test_truncated_json_names_the_position() -> None:
    text = render_document(random_document(2, size=6), "loom-json")
    message = _error(text[: len(text) // 2].encode())
    assert message.startswith("invalid JSON at line")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"format": "loom-jsonx"}, "not a recognised loom format"),
        ({"version": 3}, "newer than this loom reads"),
        ({"version": "1"}, "version must be an integer"),
        ({"root": None}, "has no root"),
        ({"root": 999}, "root node 999 is missing"),
        ({"current": 999}, "current node 999"),
        ({"nodes": {}}, "nodes must be a JSON array"),
    ],
)
def test_bad_loom_json_headers(changes: dict[str, Any], expected: str) -> None:
    assert expected in _error(json.dumps(_loom_json(**changes)).encode())


def _with_nodes(edit: Any) -> bytes:
    data = _loom_json()
    edit(data["nodes"])
    return json.dumps(data).encode()


def test_dangling_parent() -> None:
    def edit(nodes: list[dict[str, Any]]) -> None:
        nodes[-1]["parent"] = 4242

    assert "dangling parent 4242" in _error(_with_nodes(edit))


def test_cycle() -> None:
    def edit(nodes: list[dict[str, Any]]) -> None:
        by_id = {n["id"]: n for n in nodes}
        by_id[2]["parent"] = 3
        by_id[3]["parent"] = 2

    assert "cycle through node" in _error(_with_nodes(edit))


def test_duplicate_ids() -> None:
    def edit(nodes: list[dict[str, Any]]) -> None:
        nodes.append(dict(nodes[-1]))

    assert "duplicate node id" in _error(_with_nodes(edit))


def test_second_root() -> None:
    def edit(nodes: list[dict[str, Any]]) -> None:
        nodes[-1]["parent"] = None

    assert "no parent but is not the root" in _error(_with_nodes(edit))


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("author", "robot", "author must be 'human' or 'model'"),
        ("text", 5, "text must be a string"),
        ("id", True, "must be an integer"),
        ("tokens", {"ids": [1], "logprobs": ["x"]}, "logprobs[0] must be a number"),
        ("persona", {"label": "a", "source": "oracle"}, "persona is malformed"),
        ("tags", ["ok", 3], "tags[1] must be a string"),
    ],
)
def test_bad_node_fields(field: str, value: Any, expected: str) -> None:
    def edit(nodes: list[dict[str, Any]]) -> None:
        nodes[-1][field] = value

    assert expected in _error(_with_nodes(edit))


def test_newline_in_user_data_stays_on_one_line() -> None:
    message = _error(json.dumps({"format": "evil\nformat"}).encode())
    assert "evil" in message


def test_an_explicit_format_overrides_detection_but_is_still_checked() -> None:
    socketteer_bytes = (DATA / "socketteer_dialectical.json").read_bytes()
    assert "not a loom-json file" in _error(socketteer_bytes, "loom-json")
    assert "unknown format" in _error(socketteer_bytes, "yaml")
    assert "cannot import" in _error(socketteer_bytes, "markdown")


def test_registry_describes_every_format() -> None:
    assert set(FORMATS) == {
        "loom-json",
        "socketteer",
        "loomsidian",
        "openloom",
        "markdown",
        "dot",
        "html",
        "svg",
    } | {"loom"}
    readable = {name for name, spec in FORMATS.items() if spec.can_read}
    writable = {name for name, spec in FORMATS.items() if spec.can_write}
    assert readable == {"loom-json", "socketteer", "loomsidian", "openloom"}
    assert writable == {"loom-json", "socketteer", "openloom", "markdown", "dot", "html", "svg"}
    with pytest.raises(FormatError, match="cannot export"):
        render_document(random_document(1), "loomsidian")


def test_huge_values_are_quoted_briefly() -> None:
    message = _error(json.dumps({"format": "x" * 10_000}).encode())
    assert len(message) < 200 and message.endswith("\u2026")


def test_format_errors_are_loom_errors() -> None:
    from loom.store.errors import LoomError

    with pytest.raises(LoomError):
        read_document(b"nonsense")
    message = str(FormatError("two\nlines\r\nhere"))
    assert "\n" not in message and "\r" not in message and message.startswith("two lines")
