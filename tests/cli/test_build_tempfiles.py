"""A loom is built under a temporary name holding the builder's pid (`db.building`); a build that
was killed leaves that file behind. The next build in the folder removes the leftovers of dead
processes, and never a file a live build is writing.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.cli import run_loom


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _temp(folder: Path, name: str, pid: int, suffix: str = "") -> Path:
    path = folder / f".{name}.{pid}-0123abcd.tmp{suffix}"
    path.write_bytes(b"half a loom" * 1000)
    return path


def test_the_next_build_removes_temp_files_of_dead_processes(tmp_path: Path) -> None:
    dead = _dead_pid()
    leftovers = [
        _temp(tmp_path, "big.loom", dead),
        _temp(tmp_path, "big.loom", dead, "-journal"),
        _temp(tmp_path, "other.loom", dead, "-wal"),
    ]
    live = [
        _temp(tmp_path, "mine.loom", os.getpid()),  # a live process: this one
        _temp(tmp_path, "init.loom", 1),  # always alive (and maybe not ours to signal)
    ]
    unrelated = [tmp_path / ".notes.tmp", tmp_path / f".x.{dead}.tmp", tmp_path / "keep.loom"]
    for path in unrelated:
        path.write_text("mine")
    done = run_loom("new", tmp_path / "new.loom", "--no-tokenize", "--prompt", "hi")
    assert done.returncode == 0, done.stderr
    assert [p for p in leftovers if p.exists()] == []
    assert all(p.exists() for p in live + unrelated)
    assert (tmp_path / "new.loom").exists()


def test_import_cleans_up_too_and_only_in_its_own_folder(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dead = _dead_pid()
    here = _temp(tmp_path, "a.loom", dead)
    there = _temp(elsewhere, "a.loom", dead)
    src = tmp_path / "in.json"
    src.write_text(json.dumps({"format": "loom-json", "version": 1, "root": 1, "nodes": [
        {"id": 1, "parent": None, "author": "human", "text": "hi", "created_at": 0}]}))  # fmt: skip
    done = run_loom("import", src, "-o", tmp_path / "b.loom")
    assert done.returncode == 0, done.stderr
    assert not here.exists() and there.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="builds flock only on Linux")
def test_a_temp_file_under_a_live_builds_lock_is_kept(tmp_path: Path) -> None:
    # A build in another PID namespace (a container sharing the folder) has a pid that looks
    # dead from here; the lock a build holds on its temp file keeps it safe all the same.
    held = _temp(tmp_path, "theirs.loom", _dead_pid())
    fd = os.open(held, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert run_loom("new", tmp_path / "one.loom", "--no-tokenize").returncode == 0
        assert held.exists()
    finally:
        os.close(fd)
    assert run_loom("new", tmp_path / "two.loom", "--no-tokenize").returncode == 0
    assert not held.exists()


def test_an_import_killed_mid_way_leaves_nothing_after_the_next_build(tmp_path: Path) -> None:
    nodes = [{"id": 1, "parent": None, "author": "human", "text": "root", "created_at": 0}]
    nodes += [
        {"id": i, "parent": i - 1, "author": "model", "text": f" n{i}", "created_at": 0}
        for i in range(2, 60_000)
    ]
    src = tmp_path / "big.json"
    src.write_text(json.dumps({"format": "loom-json", "version": 1, "root": 1, "nodes": nodes}))
    out = tmp_path / "big.loom"
    importer = subprocess.Popen(
        [sys.executable, "-m", "loom.cli", "import", str(src), "-o", str(out)]
    )
    deadline = time.monotonic() + 120
    temps: list[Path] = []
    while not temps and importer.poll() is None and time.monotonic() < deadline:
        temps = list(tmp_path.glob(".big.loom.*.tmp"))
        time.sleep(0.005)
    importer.send_signal(signal.SIGKILL)
    importer.wait()
    assert temps, "the import finished before it could be killed"
    assert any(p.exists() for p in temps) and not out.exists()
    assert run_loom("new", tmp_path / "next.loom", "--no-tokenize").returncode == 0
    assert list(tmp_path.glob(".big.loom.*")) == []
