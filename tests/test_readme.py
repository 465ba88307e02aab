"""The README is the newcomer's contract: its two set-up commands are the ones CI runs, and its
command table lists exactly the commands `loom` has."""

from __future__ import annotations

import re
from pathlib import Path

from loom.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _setup_commands() -> list[str]:
    setup = README.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", setup, flags=re.S)


def test_the_readme_has_exactly_two_setup_commands_and_ci_runs_the_second() -> None:
    install, test = _setup_commands()
    assert "pip install ." in install and "loom " in install
    assert "pytest" in test
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test in ci.splitlines()  # the same line, not a paraphrase


def test_the_command_table_lists_every_subcommand() -> None:
    table = README.split("## The `loom` command", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `loom (\w+)", table, flags=re.M)) - {"--prompt"}
    parser = build_parser()
    actions = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    assert len(actions) == 1
    commands = set(actions[0].choices)  # type: ignore[attr-defined]
    assert documented == commands
