"""A large loom-json 2 file imports with worker processes (loom.formats.prepare) exactly as it
imports without them: the same loom, the same error for a bad node, the same message for a cut
file, and the same loom when a worker dies on the way.

The threshold is lowered so that a small file goes through the workers (on any machine: the
worker count is set to 2 even where the CPUs would give none).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.compare import differences
from support.store import model_tokens

from loom.app.transfer import export_loom, import_file
from loom.formats import FormatError, prepare
from loom.store.errors import LoomError
from loom.store.loom import Loom, NewNode
from loom.store.model import LoomDocument, PersonaLabel

N_BRANCHES = 60


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    """A loom of ~250 nodes (tokens with top-k, labels, tags, a human node without tokens, an
    edit and an undo in its log), exported to loom-json 2."""
    path = tmp_path / "big.loom"
    with Loom.create(path, prompt="Once upon a time") as lm:
        parent = lm.root_id
        for i in range(N_BRANCHES):
            texts = [f" branch {i} way {j}" for j in range(4)]
            ids = lm.add_children(
                parent,
                [
                    NewNode(t, tokens=model_tokens(t, k=5, seed=i * 4 + j))
                    for j, t in enumerate(texts)
                ],
            )
            lm.set_persona(ids[1], PersonaLabel("hero", "model", {"hero": 0.9, "villain": 0.1}))
            lm.add_tag(ids[2], "kept")
            parent = ids[0]
        lm.add_child(parent, " a human line", author="human")
        lm.edit(parent, " edited")
        lm.undo()
        lm.set_current(parent)
    out = tmp_path / "big.json"
    export_loom(Loom.open(path, readonly=True), "loom-json", out)
    return out


def _doc(path: Path) -> LoomDocument:
    with Loom.open(path, readonly=True) as lm:
        return lm.to_document()


def _import(src: Path, out: Path, parallel: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        if parallel:
            m.setattr(prepare, "PARALLEL_FROM_BYTES", 0)
            m.setattr(prepare, "worker_count", lambda: 2)
            m.setattr(prepare, "_BATCH", 16)  # many batches, several out at once
        else:
            m.setattr(prepare, "worker_count", lambda: 0)
        import_file(src, out)


def test_workers_import_the_same_loom(
    exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _import(exported, tmp_path / "serial.loom", False, monkeypatch)
    _import(exported, tmp_path / "workers.loom", True, monkeypatch)
    serial, workers = _doc(tmp_path / "serial.loom"), _doc(tmp_path / "workers.loom")
    assert len(workers.nodes) == 4 * N_BRANCHES + 2
    assert differences(serial, workers, ignore_meta=()) in ([], ["events differs"])
    # the logs differ only in the time the import was logged
    strip = [{**e, "ts": 0} for e in serial.events], [{**e, "ts": 0} for e in workers.events]
    assert strip[0] == strip[1]
    with Loom.open(tmp_path / "workers.loom", readonly=True) as lm:
        assert len(lm.search("human")) == 1  # the search index was rebuilt after the import


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('"author":"model"', '"author":"robot"', "author must be 'human' or 'model'"),
        ('"top_logprobs":[[', '"top_logprobs":[["x",', "alternatives, not 6"),
        ('"created_at":', '"created_at":1e300,"x":', "created_at is not a time"),
    ],
)
def test_a_bad_node_is_named_the_same_with_workers(
    exported: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    old: str,
    new: str,
    message: str,
) -> None:
    lines = exported.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if '"text":" branch 40 way 2"' in line)
    assert old in lines[at]
    lines[at] = lines[at].replace(old, new, 1)
    bad = tmp_path / "bad.json"
    bad.write_text("".join(lines))
    errors = []
    for mode in (False, True):
        out = tmp_path / f"bad-{mode}.loom"
        with pytest.raises((LoomError, FormatError)) as caught:
            _import(bad, out, mode, monkeypatch)
        assert not out.exists()
        errors.append(str(caught.value))
    assert errors[0] == errors[1] and message in errors[0], errors


def test_a_cut_file_says_so_the_same_with_workers(
    exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = exported.read_bytes()
    cut = tmp_path / "cut.json"
    cut.write_bytes(data[: data.index(b'"text":" branch 50 way 1"') + 30])
    errors = []
    for mode in (False, True):
        with pytest.raises(FormatError) as caught:
            _import(cut, tmp_path / f"cut-{mode}.loom", mode, monkeypatch)
        errors.append(str(caught.value))
    assert errors[0] == errors[1] and "truncated" in errors[0] and "after node" in errors[0]


DEAD_WORKERS = """
import os, signal, sys
import orjson
from loom.formats import prepare
from loom.formats.jsonstream import RawItem

