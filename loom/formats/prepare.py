"""The nodes of a large loom-json 2 file read in worker processes while this one stores them.

Reading a node (parsing its line, checking every field and column, packing and compressing its
tokens) is four fifths of an import's work and needs nothing of the database, so `Preparer`
hands batches of raw node lines to a pool of processes and gets back `PreparedNode`s in file
order; the importing process only inserts them. A line a worker cannot prepare (anything amiss,
or a node that needs the database on the way) comes back as None and is read by the importing
process itself, which says what is wrong exactly as a serial import would. Memory stays bounded:
at most `_WINDOW` batches are out at a time.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import resource_tracker

from loom.formats import loomjson
from loom.formats.jsonstream import RawItem
from loom.store import codec
from loom.store.document import PreparedNode, prepare_node

PARALLEL_FROM_BYTES = 32 << 20  # smaller files import faster than worker processes start
_BATCH = 200  # node lines per task: ~1 MB of JSON
_WINDOW = 3  # tasks out per worker

_worker_vocab = codec.VocabTable({})  # a worker's copy of the file's vocabulary


def worker_count() -> int:
    """How many workers an import uses here: one per CPU but one (the importing process needs
    CPU too), at least 2 (on 2 CPUs the three processes still share the work), at most 4."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 0 if (cpus or 1) < 2 else min(4, max(2, (cpus or 1) - 1))


def _start_worker(vocab: dict[int, str]) -> None:
    global _worker_vocab
    _worker_vocab = codec.VocabTable(vocab)


def prepare_line(item: RawItem, vocab: codec.VocabTable) -> PreparedNode | None:
    """A node line of a version-2 file, ready for `ImportSink.prepared` (None: read it there)."""
    node, key, columns = loomjson.read_node(item.value(), 0, loomjson.IntIds(), 2, vocab)
    return prepare_node(node, key, columns, vocab)


def _prepare_batch(items: list[RawItem]) -> list[PreparedNode | None]:
    out: list[PreparedNode | None] = []
    for item in items:
        try:
            out.append(prepare_line(item, _worker_vocab))
        except Exception:
            out.append(None)
    return out


def _start_resource_tracker() -> None:
    """multiprocessing's resource tracker, started with the process's real stderr: it hands its
    child `sys.stderr.fileno()`, and under the app (Textual replaces sys.stderr) that is -1,
    which makes every start of a worker fail ("bad value(s) in fds_to_keep")."""
    replaced = sys.stderr
    try:
        if sys.__stderr__ is not None:
            sys.stderr = sys.__stderr__
        resource_tracker.ensure_running()
    finally:
        sys.stderr = replaced


class Preparer:
    """`loomjson.NodeWorkers` in a pool of `workers` processes (started by `start`; `close` it)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._batch: list[RawItem] = []
        self._out: deque[tuple[list[RawItem], concurrent.futures.Future[list[PreparedNode | None]]]]
        self._out = deque()
        self._broken = False

    def start(self, vocab: dict[int, str]) -> None:
        """Start the pool; where it cannot start, every line is read by the importer."""
        try:
            _start_resource_tracker()
            # spawn, not fork: the app imports from a thread, and a forked child of a threaded
            # process may inherit a lock held forever
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(vocab,),
            )
        except (OSError, ValueError, RuntimeError):
            self._broken = True

    def add(self, item: RawItem) -> Iterator[tuple[RawItem, PreparedNode | None]]:
        self._batch.append(item)
        if len(self._batch) >= _BATCH:
            self._submit()
        while len(self._out) > _WINDOW * self.workers:
            yield from self._collect()

    def drain(self) -> Iterator[tuple[RawItem, PreparedNode | None]]:
        self._submit()
        while self._out:
            yield from self._collect()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _submit(self) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        future: concurrent.futures.Future[list[PreparedNode | None]] = concurrent.futures.Future()
        if self._pool is not None and not self._broken:
            try:
                future = self._pool.submit(_prepare_batch, batch)
            except (BrokenProcessPool, OSError, ValueError, RuntimeError):  # cannot start one
                self._broken = True
        if self._broken or self._pool is None:
            future.set_result([None] * len(batch))
        self._out.append((batch, future))

    def _collect(self) -> Iterator[tuple[RawItem, PreparedNode | None]]:
        batch, future = self._out.popleft()
        try:
            results = future.result()
        except (BrokenProcessPool, OSError):  # a worker died (killed, out of memory): read here
            self._broken = True
            results = [None] * len(batch)
        yield from zip(batch, results, strict=True)
