"""Bad input to the `loom` command is one `loom: error:` line and a non-zero status, never a
traceback, and leaves nothing half-written: unreadable sources, out-of-range numbers in flags and
in loom-json files, deep nesting, and a reader that closes the pipe early.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.cli import as_unprivileged, assert_one_line_error, run_loom, shared_dir

from loom.store.loom import Loom

__all__ = ["shared_dir"]

HUGE = "99999999999999999999"


def _loom(path: Path, children: int = 2) -> Path:
    with Loom.create(path, title="t", prompt="Once") as lm:
        for i in range(children):
            lm.add_child(lm.root_id, f" upon a time {i}")
    return path


# --- import sources -------------------------------------------------------------------------------


def test_import_of_a_folder_fails_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    out = tmp_path / "out.loom"
    assert_one_line_error(run_loom("import", folder, "-o", out), "folder", "directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_import_of_an_unreadable_file_fails_in_one_line(shared_dir: Path) -> None:
    work = shared_dir / "work"
    work.mkdir()
    work.chmod(0o777)
    src = work / "secret.json"
    src.write_text('{"format": "loom-json", "version": 1, "root": 1, "nodes": []}')
    src.chmod(0o000)
    done = run_loom("import", src, "-o", work / "out.loom", preexec=as_unprivileged())
    assert_one_line_error(done, "secret.json", "ermission denied")
    assert sorted(p.name for p in work.iterdir()) == ["secret.json"]


# --- numbers in flags -----------------------------------------------------------------------------


@pytest.mark.parametrize("node", [HUGE, "-" + HUGE, str(2**63), str(-(2**63) - 1)])
@pytest.mark.parametrize(
    "command",
    [
        ("show",),
        ("export", "--format", "markdown"),
        ("regenerate",),
        ("generate", "--remote", "http://127.0.0.1:9"),
    ],
    ids=lambda c: c[0],
)
def test_a_node_id_out_of_range_is_no_such_node(
    tmp_path: Path, command: tuple[str, ...], node: str
) -> None:
    path = _loom(tmp_path / "x.loom")
    done = run_loom(command[0], path, *command[1:], "--node", node)
    assert_one_line_error(done, "no node")


def test_a_node_id_out_of_range_through_the_api_is_unknown(tmp_path: Path) -> None:
    from loom.store.errors import UnknownNodeError

    with Loom.open(_loom(tmp_path / "x.loom")) as lm:
        for node in (2**63, -(2**63) - 1, 10**30):
            assert node not in lm
            for call in (lm.header, lm.node, lm.path_text, lm.children, lm.set_current):
                with pytest.raises(UnknownNodeError):
                    call(node)
            with pytest.raises(UnknownNodeError):
                lm.add_child(node, " x")


def test_a_huge_search_limit_means_no_limit(tmp_path: Path) -> None:
    path = _loom(tmp_path / "x.loom", children=3)
    done = run_loom("search", path, "upon", "--limit", HUGE)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3


@pytest.mark.parametrize("limit", ["0", "-1", "-" + HUGE])
def test_a_search_limit_below_one_is_refused(tmp_path: Path, limit: str) -> None:
    path = _loom(tmp_path / "x.loom")
    assert_one_line_error(run_loom("search", path, "upon", "--limit", limit), "--limit")


# --- loom-json with numbers and nesting out of range ----------------------------------------------


def _base() -> dict[str, Any]:
    token = {"id": 5, "text": " child", "logprob": -0.5, "top": [{"id": 5, "logprob": -0.5}]}
    return {
        "format": "loom-json",
        "version": 1,
        "title": "t",
        "root": 1,
        "current": 2,
        "personas": [{"name": "luigi", "description": "kind", "color": "green", "prior": 0.5}],
        "nodes": [
            {"id": 1, "parent": None, "author": "human", "text": "Root", "created_at": 1.0},
            {
                "id": 2,
                "parent": 1,
                "author": "model",
                "text": " child",
                "created_at": 2.0,
                "tokens": [token],
                "generation": {"model": "m", "temperature": 0.9, "seed": 7, "max_tokens": 8},
                "persona": {"label": "luigi", "source": "model", "posterior": {"luigi": 0.9}},
            },
        ],
    }


def _set(path: str, value: Any, *more: tuple[str, Any]) -> Any:
    """A change to a document: `value` at the dotted `path` (and each (path, value) in `more`)."""

    def change(doc: dict[str, Any]) -> None:
        for where, what in ((path, value), *more):
            *parents, last = where.split(".")
            target: Any = doc
            for key in parents:
                target = target[int(key)] if key.isdigit() else target[key]
            target[int(last) if last.isdigit() else last] = what

    return change


DEEP = "<100k levels of nesting>"  # json.dumps cannot write that deep: _write puts it in


def _deep_text(levels: int) -> str:
    return '{"x": ' * levels + "{}" + "}" * levels


BAD_JSON = {
    "created_at 1e400": (_set("nodes.1.created_at", "1e400"), "created_at"),
    "logprob 1e400": (_set("nodes.1.tokens.0.logprob", "1e400"), "logprob"),
    "top logprob -1e400": (_set("nodes.1.tokens.0.top.0.logprob", "-1e400"), "logprob"),
    "temperature 1e400": (_set("nodes.1.generation.temperature", "1e400"), "temperature"),
    "posterior 1e400": (_set("nodes.1.persona.posterior.luigi", "1e400"), "posterior"),
    "prior 1e400": (_set("personas.0.prior", "1e400"), "prior"),
    "node id 2**63": (_set("nodes.1.id", 2**63, ("current", 2**63)), "node id"),
    "node id -2**63-1": (_set("nodes.1.id", -(2**63) - 1, ("current", -(2**63) - 1)), "node id"),
    "root id 2**64": (
        _set("root", 2**64, ("nodes.0.id", 2**64), ("nodes.1.parent", 2**64)),
        "too large",
    ),
    "node id 2**63-1": (_set("nodes.1.id", 2**63 - 1, ("current", 2**63 - 1)), "too large"),
    "token id 2**31": (_set("nodes.1.tokens.0.id", 2**31), "tokens[0].id"),
    "top id -2**40": (_set("nodes.1.tokens.0.top.0.id", -(2**40)), "top[0].id"),
    "posterior a list": (_set("nodes.1.persona.posterior", [0.9]), "posterior"),
    "posterior a string": (_set("nodes.1.persona.posterior", "luigi"), "posterior"),
    "posterior value a string": (_set("nodes.1.persona.posterior.luigi", "high"), "posterior"),
    "path posterior a list": (_set("nodes.1.persona.path_posterior", [1]), "path_posterior"),
    "node meta 100k deep": (_set("nodes.1.meta", DEEP), "meta"),
    "document meta 100k deep": (_set("meta", DEEP), "meta"),
}


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    text = json.dumps(doc)
    for literal in ("1e400", "-1e400"):  # json.dumps cannot write these numbers itself
        text = text.replace(f'"{literal}"', literal)
    text = text.replace(json.dumps(DEEP), _deep_text(100_000))
    path = tmp_path / "in.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", BAD_JSON.values(), ids=BAD_JSON.keys())
def test_loom_json_out_of_range_is_refused_in_one_line(
    tmp_path: Path, case: tuple[Any, str]
) -> None:
    change, where = case
    doc = copy.deepcopy(_base())
    change(doc)
    src = _write(tmp_path, doc)
    out = tmp_path / "out.loom"
    assert_one_line_error(run_loom("import", src, "-o", out), where)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.json"]


def test_the_base_document_of_those_cases_imports(tmp_path: Path) -> None:
    src = _write(tmp_path, _base())
    done = run_loom("import", src, "-o", tmp_path / "out.loom")
    assert done.returncode == 0, done.stderr


# --- a reader that leaves early -------------------------------------------------------------------


def test_replay_into_a_pipe_closed_early_stops_quietly(tmp_path: Path) -> None:
    path = _loom(tmp_path / "x.loom", children=0)
    with Loom.open(path) as lm, lm.batch():  # enough events to overflow the pipe's buffer
        for i in range(3000):
            lm.add_child(lm.root_id, f" child {i} " + "x" * 40)
    script = 'set -o pipefail; "$0" -m loom.cli replay --headless "$1" | head -1'
    done = subprocess.run(
        ["bash", "-c", script, sys.executable, str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.stdout.splitlines()[0].split()[3] == "create", done.stdout
    assert len(done.stdout.splitlines()) == 1
    assert done.stderr == "", done.stderr  # no traceback, no "Exception ignored"
    assert done.returncode in (0, 141)
