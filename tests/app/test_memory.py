"""Hidden context ("memory"): the store keeps it (undoable), `loom.app.context` assembles what the
model reads, every model feature reads through it, generations record it, regenerate honours it,
and every full-fidelity format carries it.

The assembly tests use a tokenizer of one id per character; the model tests use the real default
model (through `Session`, as the CLI and the app do).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.engines import default_gguf, engine
from support.store import tokenizing_loom

from loom.app.context import MemoryTooLongError, assemble, describe, fit, memories_at
from loom.app.regenerate import regenerate
from loom.engine.errors import ContextOverflowError
from loom.engine.sampling import SamplerSettings
from loom.formats import read_document, write_document
from loom.personas.sets import load_persona_set
from loom.store.errors import InvalidEditError, LoomError
from loom.store.loom import Loom
from loom.store.model import GenerationSettings, Memory
from loom.store.tokenizer import FunctionTokenizer
from loom.tokens import TokenArray

__all__ = ["default_gguf", "engine"]

REPO = Path(__file__).resolve().parents[2]
PROMPT = "Once upon a time, there was a"
DRAGON = "This is a story about a dragon named Smaug. The dragon Smaug. Dragon dragon dragon.\n"


def chars(text: str) -> list[int]:
    return [ord(c) for c in text]


def char_tokens(text: str) -> TokenArray:
    return TokenArray.from_ids(chars(text), list(text))


def char_loom(path: Path) -> Loom:
    tok = FunctionTokenizer(char_tokens)
    return Loom.create(path, title="m", prompt="abcdef", tokenizer=tok)


# --- assembly ---------------------------------------------------------------------------------


def test_a_memory_goes_before_the_path_or_as_a_note_k_tokens_from_its_end() -> None:
    path = chars("abcdef")
    assert assemble(path, [], chars).ids == path
    before = assemble(path, [Memory("M:")], chars)
    assert before.ids == chars("M:abcdef") and before.memory_tokens == 2 and before.path == path
    assert assemble(path, [Memory("[n]", depth=2)], chars).ids == chars("abcd[n]ef")
    assert assemble(path, [Memory("[n]", depth=0)], chars).ids == chars("abcdef[n]")
    # A note deeper than the path goes first; loom and node memories stack, loom first.
    assert assemble(path, [Memory("[n]", depth=99)], chars).ids == chars("[n]abcdef")
    both = [Memory("L:", node=None), Memory("N:", node=3)]
    assert assemble(path, both, chars).ids == chars("L:N:abcdef")
    mixed = [Memory("<L>", depth=1), Memory("B:", node=3)]
    assert assemble(path, mixed, chars).ids == chars("B:abcde<L>f")
    same = [Memory("1", depth=2), Memory("2", depth=2, node=3)]
    assert assemble(path, same, chars).ids == chars("abcd12ef")


def test_fitting_keeps_the_memory_and_says_by_how_much_it_is_too_long() -> None:
    prompt = assemble(chars("abcdefgh"), [Memory("MM"), Memory("[n]", depth=2)], chars)
    assert fit(prompt, 100, 10) is prompt and fit(prompt, None, 10_000) is prompt
    with pytest.raises(ContextOverflowError):  # 13 + BOS + 4 = 18 > 16
        fit(prompt, 16, 4)
    recent = fit(prompt, 16, 4, keep_recent=True)
    assert recent.ids == chars("MMcdef[n]gh")  # the 2 oldest path tokens went, not the memory
    assert len(recent.ids) + 1 + 4 <= 16
    with pytest.raises(MemoryTooLongError) as info:  # 5 memory + BOS + 12 > 16, by 2
        fit(prompt, 16, 12, keep_recent=True)
    assert "5 tokens" in str(info.value) and "2 too many" in str(info.value)


# --- the store ----------------------------------------------------------------------------------


def test_memories_are_kept_inherited_and_undone_like_any_edit(tmp_path: Path) -> None:
    with char_loom(tmp_path / "m.loom") as lm:
        a = lm.add_child(lm.root_id, "gh")
        b = lm.add_child(a, "ij")
        other = lm.add_child(lm.root_id, "xy")
        assert memories_at(lm, b) == []
        lm.set_memory(a, Memory("A-memory", depth=3))
        lm.set_memory(None, Memory("loom:"))
        assert lm.memory(a) == Memory("A-memory", depth=3, node=a)
        assert memories_at(lm, b) == [Memory("loom:"), Memory("A-memory", 3, node=a)]
        assert memories_at(lm, other) == [Memory("loom:")]  # not on that branch
        lm.set_memory(b, Memory("B wins"))  # the nearest node's replaces a farther one's
        assert memories_at(lm, b)[1] == Memory("B wins", node=b)
        assert describe(memories_at(lm, b), b) == f"loom (before) + node #{b} (before)"
        assert "inherited from" in describe(memories_at(lm, b), other)
        n_events = len(lm.events())
        lm.set_memory(b, Memory("B wins"))  # no change, nothing logged
        assert len(lm.events()) == n_events
        lm.undo()
        assert lm.memory(b) is None and memories_at(lm, b)[1].node == a
        lm.redo()
        assert lm.memory(b) == Memory("B wins", node=b)
        lm.set_memory(None, None)
        assert lm.memory(None) is None
        lm.undo()
        assert lm.memory(None) == Memory("loom:")
        with pytest.raises(InvalidEditError):
            lm.set_memory(a, Memory(""))
        with pytest.raises(InvalidEditError):
            lm.set_memory(a, Memory("x", depth=-1))
        with pytest.raises(LoomError):
            lm.set_memory(999, Memory("x"))
        # Edits and splits keep a node's memory (it lives with the node); a merge keeps the
        # merged child's, which is what its descendants read.
        lm.edit(a, "gH")
        assert lm.memory(a) == Memory("A-memory", depth=3, node=a)
        tail = lm.split(a, at_char=1)
        assert lm.memory(a) == Memory("A-memory", depth=3, node=a) and lm.memory(tail) is None
        lm.merge_into_parent(tail)
        assert lm.memory(a) == Memory("A-memory", depth=3, node=a)
        c = lm.add_child(b, "kl")
        d = lm.add_child(c, "mn")
        lm.set_memory(c, Memory("C memory"))
        lm.merge_into_parent(c)
        assert lm.memory(b) == Memory("C memory", node=b)
        assert memories_at(lm, d)[1] == Memory("C memory", node=b)
        lm.undo()
        assert lm.memory(b) == Memory("B wins", node=b) and lm.memory(c) == Memory(
            "C memory", node=c
        )


@pytest.mark.parametrize(
    ("fmt", "version"),
    [("loom-json", 1), ("loom-json", 2), ("openloom", None), ("socketteer", None)],
)
def test_every_full_fidelity_format_carries_the_memories(
    tmp_path: Path, fmt: str, version: int | None
) -> None:
    with char_loom(tmp_path / "m.loom") as lm:
        a = lm.add_child(lm.root_id, "gh")
        lm.set_memory(a, Memory("node memory\n", depth=4))
        lm.set_memory(None, Memory("loom memory\n"))
        doc = lm.to_document()
    out = tmp_path / f"m.{fmt}.json"
    write_document(doc, fmt, out, version=version)
    back = read_document(out)
    with Loom.from_document(tmp_path / f"back-{fmt}.loom", back) as again:
        node = next(n for n in again.to_document().nodes if n.text == "gh")
        assert again.memory(None) == Memory("loom memory\n")
        assert again.memory(node.id) == Memory("node memory\n", depth=4, node=node.id)
        assert memories_at(again, node.id) == [
            Memory("loom memory\n"),
            Memory("node memory\n", 4, node=node.id),
        ]


def test_an_import_with_a_malformed_memory_is_refused_in_one_line(tmp_path: Path) -> None:
    with char_loom(tmp_path / "m.loom") as lm:
        lm.set_memory(None, Memory("fine"))
        out = tmp_path / "m.json"
        write_document(lm.to_document(), "loom-json", out, version=1)
    data = json.loads(out.read_text())
    data["meta"]["memory"] = {"text": 42}
    out.write_text(json.dumps(data))
    with pytest.raises(LoomError, match="the loom: a memory's text must be a non-empty string"):
        Loom.from_document(tmp_path / "bad.loom", read_document(out))
    assert not (tmp_path / "bad.loom").exists()


def test_a_generation_record_keeps_its_memories_and_reads_old_records() -> None:
    record = GenerationSettings("m", "", 1.0, 1.0, 0, 0.0, 1, 8, memory=[Memory("x", 2, node=5)])
    data = record.to_json()
    assert data["memory"] == [{"text": "x", "depth": 2, "node": 5}]
    assert GenerationSettings.from_json(data) == record
    plain = GenerationSettings("m", "", 1.0, 1.0, 0, 0.0, 1, 8)
    assert "memory" not in plain.to_json()  # older records keep their shape


# --- the real model -----------------------------------------------------------------------------


class Recording:
    """The engine, with every prompt it is asked to read recorded."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.prompts: list[list[int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def generate(self, prefix_ids: Sequence[int], *args: Any, **kwargs: Any) -> Any:
        self.prompts.append(list(prefix_ids))
        return self._engine.generate(prefix_ids, *args, **kwargs)

    def score(self, prefix_ids: Sequence[int], continuations: Any) -> Any:
        self.prompts.append(list(prefix_ids))
        return self._engine.score(prefix_ids, continuations)


