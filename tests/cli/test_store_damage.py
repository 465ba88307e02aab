"""Looms damaged behind loom's back (edited with sqlite3) give one-line errors, never a hang.

Each case writes the damage into a real loom file with the sqlite3 module, then runs the `loom`
commands (and the store API, in a subprocess so a regression hangs only that process) with a
timeout, checking the error line and that the file did not grow (a runaway recursive query once
filled the disk).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import Result, assert_one_line_error, run_loom
from support.store import model_tokens

from loom.store.loom import Loom, NewNode

TIMEOUT = 60


def _loom(path: Path) -> Path:
    """Root 1 with the chain 1 > 2 > 3 > 4 and a second child 5; current node 4."""
    with Loom.create(path, title="t", prompt="Root") as lm:
        two = lm.add_child(lm.root_id, " two")
        three = lm.add_child(two, " three")
        four = lm.add_child(three, " four")
        lm.add_child(lm.root_id, " five")
        lm.set_current(four)
    return path


def _damage(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()


def _size(path: Path) -> int:
    """The loom and its log (a read-only open leaves an -shm of fixed size beside them)."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def _run(*args: str | Path) -> Result:
    try:
        return run_loom(*args, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"loom {' '.join(map(str, args))} did not finish in {TIMEOUT} s")


# --- parent cycles --------------------------------------------------------------------------------

CYCLES = {
    "two-node cycle": ["UPDATE nodes SET parent = 3 WHERE id = 2"],
    "self parent": ["UPDATE nodes SET parent = 2 WHERE id = 2"],
    "root under a child": ["UPDATE nodes SET parent = 4 WHERE id = 1"],
}


@pytest.mark.parametrize("damage", CYCLES.values(), ids=CYCLES.keys())
@pytest.mark.parametrize(
    "command",
    [("show",), ("show", "--node", "3"), ("export", "--format", "markdown", "--node", "4")],
    ids=lambda c: " ".join(c),
)
def test_a_parent_cycle_is_refused_in_one_line(
    tmp_path: Path, damage: list[str], command: tuple[str, ...]
) -> None:
    path = _damage_copy(tmp_path, damage)
    size = _size(path)
    done = _run(command[0], path, *command[1:])
    line = assert_one_line_error(done)
    assert "cycle" in line or "has a parent" in line, line
    assert any(f"node {i}" in line for i in (1, 2, 3, 4)), line
    assert _size(path) <= size


def _damage_copy(tmp_path: Path, damage: list[str]) -> Path:
    path = _loom(tmp_path / "x.loom")
    _damage(path, *damage)
    return path


_API_SCRIPT = """
import sys
from loom.store.errors import LoomError
from loom.store.loom import Loom
lm = Loom.open(sys.argv[1])
calls = {
    "ancestors": lambda: lm.ancestors(3),
    "path_nodes": lambda: lm.path_nodes(3),
    "path_text": lambda: lm.path_text(3),
    "path_tokens": lambda: lm.path_tokens(3),
    "move": lambda: lm.move(5, 3),
    "delete_subtree": lambda: lm.delete_subtree(3),
    "split": lambda: lm.split(2, at_char=2),
}
for name, call in calls.items():
    try:
        call()
    except LoomError as exc:
        print(name, "refused:", exc)
    else:
        print(name, "ran")
"""


def test_every_walk_over_parents_in_the_store_stops_at_a_cycle(tmp_path: Path) -> None:
    path = _damage_copy(tmp_path, CYCLES["two-node cycle"])
    size = _size(path)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _API_SCRIPT, str(path)],
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("a store call ran into the cycle and never came back")
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    for name in ("ancestors", "path_nodes", "path_text", "path_tokens", "move", "delete_subtree"):
        assert lines[name].startswith("refused:") and "cycle" in lines[name], (name, lines[name])
    assert lines["split"].startswith(("refused:", "ran"))
    assert _size(path) <= size + 64 * 1024  # at most the split's own event


def test_a_root_with_a_parent_is_refused_when_opened(tmp_path: Path) -> None:
    path = _damage_copy(tmp_path, CYCLES["root under a child"])
    assert_one_line_error(_run("stats", path), "root node 1 has a parent")


# --- damaged values -------------------------------------------------------------------------------

