"""The nodes of a large loom-json 2 file read in worker processes while this one stores them.

Reading a node (parsing its line, checking every field and column, packing and compressing its
tokens) is four fifths of an import's work and needs nothing of the database, so `Preparer`
hands batches of raw node lines to a pool of processes and gets back `PreparedNode`s in file
order; the importing process only inserts them. A line a worker cannot prepare (anything amiss,
or a node that needs the database on the way) comes back as None and is read by the importing
process itself, which says what is wrong exactly as a serial import would. Memory stays bounded:
at most `_WINDOW` batches a worker are out at a time.

The pool is made here, not taken from concurrent.futures: on Python 3.11 a ProcessPoolExecutor
whose worker is killed (the out-of-memory killer, a user) can hang for ever in its shutdown, on
a queue lock the dead worker held or a feeder thread writing into a pipe no one reads (CPython
gh-94777). Here every worker has its own two pipes, so a dead one is seen by its pipe's end or
its process sentinel, its lines and every later line are read by the importer, and the rest of
the workers are killed.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import connection
from multiprocessing.process import BaseProcess

from loom import spawned
from loom.formats import loomjson
from loom.formats.jsonstream import RawItem
from loom.store import codec
from loom.store.document import PreparedNode, prepare_node

PARALLEL_FROM_BYTES = 32 << 20  # smaller files import faster than worker processes start
_BATCH = 200  # node lines per task: ~1 MB of JSON
_WINDOW = 3  # tasks out per worker
_CLOSE_SECONDS = 5.0  # for the workers to end on their own when an import is done

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


def _serve(tasks: connection.Connection, results: connection.Connection,
           vocab: dict[int, str]) -> None:  # fmt: skip
    """A worker: batches in from `tasks`, prepared nodes out to `results`, in order, until the
    importer closes `tasks`. One thread drains `tasks` and another writes `results` while this
    one works: the importer's send never waits on this worker's send of a result (two full
    pipes would wait for ever), and this worker never waits for the importer to read."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ctrl+c is the importer's to handle
    _start_worker(vocab)
    inbox: queue.SimpleQueue[list[RawItem] | None] = queue.SimpleQueue()
    outbox: queue.SimpleQueue[list[PreparedNode | None] | None] = queue.SimpleQueue()
    closed = threading.Event()  # the importer is done: batches still in the inbox are not wanted

    def receive() -> None:
        try:
            while True:
                inbox.put(tasks.recv())
        except (EOFError, OSError):  # closed: the import is over, or the importer died
            closed.set()
            inbox.put(None)

    def send() -> None:
        with contextlib.suppress(OSError):  # the importer stopped reading: it is closing
            while (prepared := outbox.get()) is not None:
                results.send(prepared)

    sender = threading.Thread(target=_or_exit(send), daemon=True)
    threading.Thread(target=_or_exit(receive), daemon=True).start()
    sender.start()
    try:
        while (batch := inbox.get()) is not None and not closed.is_set():
            outbox.put(_prepare_batch(batch))  # at most _WINDOW of them: the importer waits
        outbox.put(None)
    except BaseException:  # as in its threads (`_or_exit`)
        os._exit(1)
    sender.join()


def _or_exit(body: Callable[[], None]) -> Callable[[], None]:
    """`body`, ending the worker if it fails (out of memory, say): a worker left without one of
    its threads would never answer, and the importer would wait for ever; a worker gone is seen
    at once, and its lines are read by the importer."""

    def run() -> None:
        try:
            body()
        except BaseException:
            os._exit(1)

    return run


@dataclass
class _Worker:
    process: BaseProcess
    tasks: connection.Connection  # the importer's end: batches to prepare
    results: connection.Connection  # the importer's end: what came of them, in order


class Preparer:
    """`loomjson.NodeWorkers` in a pool of `workers` processes (started by `start`; `close` it)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: list[_Worker] = []
        self._batch: list[RawItem] = []
        self._out: deque[tuple[list[RawItem], _Worker | None]] = deque()  # None: read here
        self._sent = 0
        self._broken = False

    def start(self, vocab: dict[int, str]) -> None:
        """Start the workers; where they cannot start, every line is read by the importer."""
        try:
            spawned.start_resource_tracker()
            # spawn, not fork: the app imports from a thread, and a forked child of a threaded
            # process may inherit a lock held forever
            context = multiprocessing.get_context("spawn")
            for _ in range(self.workers):
                task_out, task_in = context.Pipe(duplex=False)
                result_out, result_in = context.Pipe(duplex=False)
                self._pool.append(_Worker(context.Process(
                    target=_serve, args=(task_out, result_in, vocab), daemon=True
                ), task_in, result_out))  # fmt: skip
                try:
                    spawned.widen(task_in)
                    spawned.widen(result_in)
                    self._pool[-1].process.start()
                finally:
                    task_out.close()  # the worker's ends: its own copies are the only ones left
                    result_in.close()
        except Exception:  # anything that stops a start (no pipes, no processes, no pickling)
            self._break()

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
        """End the workers: a closed task pipe ends a live one once its batch is done, a closed
        result pipe one that is sending; any still there a few seconds later are killed."""
        for worker in self._pool:
            worker.tasks.close()
            worker.results.close()
        deadline = time.monotonic() + _CLOSE_SECONDS
        for worker in self._pool:
            if worker.process.pid is not None:
                worker.process.join(max(0.0, deadline - time.monotonic()))
                if worker.process.exitcode is None:
                    worker.process.kill()
                    worker.process.join()
        self._pool = []

    def _break(self) -> None:
        """A worker died or could not start: every line from here on is read by the importer,
        and the other workers are stopped now."""
        self._broken = True
        for worker in self._pool:
            if worker.process.pid is not None and worker.process.exitcode is None:
                worker.process.kill()

    def _submit(self) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        worker = (
            None if self._broken or not self._pool else self._pool[self._sent % len(self._pool)]
        )
        if worker is not None:
            try:
                worker.tasks.send(batch)
                self._sent += 1
            except (OSError, ValueError):  # its process is gone
                self._break()
                worker = None
        self._out.append((batch, worker))

    def _collect(self) -> Iterator[tuple[RawItem, PreparedNode | None]]:
        batch, worker = self._out.popleft()
        results: list[PreparedNode | None] = [None] * len(batch)
        if worker is not None and not self._broken:
            try:
                # a worker answers in the order it was sent batches, so its next answer is the
                # one for the oldest batch out; its sentinel says it died instead
                ready = connection.wait([worker.results, worker.process.sentinel])
                if worker.results not in ready:
                    raise EOFError
                results = worker.results.recv()
            except (EOFError, OSError):  # killed, out of memory: its lines are read here
                self._break()
        yield from zip(batch, results, strict=True)