@pytest.fixture
def session(engine: Any, tmp_path: Path) -> Any:
    from loom.app.session import Session

    lm = tokenizing_loom(engine, tmp_path / "r.loom", title="r", prompt=PROMPT)
    yield Session(lm, Recording(engine))
    lm.close()


def has_run(ids: Sequence[int], run: Sequence[int]) -> bool:
    n = len(run)
    return any(list(ids[i : i + n]) == list(run) for i in range(len(ids) - n + 1))


GREEDY = SamplerSettings(temperature=0.0, max_tokens=10, seed=1)


@pytest.mark.model
def test_the_memory_changes_what_the_model_reads_and_writes(session: Any, engine: Any) -> None:
    lm = session.loom
    root = lm.root_id
    path = [int(t) for t in lm.path_tokens(root).ids]
    [plain] = session.generate(root, 1, GREEDY)
    session.set_memory(None, Memory(DRAGON))
    [dragon] = session.generate(root, 1, GREEDY)
    memory_ids = engine.tokenize(DRAGON)
    assert session.backend.prompts[-1] == memory_ids + path
    assert lm.node(dragon).generation.memory == [Memory(DRAGON)]
    assert lm.node(plain).generation.memory == []
    assert "dragon" not in lm.node(plain).text.lower()
    assert "dragon" in lm.node(dragon).text.lower()  # greedy: the memory decided it
    # The tree does not show it: the path's text and tokens are the root's and the node's.
    assert lm.path_text(dragon) == PROMPT + lm.node(dragon).text
    # An author's note at depth 3 sits 3 path tokens before the end.
    session.set_memory(root, Memory(" (a note) ", depth=3))
    prompt = session.prompt(root)
    note = engine.tokenize(" (a note) ")
    assert prompt.ids == memory_ids + path[:-3] + note + path[-3:]


