"""`loom memory`: hidden context set, shown and cleared as a user does it, read by `loom generate`,
honoured by `loom regenerate`, carried by export and import; every bad input one line, nothing
changed on disk. Subprocesses of the console script on the real default model."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.cli import env, failed, ids_of, ok, run_loom, snapshot, work

from loom.store.loom import Loom
from loom.store.model import Memory

__all__ = ["env", "work"]  # fixtures

pytestmark = pytest.mark.model

PROMPT = "Once upon a time, there was a"
DRAGON = "This is a story about a dragon named Smaug. The dragon Smaug. Dragon dragon dragon.\n"


def new_loom(work: Path, env: dict[str, str]) -> Path:
    path = work / "m.loom"
    ok(run_loom("new", path, "--prompt", PROMPT, cwd=work, env=env))
    return path


def test_memory_is_set_shown_read_by_generate_and_regenerated_identically(
    env: dict[str, str], work: Path
) -> None:
    path = new_loom(work, env)
    shown = ok(run_loom("memory", path, cwd=work, env=env)).stdout
    assert shown.splitlines()[0] == "the loom: no memory"
    done = ok(run_loom("memory", path, "--text", DRAGON, cwd=work, env=env)).stdout
    assert done.startswith("memory of the loom set: ") and "before the path" in done
    shown = ok(run_loom("memory", path, cwd=work, env=env)).stdout
    assert shown.splitlines()[:2] == ["the loom: before the path", DRAGON.rstrip("\n")]

    greedy = ("--temperature", "0", "--max-tokens", "10", "-n", "1", "--seed", "2")
    [dragon] = ids_of(ok(run_loom("generate", path, *greedy, cwd=work, env=env)))
    note = work / "note.txt"
    note.write_text(" [the tone is grim] ", encoding="utf-8")
    set_note = run_loom("memory", path, "--node", str(dragon), "--file", note, "--depth", "3",
                        cwd=work, env=env)  # fmt: skip
    assert "author's note 3 tokens from the end" in ok(set_note).stdout
    [child] = ids_of(ok(run_loom("generate", path, "--node", str(dragon), *greedy,
                                 cwd=work, env=env)))  # fmt: skip
    in_effect = ok(run_loom("memory", path, "--node", str(child), cwd=work, env=env)).stdout
    assert (
        f"in effect after node {child}: loom (before) + inherited from #{dragon} (note at 3)"
        in (in_effect)
    )
    listed = ok(run_loom("memory", path, "--list", cwd=work, env=env)).stdout.splitlines()
    assert listed == [
        "loom\tbefore the path\t" + DRAGON.replace("\n", "↵"),  # one line a memory
        f"{dragon}\tauthor's note 3 tokens from the end\t [the tone is grim] ",
    ]
    ok(run_loom("memory", path, "--clear", cwd=work, env=env))
    [plain] = ids_of(ok(run_loom("generate", path, "--node", "1", *greedy, cwd=work, env=env)))

    with Loom.open(path, readonly=True) as lm:
        assert lm.memory(None) is None
        assert lm.memory(dragon) == Memory(" [the tone is grim] ", 3, node=dragon)
        assert lm.node(dragon).generation.memory == [Memory(DRAGON)]
        assert lm.node(child).generation.memory == [
            Memory(DRAGON),
            Memory(" [the tone is grim] ", 3, node=dragon),
        ]
        assert lm.node(plain).generation.memory == []
        assert "dragon" in lm.node(dragon).text.lower()
        assert "dragon" not in lm.node(plain).text.lower()
        shown_text = ok(run_loom("show", path, "--node", str(dragon), cwd=work, env=env)).stdout
        assert shown_text == PROMPT + lm.node(dragon).text  # the tree never shows it

    # The loom memory is gone now; regenerate reads what the record says the model read.
    for node in (dragon, child):
        report = ok(run_loom("regenerate", path, "--node", str(node), cwd=work, env=env)).stdout
        assert "IDENTICAL" in report.splitlines()[0], report
        assert "hidden context" in report


def test_memory_travels_through_export_and_import(env: dict[str, str], work: Path) -> None:
    path = new_loom(work, env)
    ok(run_loom("memory", path, "--text", "Loom memory.\n", cwd=work, env=env))
    ok(run_loom("memory", path, "--node", "1", "--text", "[note]", "--depth", "2",
                cwd=work, env=env))  # fmt: skip
    for fmt, version in (("loom-json", "1"), ("loom-json", "2"), ("openloom", None)):
        out = work / f"m-{fmt}-{version}.json"
        extra = ("--format-version", version) if version else ()
        ok(run_loom("export", path, "--format", fmt, *extra, "-o", out, cwd=work, env=env))
        again = work / f"again-{fmt}-{version}.loom"
        ok(run_loom("import", out, "-o", again, cwd=work, env=env))
        shown = ok(run_loom("memory", again, "--node", "1", cwd=work, env=env)).stdout
        assert shown.splitlines()[0] == "node 1: author's note 2 tokens from the end", fmt
        assert "in effect after node 1: loom (before) + node #1 (note at 2)" in shown, fmt


def test_bad_memory_input_is_one_line_and_changes_nothing(env: dict[str, str], work: Path) -> None:
    path = new_loom(work, env)
    ok(run_loom("memory", path, "--text", "kept", cwd=work, env=env))
    before = snapshot(work)
    huge = work / "huge.txt"
    huge.write_text("word " * 1100, encoding="utf-8")  # the test config's n_ctx is 1024
    line = failed(run_loom("memory", path, "--file", huge, cwd=work, env=env), "memory")
    assert "1101 tokens" in line and "too many" in line
    failed(run_loom("memory", path, "--node", "99", "--text", "x", cwd=work, env=env), "no node 99")
    failed(run_loom("memory", path, "--node", "one", "--text", "x", cwd=work, env=env), "node ids")
    failed(run_loom("memory", path, "--file", work / "missing.txt", cwd=work, env=env),
           "cannot read memory file")  # fmt: skip
    failed(run_loom("memory", path, "--text", "x", "--clear", cwd=work, env=env), "one of")
    failed(run_loom("memory", path, "--list", "--node", "1", cwd=work, env=env), "--list")
    failed(run_loom("memory", path, "--depth", "3", cwd=work, env=env), "--depth")
    failed(run_loom("memory", path, "--text", "x", "--depth", "-1", cwd=work, env=env), "--depth")
    failed(run_loom("memory", path, "--text", "", cwd=work, env=env), "empty")
    failed(run_loom("memory", work / "nope.loom", "--text", "x", cwd=work, env=env), "no such")
    after = snapshot(work)
    after.pop("huge.txt")
    assert after == before
    with Loom.open(path, readonly=True) as lm:
        assert lm.memory(None) == Memory("kept")
