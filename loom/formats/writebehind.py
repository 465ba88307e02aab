"""Writing an export from a thread while the next part of it is made.

At 100k nodes an export writes some 650 MB, and the kernel's copy of it into the page cache is
seconds of its time. `write_all` hands blocks of about a megabyte to a thread that writes them
(a write releases the GIL), so that copy overlaps the making of the lines that follow. At most
`_QUEUED` blocks wait, so memory stays bounded.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable
from typing import IO

_BLOCK = 1 << 20
_QUEUED = 8


def write_all(handle: IO[bytes], chunks: Iterable[bytes]) -> None:
    """Write every chunk to `handle`, in order; what the writing raised is raised here."""
    blocks: queue.Queue[bytes | None] = queue.Queue(_QUEUED)
    failed: list[BaseException] = []
    abandoned = threading.Event()  # the maker failed: what is queued is not worth writing

    def write() -> None:
        while (block := blocks.get()) is not None:
            if failed or abandoned.is_set():
                continue  # keep taking blocks, so the maker never waits on a full queue
            try:
                handle.write(block)
            except BaseException as exc:  # raised in the maker's thread, below
                failed.append(exc)

    writer = threading.Thread(target=write, name="export-writer", daemon=True)
    writer.start()
    try:
        pending: list[bytes] = []
        size = 0
        for chunk in chunks:
            pending.append(chunk)
            size += len(chunk)
            if size >= _BLOCK:
                if failed:
                    break
                blocks.put(b"".join(pending))
                pending, size = [], 0
        if pending and not failed:
            blocks.put(b"".join(pending))
    except BaseException:
        abandoned.set()
        raise
    finally:
        blocks.put(None)
        writer.join()
    if failed:
        raise failed[0]
