"""Bad files are refused with one-line errors and left exactly as they were; migrations."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from support.store import model_tokens

from loom.store import db as dbmod
from loom.store import schema
from loom.store.errors import LoomBusyError, LoomError, LoomFileError, LoomVersionError
from loom.store.loom import Loom, NewNode


def make_loom(path: Path, n: int = 40) -> Path:
    with Loom.create(path, title="good", prompt="Once") as lm:
        lm.add_children(
            lm.root_id,
            [NewNode(f" branch {i}", tokens=model_tokens(f" branch {i} x" * 9)) for i in range(n)],
        )
    return path


def random_bytes(p: Path) -> None:
    p.write_bytes(os.urandom(8192))


def empty(p: Path) -> None:
    p.write_bytes(b"")


def text_file(p: Path) -> None:
    p.write_text("just some notes\n")


def foreign_sqlite(p: Path) -> None:
    conn = sqlite3.connect(p)
    conn.execute("CREATE TABLE notes (x)")
    conn.execute("INSERT INTO notes VALUES ('hi')")
    conn.commit()
    conn.close()


def foreign_sqlite_wal(p: Path) -> None:
    conn = sqlite3.connect(p)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE nodes (x)")
    conn.commit()
    conn.close()


def newer_version(p: Path) -> None:
    make_loom(p)
    conn = sqlite3.connect(p)
    conn.execute("PRAGMA user_version = 99")
    conn.close()


def truncated_half(p: Path) -> None:
    make_loom(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def truncated_header(p: Path) -> None:
    make_loom(p)
    p.write_bytes(p.read_bytes()[:60])


def loom_id_without_tables(p: Path) -> None:
    conn = sqlite3.connect(p)
    conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("CREATE TABLE meta (key, value)")
    conn.commit()
    conn.close()


def corrupt_pages(p: Path) -> None:
    make_loom(p, n=200)
    data = bytearray(p.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for start in range(page, len(data), page):  # every page but the first (the header)
        data[start + 8 : start + page - 8] = os.urandom(page - 16)
    p.write_bytes(bytes(data))


BAD: dict[str, Callable[[Path], None]] = {
    "random": random_bytes,
    "empty": empty,
    "text": text_file,
    "foreign": foreign_sqlite,
    "foreign_wal": foreign_sqlite_wal,
    "newer": newer_version,
    "truncated": truncated_half,
    "truncated_header": truncated_header,
    "no_tables": loom_id_without_tables,
}


def fingerprint(p: Path) -> tuple[bytes, int]:
    return p.read_bytes(), p.stat().st_mtime_ns


@pytest.mark.parametrize("readonly", [True, False])
@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_are_refused_and_left_untouched(
    tmp_path: Path, name: str, readonly: bool
) -> None:
    path = tmp_path / f"{name}.loom"
    BAD[name](path)
    before, listing = fingerprint(path), sorted(os.listdir(tmp_path))
    with pytest.raises(LoomFileError) as info:
        Loom.open(path, readonly=readonly)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert fingerprint(path) == before
    assert sorted(os.listdir(tmp_path)) == listing  # refused from the header: no sidecar files


def test_messages_say_what_is_wrong(tmp_path: Path) -> None:
    expected = {
        "empty": "is empty",
        "random": "not an SQLite database",
        "foreign": "not a loom file",
        "newer": "newer loom",
        "truncated": "truncated",
        "no_tables": "missing table",
    }
    for name, words in expected.items():
        path = tmp_path / f"{name}.loom"
        BAD[name](path)
        with pytest.raises(LoomFileError, match=words):
            Loom.open(path)
    with pytest.raises(LoomVersionError):
        Loom.open(tmp_path / "newer.loom")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(LoomFileError, match="no such file"):
        Loom.open(tmp_path / "nope.loom")
    with pytest.raises(LoomFileError, match="directory"):
        Loom.open(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("readonly", [True, False])
def test_corrupt_pages_give_a_loom_file_error_and_the_file_is_untouched(
    tmp_path: Path, readonly: bool
) -> None:
    path = tmp_path / "corrupt.loom"
    corrupt_pages(path)
    before = fingerprint(path)
    # At open, or at the first read of the tree.
    with pytest.raises(LoomFileError) as info, Loom.open(path, readonly=readonly) as lm:
        lm.children(lm.root_id)
        lm.to_document()
    assert "\n" not in str(info.value)
    if readonly:
        assert fingerprint(path) == before


def test_reading_never_writes_the_file(tmp_path: Path) -> None:
    path = make_loom(tmp_path / "ok.loom")
    before = fingerprint(path)
    with Loom.open(path, readonly=True) as lm:
        lm.to_document()
        lm.search("branch")
        lm.set_current(lm.children(lm.root_id)[3].id)
        lm.path_text(lm.current)
        lm.stats()
    assert fingerprint(path) == before


def test_a_newer_loom_opened_read_only_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "n.loom"
    newer_version(path)
    before = fingerprint(path)
    with pytest.raises(LoomVersionError, match="upgrade loom"):
        Loom.open(path, readonly=True)
    assert fingerprint(path) == before


def _add_column(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE nodes ADD COLUMN color TEXT")


def _broken(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE nodes ADD COLUMN half_done TEXT")
    raise RuntimeError("boom")


def test_an_older_file_is_migrated_on_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_loom(tmp_path / "old.loom", n=3)
    current = schema.schema_version()
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, _add_column])
    assert schema.schema_version() == current + 1
    before = fingerprint(path)
    with pytest.raises(LoomVersionError, match="older"):
        Loom.open(path, readonly=True)  # upgrading needs a write
    assert fingerprint(path) == before
    with Loom.open(path) as lm:
        assert lm.stats()["nodes"] == 4
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == current + 1
    assert "color" in [r[1] for r in conn.execute("PRAGMA table_info(nodes)")]
    conn.close()
    with Loom.open(path, readonly=True) as lm:
        assert lm.stats()["nodes"] == 4


def test_a_failed_migration_leaves_the_file_at_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_loom(tmp_path / "old.loom", n=3)
    current, migrations = schema.schema_version(), schema.MIGRATIONS
    monkeypatch.setattr(schema, "MIGRATIONS", [*migrations, _broken])
    with pytest.raises(LoomFileError, match="could not be upgraded"):
        Loom.open(path)
    monkeypatch.setattr(schema, "MIGRATIONS", migrations)
    with Loom.open(path) as lm:
        assert lm.stats()["nodes"] == 4
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == current
    assert "half_done" not in [r[1] for r in conn.execute("PRAGMA table_info(nodes)")]
    conn.close()


def test_a_write_blocked_too_long_says_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_loom(tmp_path / "b.loom", n=1)
    monkeypatch.setattr(dbmod, "BUSY_TIMEOUT_MS", 100)
    with Loom.open(path) as lm:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(LoomBusyError, match="busy"):
            lm.add_child(lm.root_id, " blocked")
        assert lm.stats()["nodes"] == 2  # reading still works while another writes
        other.execute("ROLLBACK")
        other.close()
        lm.add_child(lm.root_id, " now")
        assert lm.stats()["nodes"] == 3


def test_create_leaves_no_temporary_files(tmp_path: Path) -> None:
    make_loom(tmp_path / "c.loom", n=2)
    assert sorted(os.listdir(tmp_path)) == ["c.loom"]
    with open(tmp_path / "c.loom", "rb") as f:
        header = f.read(100)
    assert header[18:20] == b"\x02\x02"  # WAL mode is in the file itself
    assert int.from_bytes(header[68:72], "big") == schema.APPLICATION_ID


def test_create_in_a_missing_directory_and_use_after_close(tmp_path: Path) -> None:
    with pytest.raises(LoomFileError, match="cannot be created"):
        Loom.create(tmp_path / "no" / "such" / "dir.loom")
    lm = Loom.create(tmp_path / "x.loom")
    lm.close()
    with pytest.raises(LoomError, match="closed"):
        lm.add_child(1, " late")
    with pytest.raises(LoomError, match="closed"):
        lm.children(1)