if __name__ == "__main__":
    lines = open(sys.argv[1], "rb").read().splitlines()
    head = next(l for l in lines if l.startswith(b'"vocab"')).rstrip(b",")
    vocab = orjson.loads(b"{" + head + b"}")["vocab"]
    nodes = [l.rstrip(b",") for l in lines if l.startswith(b'{"id":')]
    items = [RawItem(data, i) for i, data in enumerate(nodes * 8)]  # batches bigger than a pipe
    preparer = prepare.Preparer(2)
    preparer.start({int(k): v for k, v in vocab.items()})
    try:
        done = list(preparer.add(items[0])) + list(preparer.drain())
        assert done[0][1] is None  # the root: no tokens
        for pid in [worker.process.pid for worker in preparer._pool]:
            os.kill(pid, signal.SIGKILL)
        later = [r for item in items[1:] for r in preparer.add(item)] + list(preparer.drain())
    finally:
        preparer.close()
    assert [item for item, _ in later] == items[1:]  # every line back, in order
    print(sum(prepared is None for _, prepared in later), len(items) - 1)
"""


def test_lines_a_dead_worker_held_are_read_here(exported: Path, tmp_path: Path) -> None:
    """Every line a killed worker held comes back to be read by the importer, and the pool
    closes: on Python 3.11 its manager thread hung for ever joining a feeder thread blocked
    writing a batch into a pipe no process read any more (CPython gh-94777). Run in a child
    process, so that a hang fails this test instead of stopping the suite."""
    script = tmp_path / "dead_workers.py"
    script.write_text(DEAD_WORKERS)
    try:
        done = subprocess.run([sys.executable, str(script), str(exported)],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("the pool did not close after its workers were killed")
    unread, lines = done.stdout.split()
    assert done.returncode == 0 and unread == lines, done.stderr


WORKERS_UNDER_THE_APP = """
import io, sys
import orjson
from loom.formats import prepare
from loom.formats.jsonstream import RawItem


class Captured(io.StringIO):  # as Textual replaces sys.stderr: no file descriptor behind it
    def fileno(self) -> int:
        return -1


if __name__ == "__main__":
    sys.stderr = Captured()
    lines = open(sys.argv[1], "rb").read().splitlines()
    head = next(l for l in lines if l.startswith(b'"vocab"')).rstrip(b",")
    vocab = orjson.loads(b"{" + head + b"}")
    node = next(l for l in lines if b'"text":" branch 3 way 1"' in l).rstrip(b",")
    preparer = prepare.Preparer(2)
    preparer.start({int(k): v for k, v in vocab["vocab"].items()})
    try:
        done = list(preparer.add(RawItem(node, 1))) + list(preparer.drain())
    finally:
        preparer.close()
    print("prepared" if done[0][1] is not None else "not prepared")
"""


def test_workers_start_where_stderr_has_no_file(exported: Path, tmp_path: Path) -> None:
    """In the app, sys.stderr is Textual's: multiprocessing's resource tracker, handed its
    fileno (-1), failed every start of a worker ("bad value(s) in fds_to_keep")."""
    script = tmp_path / "under_app.py"
    script.write_text(WORKERS_UNDER_THE_APP)
    done = subprocess.run(
        [sys.executable, str(script), str(exported)], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "prepared", done.stdout + done.stderr


def test_a_worker_whose_thread_fails_ends_so_the_importer_sees_it() -> None:
    """A worker's thread that fails (out of memory, say) ends the whole worker, whose end the
    importer sees; a worker left without its reading or sending thread would never answer."""
    code = (
        "import threading\n"
        "from loom.formats.prepare import _or_exit\n"
        "def fail():\n"
        "    raise MemoryError\n"
        "threading.Thread(target=_or_exit(fail)).start()\n"
        "threading.Event().wait(60)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert done.returncode == 1 and done.stderr == b""  # ended at once, no traceback on screen
