"""The import's check of a carried log in a process of its own (`logcheck.LogCheck`): it finds
what the importer's own check finds, in the same words, and where the process cannot start or
dies the importer checks the log itself."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from support.store import model_tokens

from loom.app.transfer import export_loom, import_file
from loom.store import logcheck
from loom.store.errors import LoomError
from loom.store.loom import Loom


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A loom-json file whose log holds adds, edits, an undo and a redo, tags, a bookmark, a
    delete and a group: every applier the check goes through."""
    folder = tmp_path_factory.mktemp("logcheck")
    with Loom.create(folder / "src.loom", title="t", prompt="Root") as lm:
        kids = [
            lm.add_child(lm.root_id, f" kid {i}", author="model", tokens=model_tokens(f" kid {i}"))
            for i in range(6)
        ]
        lm.edit(kids[0], " kid 0, edited")
        lm.undo()
        lm.redo()
        with lm.batch():
            lm.add_tag(kids[1], "x")
            lm.set_bookmark(kids[1], True)
        grandkid = lm.add_child(kids[2], " deeper", author="human")
        lm.delete_subtree(kids[3])
        lm.set_current(grandkid)
        export_loom(lm, "loom-json", folder / "src.json")
    return folder / "src.json"


def _broken(src: Path, folder: Path) -> Path:
    """`src` with an undo of an event that never happened, after the first few events."""
    lines = src.read_text().splitlines()
    events = [i for i, line in enumerate(lines) if line.startswith('{"seq":')]
    undo = json.loads(lines[events[3]].rstrip(","))
    last_seq = json.loads(lines[events[-1]].rstrip(","))["seq"]
    undo.update(seq=last_seq + 1, kind="undo", payload={"target": 9999})
    lines.insert(events[-1] + 1, json.dumps(undo) + ",")
    lines[events[-1]] += "" if lines[events[-1]].endswith(",") else ","
    lines[events[-1] + 1] = lines[events[-1] + 1].rstrip(",")
    out = folder / "broken.json"
    out.write_text("\n".join(lines) + "\n")
    return out


def _import_error(src: Path, out: Path) -> str:
    with pytest.raises(LoomError) as caught:
        import_file(src, out)
    assert not out.exists()
    return str(caught.value)


def _state(path: Path) -> dict[str, Any]:
    with Loom.open(path, readonly=True) as lm:
        doc = lm.to_document()
        return {
            "nodes": [(n.id, n.parent, n.text, n.tags, n.bookmarked) for n in doc.nodes],
            "events": [(e.seq, e.kind) for e in lm.events()],
        }