DAMAGE = {
    "root meta a string": ["UPDATE meta SET value = '\"one\"' WHERE key = 'root'"],
    "root meta a float": ["UPDATE meta SET value = '1.5' WHERE key = 'root'"],
    "root meta not JSON": ["UPDATE meta SET value = 'one' WHERE key = 'root'"],
    "current meta a string": ["UPDATE meta SET value = '\"four\"' WHERE key = 'current'"],
    "current meta a list": ["UPDATE meta SET value = '[4]' WHERE key = 'current'"],
    "event payload not JSON": ["UPDATE events SET payload = '{\"parent\": 1, ' WHERE seq = 2"],
    "event payload not an object": ["UPDATE events SET payload = '[1, 2]' WHERE seq = 2"],
    "event payload missing fields": ["UPDATE events SET payload = '{\"parent\": 1}' WHERE seq = 2"],
    "node text a blob": ["UPDATE nodes SET text = CAST(text AS BLOB) WHERE id = 3"],
}

COMMANDS = [
    ("stats",),
    ("show",),
    ("show", "--node", "3"),
    ("search", "three"),
    ("export", "--format", "loom-json"),
    ("export", "--format", "markdown", "--tree"),
    ("replay", "--headless"),
]


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_values_give_one_line_errors_or_work(tmp_path: Path, damage: list[str]) -> None:
    path = _damage_copy(tmp_path, damage)
    for command in COMMANDS:
        done = _run(command[0], path, *command[1:])
        assert "Traceback" not in done.stderr, (command, done.stderr)
        if done.returncode != 0:
            line = assert_one_line_error(done)
            assert "damaged" in line or "cannot replay" in line, (command, line)
        elif command[0] == "search":
            assert done.stdout.startswith("3\t"), done.stdout


def test_a_current_node_of_the_wrong_type_falls_back_to_the_root(tmp_path: Path) -> None:
    path = _damage_copy(tmp_path, DAMAGE["current meta a string"])
    done = _run("show", path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Root"
    with Loom.open(path) as lm:  # and edits that move the cursor still work
        two = lm.add_child(lm.root_id, " again")
        lm.undo()
        assert lm.current == lm.root_id and two not in lm


def test_a_damaged_event_is_named(tmp_path: Path) -> None:
    path = _damage_copy(tmp_path, DAMAGE["event payload not JSON"])
    assert_one_line_error(_run("replay", "--headless", path), "event 2")


def test_a_text_stored_as_a_blob_is_named(tmp_path: Path) -> None:
    path = _damage_copy(tmp_path, DAMAGE["node text a blob"])
    assert_one_line_error(_run("show", path, "--node", "3"), "node 3")
    assert_one_line_error(_run("export", path, "--format", "loom-json"), "node 3")


def test_a_fork_through_a_damaged_event_is_refused_in_one_line(tmp_path: Path) -> None:
    path = _damage_copy(tmp_path, DAMAGE["event payload missing fields"])
    fork = tmp_path / "fork.loom"
    assert_one_line_error(_run("fork", path, "--at", "3", "-o", fork), "event 2")
    assert not fork.exists()
    assert_one_line_error(_run("replay", "--headless", path), "event 2")


# --- damaged token data ---------------------------------------------------------------------------

TOKEN_DAMAGE = {
    "a vocabulary text removed": ["DELETE FROM vocab WHERE id = (SELECT MIN(id) FROM vocab)"],
    "an id past the vocabulary": [
        "UPDATE vocab SET id = id + 1000000 WHERE id = (SELECT MAX(id) FROM vocab)"
    ],
    "packed columns cut short": ["UPDATE tokens SET data = substr(data, 1, 6)"],
    "token texts not JSON": ["UPDATE tokens SET texts = '{\"0\": '"],
}  # fmt: skip


@pytest.mark.parametrize("damage", TOKEN_DAMAGE.values(), ids=TOKEN_DAMAGE.keys())
@pytest.mark.parametrize("fmt", ["loom-json", "openloom", "markdown"])
def test_damaged_token_data_is_one_line_and_no_export_is_written(
    tmp_path: Path, damage: list[str], fmt: str
) -> None:
    """loom-json and Open Loom write stored token columns without rebuilding their texts
    (`StoreExport.nodes(columns=True)`); they check them as the text-building path does."""
    path = tmp_path / "x.loom"
    text = " one two three"
    with Loom.create(path, title="t", prompt="Root") as lm:
        lm.add_children(lm.root_id, [NewNode(text, model_tokens(text, k=3), author="model")])
    _damage(path, *damage)
    out = tmp_path / "out.txt"
    line = assert_one_line_error(_run("export", path, "--format", fmt, "--tree", "-o", out))
    assert "damaged" in line and "token" in line, line
    assert not out.exists()
    assert not list(tmp_path.glob(".out.txt.*"))  # nor its temporary file
