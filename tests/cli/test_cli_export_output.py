"""`loom export -o OUT`: what may be overwritten, what is written in place, and one-line failures.

Device nodes are cloned into the test folder (as root) rather than used from /dev: a regression
that renames over its output would then replace the clone, never the system's /dev/full.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import as_unprivileged, assert_one_line_error, run_loom, shared_dir

from loom.store.loom import Loom

__all__ = ["shared_dir"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _loom(path: Path) -> Path:
    with Loom.create(path, title="t", prompt="Once upon a time") as lm:
        a = lm.add_child(lm.root_id, " there was a loom")
        lm.add_child(a, " that wove stories.")
    return path


def _markdown(src: Path) -> str:
    done = run_loom("export", src, "--format", "markdown")
    assert done.returncode == 0, done.stderr
    return done.stdout


def _device(tmp_path: Path, name: str, minor: int) -> Path:
    """A clone of /dev/null (minor 3) or /dev/full (minor 7) in the test folder when root."""
    if os.geteuid() != 0:
        return Path("/dev") / name
    path = tmp_path / name
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    except OSError as exc:
        pytest.skip(f"cannot make a device node here: {exc}")
    return path


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --- never over a loom ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["markdown", "loom-json", "html"])
def test_export_onto_its_own_loom_is_refused_and_the_loom_survives(
    tmp_path: Path, fmt: str
) -> None:
    src = _loom(tmp_path / "x.loom")
    before = _digest(src)
    done = run_loom("export", src, "--format", fmt, "-o", src)
    assert_one_line_error(done, str(src))
    assert done.stdout == ""
    assert _digest(src) == before
    with Loom.open(src, readonly=True) as lm:
        assert lm.stats()["nodes"] == 3
    assert _leftovers(tmp_path) == []


def test_export_onto_another_loom_or_any_sqlite_file_is_refused(tmp_path: Path) -> None:
    src = _loom(tmp_path / "x.loom")
    other = _loom(tmp_path / "other.loom")
    plain = tmp_path / "notes.db"
    with sqlite3.connect(plain) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    for target in (other, plain, tmp_path / "link.md"):
        if target.name == "link.md":
            target.symlink_to(other)  # through a symlink, too
        before = _digest(target)
        done = run_loom("export", src, "--format", "markdown", "-o", target)
        assert_one_line_error(done, "SQLite")
        assert _digest(target) == before
    with Loom.open(other, readonly=True) as lm:
        assert lm.stats()["nodes"] == 3


def test_export_onto_the_write_ahead_log_of_an_open_loom_is_refused(tmp_path: Path) -> None:
    src = _loom(tmp_path / "x.loom")
    with Loom.open(src) as lm:  # open, with a change still in the -wal file
        lm.add_child(lm.root_id, " uncheckpointed")
        wal = tmp_path / "x.loom-wal"
        assert wal.stat().st_size > 0
        before = _digest(wal)
        done = run_loom("export", src, "--format", "markdown", "-o", wal)
        assert_one_line_error(done)
        assert _digest(wal) == before
    with Loom.open(src, readonly=True) as lm:
        assert lm.stats()["nodes"] == 4


# --- ordinary files: replaced atomically, mode kept -----------------------------------------------


def test_export_over_an_ordinary_file_replaces_it_and_keeps_its_mode(tmp_path: Path) -> None:
    src = _loom(tmp_path / "x.loom")
    out = tmp_path / "out.md"
    out.write_text("old notes\n")
    out.chmod(0o600)
    done = run_loom("export", src, "--format", "markdown", "-o", out)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == _markdown(src)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    out.chmod(0o640)
    assert run_loom("export", src, "--format", "dot", "-o", out).returncode == 0
    assert out.read_text().startswith("digraph")
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert _leftovers(tmp_path) == []


def test_a_new_export_gets_the_umask_default_mode(tmp_path: Path) -> None:
    src = _loom(tmp_path / "x.loom")
    out = tmp_path / "new.md"
    done = subprocess.run(
        ["sh", "-c", 'umask 027 && exec "$0" -m loom.cli export "$1" --format markdown -o "$2"',
         sys.executable, str(src), str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


def test_export_through_a_symlink_replaces_the_file_it_points_at(tmp_path: Path) -> None:
    src = _loom(tmp_path / "x.loom")
    real = tmp_path / "real.md"
    real.write_text("old\n")
    link = tmp_path / "link.md"
    link.symlink_to(real)
    assert run_loom("export", src, "--format", "markdown", "-o", link).returncode == 0
    assert link.is_symlink()
    assert real.read_text() == _markdown(src)


# --- outputs that are not regular files: written in place -----------------------------------------


def test_export_into_a_fifo_writes_through_it(tmp_path: Path) -> None:
    src = _loom(tmp_path / "x.loom")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    try:
        done = run_loom("export", src, "--format", "markdown", "-o", fifo, timeout=60)
        assert done.returncode == 0, done.stderr
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced by a file"
        out, _ = reader.communicate(timeout=30)
        assert out.decode() == _markdown(src)
    finally:
        reader.kill()
        reader.wait()
    assert _leftovers(tmp_path) == []


def test_export_to_a_device_writes_to_it_and_leaves_the_node(tmp_path: Path) -> None:
    src = _loom(tmp_path / "x.loom")
    null = _device(tmp_path, "null", 3)
    done = run_loom("export", src, "--format", "markdown", "-o", null)
    assert done.returncode == 0, done.stderr
    assert stat.S_ISCHR(os.lstat(null).st_mode), "the device node was replaced by a file"
    assert _leftovers(null.parent) == []


def test_export_to_a_symlink_to_standard_output_writes_to_standard_output(
    tmp_path: Path,
) -> None:
    src = _loom(tmp_path / "x.loom")
    out = tmp_path / "stdout"
    out.symlink_to("/proc/self/fd/1")  # what /dev/stdout is
    done = run_loom("export", src, "--format", "markdown", "-o", out)
    assert done.returncode == 0, done.stderr
    assert done.stdout == _markdown(src)
    assert out.is_symlink()


def test_export_to_a_full_disk_fails_in_one_line(tmp_path: Path) -> None:
    src = _loom(tmp_path / "x.loom")
    full = _device(tmp_path, "full", 7)
    done = run_loom("export", src, "--format", "markdown", "-o", full)
    assert_one_line_error(done, str(full), "No space left")
    assert stat.S_ISCHR(os.lstat(full).st_mode)


def test_export_to_a_full_standard_output_fails_in_one_line(tmp_path: Path) -> None:
    src = _loom(tmp_path / "x.loom")
    full = _device(tmp_path, "full", 7)
    with open(full, "w") as sink:
        done = subprocess.run(
            [sys.executable, "-m", "loom.cli", "export", str(src), "--format", "markdown"],
            stdout=sink, stderr=subprocess.PIPE, text=True, check=False,
        )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert "No space left" in done.stderr


# --- folders ------------------------------------------------------------------------------------


def test_export_into_a_missing_folder_fails_in_one_line(tmp_path: Path) -> None:
    src = _loom(tmp_path / "x.loom")
    done = run_loom("export", src, "--format", "markdown", "-o", tmp_path / "nope" / "out.md")
    assert_one_line_error(done, "nope")
    assert not (tmp_path / "nope").exists()


def test_export_onto_a_folder_fails_in_one_line(tmp_path: Path) -> None:
    src = _loom(tmp_path / "x.loom")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    done = run_loom("export", src, "--format", "markdown", "-o", folder)
    assert_one_line_error(done, "folder", "directory")
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]
    assert _leftovers(tmp_path) == []


def test_export_into_an_unwritable_folder_fails_in_one_line(shared_dir: Path) -> None:
    work = shared_dir / "work"
    work.mkdir(mode=0o777)
    work.chmod(0o777)
    src = _loom(work / "x.loom")
    src.chmod(0o644)
    locked = shared_dir / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    done = run_loom(
        "export", src, "--format", "markdown", "-o", locked / "out.md", preexec=as_unprivileged()
    )
    assert_one_line_error(done, "out.md", "ermission denied")
    assert list(locked.iterdir()) == []
