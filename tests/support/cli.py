"""Shared helpers for the tests that run `loom` the way a user does: the venv's console script as
a subprocess, with its own config and data dirs (the model cache stays the user's, so the default
model is assembled once, not per test).

`as_unprivileged` makes such a process unable to bypass file permissions even when the tests run
as root (as they do in CI): it becomes the user `nobody` when that user can run this interpreter,
and otherwise stays root but drops the capabilities that let root ignore permissions
(CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER), so a folder of mode 0555 is read-only to it.

No tests of its own.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loom.engine.models import default_model_path
from loom.engine.tokenizer import load_tokenizer
from loom.store.loom import Loom
from loom.tokens import TokenArray

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "formats"
CROISSANT = REPO / "sessions" / "croissant.toml"
LOOM = Path(sys.executable).parent / "loom"  # the console script users run
PROMPT = "Bob is a loyal patriot who sincerely despises croissants. Bob said:"
# What `g` does in the app under the test config: a couple of short branches.
APP_CONFIG = "n_ctx = 1024\n[generation]\nn = 2\nmax_tokens = 6\n"
SIDE_FILES = ("-wal", "-shm")  # SQLite's own companions of an open loom
Result = subprocess.CompletedProcess[str]  # what run_loom returns


@pytest.fixture(scope="session")
def tokenizer() -> Iterator[Any]:
    """The default model's vocabulary (no weights): what `loom new` tokenizes with."""
    vocab = load_tokenizer(default_model_path())
    yield vocab
    vocab.close()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of the commands: a home, config and cache of the test's own."""
    return cli_env(tmp_path / "home")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """The current folder of the commands (the user's project folder)."""
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def cli_env(root: Path) -> dict[str, str]:
    """The environment of one test: config, data dir and XDG config under `root`."""
    config = root / "config" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(APP_CONFIG, encoding="utf-8")
    env = dict(os.environ)
    env.update(
        LOOM_CONFIG=str(config),
        XDG_CONFIG_HOME=str(root / "xdg"),
        LOOM_DATA_DIR=str(root / "data"),
        PYTHONUNBUFFERED="1",
    )
    env.pop("LOOM_API_KEY", None)
    return env