@pytest.fixture
def checked_here(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """Every check the importer makes itself (its `upto`), recorded."""
    calls: list[int | None] = []
    real = logcheck.check_log

    def check_log(conn: Any, upto: int | None = None) -> None:
        calls.append(upto)
        real(conn, upto)

    monkeypatch.setattr(logcheck, "check_log", check_log)
    return calls


@pytest.fixture
def in_a_process(monkeypatch: pytest.MonkeyPatch) -> list[logcheck.LogCheck]:
    """Every import's log checked by a process of its own; the checks started, to look at."""
    started: list[logcheck.LogCheck] = []
    real_start = logcheck.LogCheck.start

    def start(self: logcheck.LogCheck) -> None:
        real_start(self)
        started.append(self)

    monkeypatch.setattr(logcheck, "PARALLEL_FROM_NODES", 0)
    monkeypatch.setattr(logcheck.LogCheck, "start", start)
    return started


def test_a_good_log_imports_the_same_either_way(
    tmp_path: Path, log_file: Path, in_a_process: list[logcheck.LogCheck],
    checked_here: list[int | None],
) -> None:  # fmt: skip
    import_file(log_file, tmp_path / "checked-apart.loom")
    assert len(in_a_process) == 1 and not in_a_process[0].running  # it answered and ended
    assert checked_here == []  # the process's answer was taken
    in_a_process.clear()
    logcheck.PARALLEL_FROM_NODES = 10**9  # (monkeypatched: undone after the test)
    import_file(log_file, tmp_path / "checked-here.loom")
    assert in_a_process == [] and checked_here == [None]
    assert _state(tmp_path / "checked-apart.loom") == _state(tmp_path / "checked-here.loom")


def test_a_bad_log_is_refused_in_the_same_words(
    tmp_path: Path, log_file: Path, monkeypatch: pytest.MonkeyPatch,
    checked_here: list[int | None],
) -> None:  # fmt: skip
    broken = _broken(log_file, tmp_path)
    here = _import_error(broken, tmp_path / "here.loom")
    assert "inconsistent" in here and "9999" in here, here
    assert checked_here == [None]
    monkeypatch.setattr(logcheck, "PARALLEL_FROM_NODES", 0)
    apart = _import_error(broken, tmp_path / "apart.loom")
    assert apart == here and checked_here == [None]  # said by the process


def test_a_check_process_that_dies_leaves_the_check_to_the_importer(
    tmp_path: Path, log_file: Path, in_a_process: list[logcheck.LogCheck],
    monkeypatch: pytest.MonkeyPatch, checked_here: list[int | None],
) -> None:  # fmt: skip
    real_start = logcheck.LogCheck.start

    def start_then_die(self: logcheck.LogCheck) -> None:
        real_start(self)
        assert self._process is not None
        self._process.kill()  # the out-of-memory killer, say, before the first event arrives
        self._process.join()

    monkeypatch.setattr(logcheck.LogCheck, "start", start_then_die)
    import_file(log_file, tmp_path / "good.loom")
    assert _state(tmp_path / "good.loom")["nodes"]
    assert len(checked_here) == 1  # made here, once
    broken = _broken(log_file, tmp_path)
    assert "inconsistent" in _import_error(broken, tmp_path / "bad.loom")
    assert len(checked_here) == 2


def test_no_process_at_all_leaves_the_check_to_the_importer(
    tmp_path: Path, log_file: Path, monkeypatch: pytest.MonkeyPatch,
    checked_here: list[int | None],
) -> None:  # fmt: skip
    def no_processes(method: str) -> Any:
        raise OSError("no processes here")

    monkeypatch.setattr(logcheck, "PARALLEL_FROM_NODES", 0)
    monkeypatch.setattr(multiprocessing, "get_context", no_processes)
    import_file(log_file, tmp_path / "good.loom")
    broken = _broken(log_file, tmp_path)
    assert "inconsistent" in _import_error(broken, tmp_path / "bad.loom")
    assert checked_here == [None, None]


def test_a_failed_import_ends_its_check_process(
    tmp_path: Path, log_file: Path, in_a_process: list[logcheck.LogCheck]
) -> None:
    text = log_file.read_text()
    cut = text[: text.rindex('{"seq":') + 20]  # the file ends inside its last event
    src = tmp_path / "cut.json"
    src.write_text(cut)
    with pytest.raises(Exception) as caught:
        import_file(src, tmp_path / "cut.loom")
    assert "Traceback" not in str(caught.value)
    assert in_a_process and all(not check.running for check in in_a_process)
    assert not (tmp_path / "cut.loom").exists()


def test_a_check_process_that_dies_at_the_end_leaves_the_check_to_the_importer(
    tmp_path: Path, log_file: Path, in_a_process: list[logcheck.LogCheck],
    monkeypatch: pytest.MonkeyPatch, checked_here: list[int | None],
) -> None:  # fmt: skip
    real_result = logcheck.LogCheck.result

    def die_then_answer(self: logcheck.LogCheck, conn: Any) -> None:
        assert self._process is not None
        self._process.kill()  # every event sent, no answer yet
        self._process.join()
        real_result(self, conn)

    monkeypatch.setattr(logcheck.LogCheck, "result", die_then_answer)
    import_file(log_file, tmp_path / "good.loom")
    assert len(checked_here) == 1 and checked_here[0] is not None  # up to the log's last event
    broken = _broken(log_file, tmp_path)
    assert "inconsistent" in _import_error(broken, tmp_path / "bad.loom")