@pytest.mark.model
def test_regenerate_with_memory_gives_identical_tokens_after_the_memory_changed(
    session: Any, engine: Any, tmp_path: Path
) -> None:
    lm = session.loom
    session.set_memory(lm.root_id, Memory("The narrator is a pirate. Arr!\n"))
    session.set_memory(None, Memory(" [tone: grim] ", depth=2))
    engine.clear_cache()  # the reproducible case: a prompt decoded afresh (engine.py)
    ids = session.generate(lm.root_id, 2, SamplerSettings(temperature=1.0, max_tokens=12))
    session.set_memory(lm.root_id, None)  # later changes do not change what it read
    session.set_memory(None, Memory("something else entirely"))
    report = regenerate(lm, ids[1], models_dirs=[tmp_path], engine_loader=lambda _p: engine)
    assert report.identical, report.lines()
    assert report.branch.regenerated == [int(t) for t in lm.node(ids[1]).tokens.ids]
    assert all(s.identical for s in report.siblings)
    read = engine.tokenize(" [tone: grim] ")
    assert report.prompt_tokens == len(session.prefix_ids(lm.root_id)) - len(
        engine.tokenize("something else entirely")
    ) + len(engine.tokenize("The narrator is a pirate. Arr!\n")) + len(read)
    assert any("hidden context" in note for note in report.notes)


