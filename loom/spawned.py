"""What every spawned helper process of loom's needs to start and talk at full speed, whether
loom runs as a command or as the app (the import's node workers, its log check)."""

from __future__ import annotations

import contextlib
import os
import sys
from multiprocessing import connection, resource_tracker

try:
    import fcntl
except ImportError:  # not on Windows
    fcntl = None  # type: ignore[assignment]

PIPE_BYTES = 1 << 20  # Linux's default /proc/sys/fs/pipe-max-size


def start_resource_tracker() -> None:
    """multiprocessing's resource tracker, started with the process's real stderr: a spawned
    process is handed its fd, and the tracker is started with `sys.stderr.fileno()`, which
    under the app (Textual replaces sys.stderr) is -1 and made every start of a process fail
    ("bad value(s) in fds_to_keep"). Only POSIX has one."""
    if os.name != "posix":
        return
    replaced = sys.stderr
    try:
        if sys.__stderr__ is not None:
            sys.stderr = sys.__stderr__
        resource_tracker.ensure_running()
    finally:
        sys.stderr = replaced


def widen(pipe: connection.Connection) -> None:
    """A pipe that holds a whole batch (Linux's default holds 64 KB): its writer hands it over at
    once instead of waiting, a piece at a time, for the other process to read (which needs that
    process's GIL). Where it cannot be widened it works as it is."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or over pipe-max-size
        if fcntl is not None:
            fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
