"""Run a command under a pseudo-terminal, as a person at a terminal would: the TUI tests of the
CLI (`loom`, `loom --prompt`, `loom open`, `loom replay`) start the real console script in one.

`Terminal` spawns the command on a fixed-size pty (120x40, TERM=xterm-256color) as the session
leader with the pty as its controlling terminal, keeps reading what it draws (so it never blocks
on a full pty buffer), and offers `wait_for_text` (on the drawn output with ANSI escapes
stripped), `wait_until` (any condition, e.g. on the loom file), `send` (keys) and `wait_exit`.
Deadlines only bound how long a broken app is waited for; nothing asserts on timings.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

COLUMNS, ROWS = 120, 40
DEADLINE_S = 120.0  # generous: the first model load on a busy two-core machine

# CSI … final byte, OSC … BEL/ST, DCS/APC/PM … ST, charset selection, and other two-byte escapes.
_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
    r"|\x1b[PX^_][^\x1b]*\x1b\\"
    r"|\x1b[()*+][0-9A-Za-z]"
    r"|\x1b[@-Z\\-_=>78]"
)

KEYS = {
    "escape": "\x1b",
    "enter": "\r",
    "tab": "\t",
    "up": "\x1b[A",
    "down": "\x1b[B",
    "right": "\x1b[C",
    "left": "\x1b[D",
    "home": "\x1b[H",
    "end": "\x1b[F",
}


def strip_ansi(raw: str) -> str:
    """What the terminal shows of `raw`, as text: escapes removed, other controls dropped."""
    text = _ANSI.sub("", raw)
    return "".join(ch for ch in text if ch in "\n\t" or ch >= " ")


class Terminal:
    """A command running on a pty; use as a context manager (the process is killed on exit)."""

    def __init__(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        cwd: Path,
        env: Mapping[str, str],
        size: tuple[int, int] = (COLUMNS, ROWS),
    ) -> None:
        master, slave = os.openpty()
        columns, rows = size
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        full_env = {**env, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": str(rows)}
        full_env.pop("NO_COLOR", None)

        def controlling_tty() -> None:  # runs in the child, after setsid
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            [os.fspath(a) for a in argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=full_env,
            start_new_session=True,
            preexec_fn=controlling_tty,
            close_fds=True,
        )
        os.close(slave)
        self.master = master
        self._raw = bytearray()

    # ----------------------------------------------------------------- reading

    def _pump(self, timeout: float) -> bool:
        """Read what is available within `timeout`; False once the pty is closed (EOF)."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not chunk:
            return False
        self._raw += chunk
        return True

    @property
    def raw(self) -> str:
        return self._raw.decode("utf-8", errors="replace")

    @property
    def text(self) -> str:
        """Everything drawn so far, escapes stripped."""
        return strip_ansi(self.raw)

    def mark(self) -> int:
        """A position in the output: `wait_for_text(..., since=mark)` looks only after it."""
        return len(self._raw)

    def text_since(self, mark: int) -> str:
        return strip_ansi(self._raw[mark:].decode("utf-8", errors="replace"))

    def wait_until(
        self, condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S
    ) -> None:
        """Keep the output drained until `condition()` holds; AssertionError after the deadline
        (or if the program exits first)."""
        end = time.monotonic() + deadline_s
        while not condition():
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what}; screen:\n{self.text[-3000:]}")
            if not self._pump(0.05) and not condition():
                raise AssertionError(
                    f"the program exited (status {self.proc.poll()}) before {what}; "
                    f"output:\n{self.text[-3000:]}"
                )

    def wait_for_text(self, *needles: str, since: int = 0, deadline_s: float = DEADLINE_S) -> str:
        """Wait until every needle has been drawn (after `since`); returns that output."""

        def drawn() -> bool:
            shown = self.text_since(since)
            return all(n in shown for n in needles)

        self.wait_until(drawn, f"{needles!r} on screen", deadline_s)
        return self.text_since(since)

    # ----------------------------------------------------------------- writing

    def send(self, *keys: str) -> None:
        """Type keys: single characters as themselves, names from KEYS ("escape", "enter"…)."""
        for key in keys:
            os.write(self.master, KEYS.get(key, key).encode("utf-8"))
            self._pump(0.05)  # one keypress at a time, as typed

    # ----------------------------------------------------------------- ending

    def wait_exit(self, deadline_s: float = DEADLINE_S) -> int:
        """Drain the output until the program exits; its exit status."""
        end = time.monotonic() + deadline_s
        while self.proc.poll() is None:
            if time.monotonic() > end:
                raise AssertionError(f"the program did not exit; screen:\n{self.text[-3000:]}")
            self._pump(0.05)
        while self._pump(0.05):  # what it wrote last (restoring the terminal)
            pass
        return int(self.proc.returncode)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        with contextlib.suppress(OSError):
            os.close(self.master)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