@pytest.mark.model
def test_labels_census_and_fork_map_read_the_memory(session: Any, engine: Any) -> None:
    lm = session.loom
    personas = load_persona_set(REPO / "sessions" / "croissant.toml")
    lm.set_personas(personas.personas)
    [child] = session.generate(lm.root_id, 1, SamplerSettings(temperature=1.0, max_tokens=6))
    marker = "Remember: the croissant is sacred.\n"
    session.set_memory(None, Memory(marker))
    memory_ids = engine.tokenize(marker)
    rec = session.backend

    rec.prompts.clear()
    run = session.plan_labels(session.persona_set, [child])
    session.write_labels(run)
    assert rec.prompts and all(has_run(p, memory_ids) for p in rec.prompts)

    rec.prompts.clear()
    from loom.app.census import CensusSettings

    census = session.run_census(child, CensusSettings(rollouts=2, tokens=4, batch=2, seed=3))
    assert census.memory == [Memory(marker)]
    assert rec.prompts and all(has_run(p, memory_ids) for p in rec.prompts)
    stored = session.censuses(child) if session.save_census(census) else []
    assert stored[-1].memory == [Memory(marker)]

    rec.prompts.clear()
    session.fork_map(child, budget=40, whole_path=False, rollouts=1, rollout_tokens=2, seed=1)
    generated = [p for p in rec.prompts if p[: len(memory_ids)] == memory_ids]
    assert generated, "the fork map's rollouts read the memory"


@pytest.mark.model
def test_a_memory_longer_than_the_context_is_refused_saying_by_how_much(session: Any) -> None:
    lm = session.loom
    huge = Memory("word " * (session.n_ctx + 10))
    session.set_memory(None, huge)
    before = len(lm.events())
    with pytest.raises(MemoryTooLongError, match=r"too many"):
        session.generate(lm.root_id, 1, GREEDY)
    assert len(lm.events()) == before  # nothing written
    with pytest.raises(MemoryTooLongError):
        session.check_memory(huge, 8)
    assert session.check_memory(Memory("short"), 8) == len(session.backend.tokenize("short"))
    assert np.isfinite(session.n_ctx)


@pytest.mark.model
def test_a_prompt_cut_inside_a_node_is_the_same_for_its_reader(session: Any, engine: Any) -> None:
    """A branch at token K of a node reads the path up to K, memories included, whether the path
    is read as stored or through the reading model's vocabulary (cut 0: before its first token)."""
    root = session.loom.root_id
    [child] = session.generate(root, 1, GREEDY)
    session.set_memory(None, Memory(DRAGON))
    path = [int(t) for t in session.loom.path_tokens(child).ids]
    n_own = len(session.loom.node(child).tokens)
    for cut in (0, 3):
        stored = session.prompts.at(child, cut)
        read = session.prompts.at(child, cut, reader=engine)
        assert read.ids == stored.ids == engine.tokenize(DRAGON) + path[: len(path) - n_own + cut]
