"""Two processes writing one loom, and writers killed at random moments."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from support.store import model_tokens

from loom.store.errors import LoomFileError
from loom.store.loom import Loom, NewNode
from loom.store.model import LoomDocument, Node

FORK = mp.get_context("fork")


def _writer(path: str, name: str, count: int, shared: int, start: float) -> None:
    while time.time() < start:  # both begin together so their writes interleave
        pass
    with Loom.open(path) as lm:
        for i in range(count):
            node = lm.add_child(lm.root_id, f" {name} {i}", author="model")
            lm.add_tag(shared, f"{name}-{i}")
            if i % 10 == 0:
                lm.edit(node, f" {name} {i} edited")


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.loom"
    with Loom.create(path, prompt="p") as lm:
        shared = lm.add_child(lm.root_id, " shared")
    count = 60
    start = time.time() + 0.3
    procs = [
        FORK.Process(target=_writer, args=(str(path), name, count, shared, start))
        for name in ("left", "right")
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with Loom.open(path) as lm:
        texts = {h.text for h in lm.children(lm.root_id)}
        for name in ("left", "right"):
            for i in range(count):
                suffix = " edited" if i % 10 == 0 else ""
                assert f" {name} {i}{suffix}" in texts
        tags = lm.node(shared).tags
        assert len(tags) == 2 * count and len(set(tags)) == 2 * count
        kinds = [e.kind for e in lm.events()]
        assert kinds.count("add") == 2 * count + 1 and kinds.count("edit") == 2 * (count // 10)
        assert len({h.id for h in lm.children(lm.root_id)}) == 2 * count + 1
        # History is shared and linear: undoing walks back the latest writes of either process.
        while lm.undo() is not None:
            pass
        assert lm.stats()["nodes"] == 1


def _crash_writer(path: str, fd: int, seed: int) -> None:
    rng = random.Random(seed)
    with Loom.open(path) as lm:
        mine: list[int] = []
        counter = 0
        while True:
            if mine and rng.random() < 0.3:
                node = rng.choice(mine)
                counter += 1
                lm.edit(node, f"edit {counter}")
                os.write(fd, f"E {node} {counter}\n".encode())
            else:
                size = rng.randint(1, 8)
                ids = lm.add_children(
                    lm.root_id,
                    [
                        NewNode(f" n{i}", tokens=model_tokens(f" n{i} tok" * 6, seed=i))
                        for i in range(size)
                    ],
                )
                mine.extend(ids)
                os.write(fd, ("A " + " ".join(map(str, ids)) + "\n").encode())


def _read_all(fd: int) -> str:
    chunks = []
    os.set_blocking(fd, False)
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode()


@pytest.mark.slow
def test_killed_writers_never_lose_a_committed_change(tmp_path: Path) -> None:
    path = tmp_path / "crash.loom"
    Loom.create(path, prompt="crash").close()
    rng = random.Random(1234)
    added: set[int] = set()
    edited: dict[int, int] = {}
    for round_ in range(20):
        read_fd, write_fd = os.pipe()
        proc = FORK.Process(target=_crash_writer, args=(str(path), write_fd, round_))
        proc.start()
        os.close(write_fd)
        output = []
        deadline = time.time() + rng.uniform(0.05, 0.4)
        os.set_blocking(read_fd, False)
        while time.time() < deadline:  # drain as it goes so the writer never blocks on the pipe
            output.append(_read_all(read_fd))
            time.sleep(0.01)
        os.kill(proc.pid or 0, signal.SIGKILL)
        proc.join()
        assert proc.exitcode == -signal.SIGKILL
        output.append(_read_all(read_fd))
        os.close(read_fd)
        for line in "".join(output).splitlines():
            kind, *rest = line.split()
            if kind == "A":
                added.update(int(x) for x in rest)
            else:
                edited[int(rest[0])] = int(rest[1])
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
        with Loom.open(path) as lm:
            present = {h.id for h in lm.children(lm.root_id)}
            assert added <= present, f"round {round_}: lost {sorted(added - present)[:5]}"
            for node, counter in edited.items():
                text = lm.node(node).text
                assert text.startswith("edit ") and int(text.split()[1]) >= counter
            assert all(len(lm.node(i).tokens) == 12 for i in list(added)[:5] if i not in edited)
    assert len(added) > 20  # the writer really got to write


def _importer(path: str, doc: LoomDocument) -> None:
    from loom.store import document

    def die(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)  # mid-import: tokens and events written, nodes not

    document.commit_event = die  # type: ignore[assignment]
    Loom.from_document(path, doc).close()


def test_a_killed_import_leaves_no_half_written_loom(tmp_path: Path) -> None:
    nodes = [Node(id=1, parent=None, author="human", text="r", created_at=0.0)]
    nodes += [
        Node(
            id=i,
            parent=i - 1,
            author="model",
            text=f" {i}",
            created_at=0.0,
            tokens=model_tokens(f" {i}"),
        )
        for i in range(2, 300)
    ]
    doc = LoomDocument(title="big", root=1, nodes=nodes)
    path = tmp_path / "big.loom"
    proc = FORK.Process(target=_importer, args=(str(path), doc))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    assert not path.exists()
    with pytest.raises(LoomFileError, match="no such file"):
        Loom.open(path)
    Loom.from_document(path, doc).close()  # the name is still free for a retry
    with Loom.open(path) as lm:
        assert lm.stats()["nodes"] == len(nodes)


def test_any_thread_reads_only_the_opening_thread_writes(tmp_path: Path) -> None:
    """The store's threading rule, as the app relies on it: workers read, the UI thread writes."""
    import threading

    from loom.store.errors import LoomError

    with Loom.create(tmp_path / "t.loom", prompt="root") as loom:
        child = loom.add_child(loom.root_id, " a", author="human")
        seen: dict[str, object] = {}

        def worker() -> None:
            seen["text"] = loom.node(child).text
            try:
                loom.add_child(loom.root_id, " b", author="human")
            except LoomError as exc:
                seen["refused"] = str(exc)
            try:
                with loom.batch():
                    loom.prune(child)
            except LoomError as exc:
                seen["batch"] = str(exc)

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert seen["text"] == " a"
        assert "only from the thread that opened it" in str(seen["refused"])
        assert "only from the thread that opened it" in str(seen["batch"])
        assert len(loom.children(loom.root_id)) == 1 and not loom.header(child).pruned
        loom.prune(child)  # the opening thread still writes
        assert loom.header(child).pruned
