"""`loom export` and `loom import` of any size: silent on success unless on a terminal (then a
progress bar on stderr), subtree and path exports, the loom-json version flag."""

from __future__ import annotations

import json
from pathlib import Path

from support.cli import LOOM, cli_env, failed, ok, run_loom
from support.store import model_tokens
from support.terminal import Terminal

from loom.store.loom import Loom, NewNode


def _loom(tmp_path: Path) -> Path:
    path = tmp_path / "small.loom"
    with Loom.create(path, prompt="Bob:", prompt_tokens=model_tokens("Bob:")) as lm:
        a, _b = lm.add_children(
            lm.root_id,
            [NewNode(" says hi", tokens=model_tokens(" says hi")), NewNode(" waves")],
        )
        lm.add_child(a, " and leaves", author="model", tokens=model_tokens(" and leaves"))
        lm.set_current(a)
    return path


def test_export_and_import_write_nothing_on_stderr_off_a_terminal(tmp_path: Path) -> None:
    path = _loom(tmp_path)
    done = ok(run_loom("export", path, "--format", "loom-json", "-o", "-"))
    assert done.stderr == "" and json.loads(done.stdout)["version"] == 2
    out = tmp_path / "small.json"
    done = ok(run_loom("export", path, "--format", "loom-json", "-o", out))
    assert done.stderr == f"wrote {out}\n"
    done = ok(run_loom("import", out, "-o", tmp_path / "again.loom"))
    assert done.stderr == "" and "imported 4 nodes" in done.stdout


def test_progress_is_drawn_on_a_terminal(tmp_path: Path) -> None:
    path = _loom(tmp_path)
    out = tmp_path / "small.json"
    with Terminal(
        [LOOM, "export", path, "--format", "loom-json", "-o", out],
        cwd=tmp_path,
        env=cli_env(tmp_path / "home"),
    ) as term:
        term.wait_for_text("exporting [", "100%")
        assert term.wait_exit() == 0
    with Terminal(
        [LOOM, "import", out, "-o", tmp_path / "again.loom"],
        cwd=tmp_path,
        env=cli_env(tmp_path / "home"),
    ) as term:
        term.wait_for_text("importing [", "100%", "imported 4 nodes")
        assert term.wait_exit() == 0


def test_subtree_path_and_version_flags(tmp_path: Path) -> None:
    path = _loom(tmp_path)
    sub = json.loads(ok(run_loom("export", path, "--format", "loom-json", "--node", "2")).stdout)
    assert sub["root"] == 2 and [n["id"] for n in sub["nodes"]] == [2, 4]
    along = ok(run_loom("export", path, "--format", "loom-json", "--path")).stdout
    assert [n["id"] for n in json.loads(along)["nodes"]] == [1, 2]  # to the last visited node
    along = ok(run_loom("export", path, "--format", "loom-json", "--path", "--node", "4")).stdout
    assert [n["id"] for n in json.loads(along)["nodes"]] == [1, 2, 4]
    v1 = json.loads(
        ok(run_loom("export", path, "--format", "loom-json", "--format-version", "1")).stdout
    )
    assert v1["version"] == 1 and isinstance(v1["nodes"][1]["tokens"], list)
    failed(run_loom("export", path, "--format", "dot", "--format-version", "1"), "loom-json only")
    failed(run_loom("export", path, "--format", "loom-json", "--node", "99"), "99")
    prose = ok(run_loom("export", path, "--format", "markdown", "--node", "4")).stdout
    assert "says hi" in prose and "and leaves" in prose and "waves" not in prose
