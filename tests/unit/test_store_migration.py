"""A .loom written by an older loom is migrated on open: tested on real files of schemas 1 and 3.

`tests/data/store/schema1_labelled.loom` was written by the code of schema 1 (token texts in every
tokens row), with its loom-json export made by that same code beside it: after the migration the
loom must export exactly that, and still undo, redo and list its census.
`schema3_zlib.loom` was written by the code of schema 3 (token blobs and large payloads zlib, not
zstd): it must read, export and grow on as it was.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from support.compare import differences
from support.store import model_tokens

from loom.formats import read_document
from loom.store import migrations, schema
from loom.store.errors import LoomFileError, LoomVersionError
from loom.store.loom import Loom

DATA = Path(__file__).resolve().parent.parent / "data" / "store"
OLD = DATA / "schema1_labelled.loom"
EXPORT = DATA / "schema1_labelled.loom.json"
ZLIB = DATA / "schema3_zlib.loom"
ZLIB_EXPORT = DATA / "schema3_zlib.loom.json"


def _copy(tmp_path: Path) -> Path:
    path = tmp_path / "old.loom"
    shutil.copyfile(OLD, path)
    return path


def _version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_the_fixture_is_schema_1() -> None:
    assert _version(OLD) == 1
    assert schema.schema_version() > 1  # so opening it for writing migrates it


def test_opening_migrates_and_the_loom_is_unchanged(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    with pytest.raises(LoomVersionError, match="older"):
        Loom.open(path, readonly=True)  # an upgrade needs a write
    with Loom.open(path) as lm:
        doc = lm.to_document()
        census = lm.censuses()
    assert _version(path) == schema.schema_version()
    expected = read_document(EXPORT)
    assert differences(expected, doc) == []
    assert [c.node_id for c in census] == [2]
    assert census[0].payload["outcomes"][0]["rollouts"][0]["tokens"].texts == [
        " and",
        " waves",
        " back",
    ]
    conn = sqlite3.connect(path)
    columns = [r[1] for r in conn.execute("PRAGMA table_info(tokens)")]
    assert "texts" in columns and "ids" not in columns and "data" in columns
    n_vocab = conn.execute("SELECT COUNT(*) FROM vocab").fetchone()[0]
    exceptions = conn.execute("SELECT COUNT(*) FROM tokens WHERE texts IS NOT NULL").fetchone()[0]
    conn.close()
    assert n_vocab > 0 and exceptions == 0  # every text is the vocabulary's: stored once


def test_the_migrated_loom_keeps_its_history(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    with Loom.open(path) as lm:
        assert not lm.can_redo  # the undone prune was discarded by the census after it
        before = lm.to_document(events=False)
        census = lm.undo()
        assert census is not None and census.kind == "census" and lm.censuses() == []
        edit = lm.undo()
        assert edit is not None and edit.kind == "edit"
        assert lm.node(3).text == " Waluigi sneers at them"
        assert lm.node(3).tokens.texts == [" Waluigi", " sneers", " at", " them"]
        lm.redo()
        lm.redo()
        assert differences(before, lm.to_document(events=False)) == []
        assert len(lm.censuses()) == 1
        child = lm.add_child(2, " again", author="model", tokens=lm.node(2).tokens.slice(0, 1))
        assert lm.node(child).tokens.texts == [" Luigi"]


def test_a_failed_migration_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _copy(tmp_path)
    real = migrations.tokens_to_vocabulary

    def crash(conn: sqlite3.Connection) -> None:
        real(conn)  # all the work done, then a failure before the commit
        raise RuntimeError("power cut")

    monkeypatch.setattr(migrations, "tokens_to_vocabulary", crash)
    with pytest.raises(LoomFileError, match="could not be upgraded from file format 1"):
        Loom.open(path)
    assert _version(path) == 1
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert "vocab" not in tables and "tokens_v2" not in tables
    monkeypatch.setattr(migrations, "tokens_to_vocabulary", real)
    with Loom.open(path) as lm:
        assert differences(read_document(EXPORT), lm.to_document()) == []


def _blobs(path: Path) -> tuple[set[int], set[bytes]]:
    """The first byte of every token blob's body and of every compressed payload."""
    conn = sqlite3.connect(path)
    try:
        tokens = {bytes(r[0])[1] for r in conn.execute("SELECT data FROM tokens")}
        payloads = {
            bytes(r[0])[:1] for r in conn.execute("SELECT payload FROM events")
            if isinstance(r[0], bytes)
        }  # fmt: skip
    finally:
        conn.close()
    return tokens, payloads


def test_a_schema_3_loom_with_zlib_blobs_reads_and_grows(tmp_path: Path) -> None:
    path = tmp_path / "zlib.loom"
    shutil.copyfile(ZLIB, path)
    assert _version(path) == 3
    assert _blobs(path) == ({0x78}, {b"\x78"})  # zlib streams only, a payload among them
    with Loom.open(path, readonly=True) as lm:  # read as it is: no upgrade needed to export it
        assert differences(read_document(ZLIB_EXPORT), lm.to_document()) == []
    assert _version(path) == 3
    with Loom.open(path) as lm:
        assert differences(read_document(ZLIB_EXPORT), lm.to_document()) == []
        leaf = lm.children(2)[-1].id  # the fixture's new node, edited after
        lm.add_child(leaf, " and more", author="model", tokens=model_tokens(" and more", k=3))
        assert lm.undo() is not None and lm.undo() is not None  # the add, then the zlib edit
        assert lm.node(leaf).text == " but the croissant eats him first"
        lm.redo()
        lm.redo()
        assert lm.node(lm.children(leaf)[0].id).text == " and more"
    assert _version(path) == schema.schema_version()
    tokens, _ = _blobs(path)
    assert tokens == {0x78, 0x28}  # the old rows as they were, the new one a zstd frame