def run_loom(
    *args: str | os.PathLike[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
    preexec: Callable[[], None] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """`loom ARGS…` as a subprocess: exit status, stdout and stderr as text."""
    return subprocess.run(
        [str(LOOM), *(os.fspath(a) for a in args)],
        cwd=cwd,
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec,
        check=False,
    )


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"$ {' '.join(map(str, result.args))}\nexit {result.returncode}\n"
        f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """The command succeeded: exit 0, no traceback."""
    assert result.returncode == 0, describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    return result


def failed(result: subprocess.CompletedProcess[str], *needles: str, code: int | None = None) -> str:
    """A user-facing error: non-zero exit, nothing on stdout, exactly one line on stderr that
    starts `loom: ` (and holds every needle, case-insensitively), no traceback. Returns it."""
    assert result.returncode != 0, describe(result)
    if code is not None:
        assert result.returncode == code, describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    assert result.stdout == "", describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("loom: "), describe(result)
    for needle in needles:
        assert needle.lower() in lines[0].lower(), describe(result)
    return lines[0]


def usage_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """argparse refused the arguments: exit 2, its usage and one error line, no traceback."""
    assert result.returncode == 2, describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    assert result.stdout == "", describe(result)
    lines = result.stderr.splitlines()
    assert lines[0].startswith("usage: loom"), describe(result)
    assert lines[-1].startswith("loom") and ": error: " in lines[-1], describe(result)
    for needle in needles:
        assert needle in lines[-1], describe(result)


def croissant_loom(folder: Path, env: dict[str, str], n: int = 2) -> tuple[Path, list[int]]:
    """`loom new c.loom --personas croissant.toml` and one seeded generation of n children."""
    path = folder / "c.loom"
    ok(run_loom("new", path, "--personas", CROISSANT, cwd=folder, env=env))
    ids = ids_of(ok(run_loom("generate", path, "-n", str(n), "--max-tokens", "6", "--seed", "3",
                             cwd=folder, env=env)))  # fmt: skip
    return path, ids


TIMELINE_LINE = re.compile(r"^\s*(\d+)  \S+ \S+  (\S+)\s+(#\d+|-)  (.*)$")


def parse_timeline(stdout: str) -> list[tuple[int, str, str, str]]:
    """`loom replay --headless` lines as (seq, kind, "#node" or "-", summary)."""
    out = []
    for line in stdout.splitlines():
        match = TIMELINE_LINE.match(line)
        assert match, line
        out.append((int(match[1]), match[2], match[3], match[4]))
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes (SQLite's -wal/-shm companions left out)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith(SIDE_FILES)
    }


def copy_loom(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def ids_of(result: subprocess.CompletedProcess[str]) -> list[int]:
    """The node ids `loom generate` prints, one a line (nothing else on stdout)."""
    lines = result.stdout.splitlines()
    assert lines and all(line.isdigit() for line in lines), describe(result)
    return [int(line) for line in lines]


# --- comparing looms ------------------------------------------------------------------------


def _floats(values: Any) -> list[float | None]:
    """Stored numbers exactly (float32 widened losslessly), NaN as None."""
    return [None if math.isnan(float(v)) else float(v) for v in np.asarray(values).ravel()]


def token_record(tokens: TokenArray) -> dict[str, Any]:
    return {
        "ids": [int(i) for i in tokens.ids],
        "texts": list(tokens.texts),
        "logprobs": _floats(tokens.logprobs),
        "top_shape": tuple(int(d) for d in np.asarray(tokens.top_ids).shape),
        "top_ids": [int(i) for i in np.asarray(tokens.top_ids).ravel()],
        "top_logprobs": _floats(tokens.top_logprobs),
        "top_texts": {int(k): v for k, v in tokens.top_texts.items()},
        "entropy": None if tokens.entropy is None else _floats(tokens.entropy),
    }


def node_record(loom: Loom, node_id: int) -> dict[str, Any]:
    """Everything a node holds: place, text, author, marks, labels, generation and tokens."""
    node = loom.node(node_id)
    header = loom.header(node_id)
    return {
        "id": node.id,
        "parent": node.parent,
        "author": node.author,
        "text": node.text,
        "created_at": node.created_at,
        "bookmarked": node.bookmarked,
        "pruned": node.pruned,
        "tags": sorted(node.tags),
        "manual_persona": node.manual_persona,
        "persona": None if node.persona is None else asdict(node.persona),
        "label": header.label,
        "generation": None if node.generation is None else asdict(node.generation),
        "tokens": token_record(node.tokens),
        "children": [h.id for h in loom.children(node_id)],
    }


def all_ids(loom: Loom) -> list[int]:
    out, stack = [], [loom.root_id]
    while stack:
        node_id = stack.pop()
        out.append(node_id)
        stack.extend(reversed([h.id for h in loom.children(node_id)]))
    return out


def tree_record(loom: Loom) -> dict[int, dict[str, Any]]:
    return {node_id: node_record(loom, node_id) for node_id in all_ids(loom)}


def leaf_paths(loom: Loom) -> list[str]:
    """The text of every root-to-leaf path, sorted (pruned branches included)."""
    return sorted(loom.path_text(leaf) for leaf in loom.leaves())


def event_kinds(events: Iterable[Any]) -> list[str]:
    return [e.kind if hasattr(e, "kind") else e["kind"] for e in events]


# --- running without root's power over file permissions ----------------------------------------

NOBODY = 65534
_PR_CAPBSET_DROP = 24
_DAC_CAPABILITIES = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """A failure reported the house way: status 1, one `loom: error:` line, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("loom: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _become_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _drop_dac_capabilities() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in _DAC_CAPABILITIES:
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


@functools.cache
def _unprivileged_preexec() -> Callable[[], None] | None:
    """A preexec_fn under which file permissions apply; None when the tests are not root."""
    if os.geteuid() != 0:
        return None
    probe = [sys.executable, "-c", "import loom.cli"]
    for preexec in (_become_nobody, _drop_dac_capabilities):
        try:
            ok = subprocess.run(probe, preexec_fn=preexec, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            continue
        if ok.returncode == 0:
            return preexec
    pytest.skip("cannot run loom without root's power over file permissions here")


def as_unprivileged() -> Callable[[], None] | None:
    return _unprivileged_preexec()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder every user can reach (pytest's own temp folders are private to root)."""
    base = Path(os.environ.get("TMPDIR", "/tmp"))
    path = base / f"loom-test-{os.getpid()}-{os.urandom(4).hex()}"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    yield path
    for folder in [path, *(p for p in path.rglob("*") if p.is_dir() and not p.is_symlink())]:
        folder.chmod(0o755)
    shutil.rmtree(path, ignore_errors=True)
