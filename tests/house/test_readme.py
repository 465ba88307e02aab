"""The README is the newcomer's contract: its two set-up commands are the ones CI runs (its
command table is checked against the parser in test_cli_commands)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
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
