"""Helpers for tests that run the `loom` command as a user would (no tests here).

`run_loom` runs `python -m loom.cli` in a subprocess. `as_unprivileged` makes that process unable
to bypass file permissions even when the tests run as root (as they do in CI): it becomes the
user `nobody` when that user can run this interpreter, and otherwise stays root but drops the
capabilities that let root ignore permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER),
so a folder of mode 0555 owned by root is read-only to it.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

NOBODY = 65534
_PR_CAPBSET_DROP = 24
_DAC_CAPABILITIES = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_loom(
    *args: str | Path,
    cwd: Path | None = None,
    preexec: Callable[[], None] | None = None,
    timeout: float = 120,
) -> Result:
    done = subprocess.run(
        [sys.executable, "-m", "loom.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def assert_one_line_error(result: Result, *fragments: str) -> str:
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
