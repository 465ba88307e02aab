"""Read-only commands work on a loom in a folder the user cannot write.

SQLite opens a WAL-mode file by creating `-wal`/`-shm` sidecars beside it; where it cannot, the
store reads the file immutable, unless a `-wal` still holds committed changes that the main file
lacks (then reading it immutable would show an old state) and SQLite cannot read them: that is
refused in one line. The `loom` runs as a user without root's power over permissions (see
cli_support).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import Result, as_unprivileged, assert_one_line_error, run_loom, shared_dir

from loom.store.loom import Loom

__all__ = ["shared_dir"]

READ_COMMANDS = [
    ("stats", "--json"),
    ("show",),
    ("search", "woven"),
    ("export", "--format", "loom-json"),
    ("replay", "--headless"),
]


def _loom(folder: Path) -> Path:
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    path = folder / "x.loom"
    with Loom.create(path, title="t", prompt="Once") as lm:
        a = lm.add_child(lm.root_id, " a tale was woven")
        lm.set_current(a)
    path.chmod(0o644)
    return path


def _lock(folder: Path) -> list[str]:
    for p in folder.iterdir():
        p.chmod(0o644)
    folder.chmod(0o555)
    return sorted(p.name for p in folder.iterdir())


def _run(command: tuple[str, ...], path: Path) -> Result:
    name, *rest = command
    return run_loom(name, path, *rest, preexec=as_unprivileged())


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: c[0])
def test_read_only_commands_work_in_an_unwritable_folder(
    shared_dir: Path, command: tuple[str, ...]
) -> None:
    path = _loom(shared_dir / "ro")
    files = _lock(path.parent)
    assert files == ["x.loom"]  # closed cleanly: no sidecars
    done = _run(command, path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" or command[0] == "export"
    out = done.stdout
    if command[0] == "show":
        assert out == "Once a tale was woven"
    elif command[0] == "stats":
        assert '"nodes": 2' in out
    elif command[0] == "search":
        assert out.startswith("2\t")
    elif command[0] == "export":
        assert json.loads(out)["format"] == "loom-json" and "a tale was woven" in out
    else:
        assert len(out.splitlines()) == 3
    assert sorted(p.name for p in path.parent.iterdir()) == files


def test_changes_still_in_the_write_ahead_log_are_read(shared_dir: Path) -> None:
    path = _loom(shared_dir / "live")
    with Loom.open(path) as writer:  # a writer with the loom open: -wal and -shm exist
        writer.add_child(writer.root_id, " and a second one, woven later")
        files = _lock(path.parent)
        assert files == ["x.loom", "x.loom-shm", "x.loom-wal"]
        done = _run(("stats", "--json"), path)
        assert done.returncode == 0, done.stderr
        assert '"nodes": 3' in done.stdout
        done = _run(("search", "later"), path)
        assert done.returncode == 0, done.stderr
        path.parent.chmod(0o777)


def _crash_after_a_change(path: Path) -> None:
    """A writer killed before it could fold its -wal back into the file."""
    script = (
        "import os, sys\n"
        "from loom.store.loom import Loom\n"
        "lm = Loom.open(sys.argv[1])\n"
        "lm.add_child(lm.root_id, ' written just before the crash')\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True)


def test_a_crashed_writers_log_is_read_when_its_shm_is_there(shared_dir: Path) -> None:
    path = _loom(shared_dir / "crashed")
    _crash_after_a_change(path)
    assert _lock(path.parent) == ["x.loom", "x.loom-shm", "x.loom-wal"]
    done = _run(("stats", "--json"), path)
    assert done.returncode == 0, done.stderr
    assert '"nodes": 3' in done.stdout


def test_a_log_that_cannot_be_read_is_refused_rather_than_ignored(shared_dir: Path) -> None:
    path = _loom(shared_dir / "copied")
    _crash_after_a_change(path)
    Path(f"{path}-shm").unlink()  # as when a loom and its -wal are copied without the -shm
    files = _lock(path.parent)
    before = {name: (path.parent / name).read_bytes() for name in files}
    for command in READ_COMMANDS:
        done = _run(command, path)
        assert_one_line_error(done, "x.loom-wal")
    assert {name: (path.parent / name).read_bytes() for name in files} == before
    path.parent.chmod(0o777)
    with Loom.open(path, readonly=True) as lm:  # where it can be written, nothing was lost
        assert lm.stats()["nodes"] == 3
