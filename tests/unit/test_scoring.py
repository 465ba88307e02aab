"""Probabilities on every token: the real default model reads text it did not write.

`Engine.read` (the scoring pass with top-k and entropy) against the engine's own `score` and the
single-sequence reference evaluator; `loom.app.scoring` planning and reading a loom; the store
keeping readings per model through the log, undo, edits, deletes, loom-json 1 and 2 and an old
file's migration.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from support.engines import default_gguf, engine
from support.store import tokenizing_loom

from loom.app.scoring import (
    needs_reading,
    node_ids_in_scope,
    plan_scoring,
    reading_by,
    run_scoring,
    shown_tokens,
)
from loom.app.session import Session
from loom.engine.engine import Engine
from loom.engine.logits import log_softmax_rows
from loom.engine.sampling import SamplerSettings
from loom.formats import read_document, write_document
from loom.personas.actions import plan_labels
from loom.personas.sets import PersonaSet
from loom.store import events as ev
from loom.store.errors import InvalidEditError
from loom.store.loom import Loom
from loom.store.model import Persona
from loom.tokens import TokenArray

__all__ = ["default_gguf", "engine"]

pytestmark = pytest.mark.model

PROMPT = "The lighthouse keeper climbed the stairs every night."
HUMAN = " She lit the lamp and watched the ships pass by."
MORE = " Then she wrote in her logbook."
OLD = Path(__file__).resolve().parent.parent / "data" / "store" / "schema1_labelled.loom"


def human_loom(path: Path, engine: Engine) -> tuple[Loom, int, int]:
    """root (the prompt) ── HUMAN ── MORE, all written by hand."""
    loom = tokenizing_loom(engine, path, prompt=PROMPT, prompt_tokens=engine.tokens_for(PROMPT))
    a = loom.add_child(loom.root_id, HUMAN, author="human")
    b = loom.add_child(a, MORE, author="human")
    return loom, a, b


def test_read_gives_what_score_gives_with_alternatives_and_entropy(engine: Engine) -> None:
    prefix = engine.tokenize(PROMPT)
    conts = [engine.tokenize(HUMAN), engine.tokenize(MORE), []]
    engine.clear_cache()
    read = engine.read(prefix, conts, 5)
    engine.clear_cache()  # both from an empty cache: the same computation, bit for bit
    scored = engine.score(prefix, conts)
    for tokens, ids, logprobs in zip(read, conts, scored, strict=True):
        assert tokens.ids.tolist() == ids and tokens.k == 5
        assert np.array_equal(tokens.logprobs, logprobs)
    assert read[0].text == HUMAN and read[1].text == MORE and len(read[2]) == 0
    tokens = read[0]
    assert tokens.entropy is not None and np.all(tokens.entropy > 0)
    for i in range(len(tokens)):
        top = tokens.top(i)
        assert [a.logprob for a in top] == sorted((a.logprob for a in top), reverse=True)
        # a token at least as likely as the 5th alternative is listed, at its own logprob
        if tokens.logprobs[i] >= top[-1].logprob:
            (own,) = [a for a in top if a.id == int(tokens.ids[i])]
            assert abs(own.logprob - float(tokens.logprobs[i])) < 1e-5
        assert all(a.text for a in top)


def test_read_logprobs_are_the_models_own(engine: Engine) -> None:
    """Against a fresh single-sequence evaluation of the same text (not bit-exact: statistical)."""
    prefix, cont = engine.tokenize(PROMPT), engine.tokenize(HUMAN)
    (tokens,) = engine.read(prefix, [cont], 5)
    full = engine._with_bos(prefix + cont)
    start = len(full) - len(cont) - 1
    rows = log_softmax_rows(engine.reference_logits(full, range(start, len(full) - 1)))
    expected = rows[np.arange(len(cont)), cont]
    assert np.median(np.abs(tokens.logprobs - expected)) < 0.05
    top1 = rows.argmax(axis=1)
    assert np.mean(tokens.top_ids[:, 0] == top1) > 0.8


def test_plan_reads_a_path_of_human_text_as_one_continuation(
    engine: Engine, tmp_path: Path
) -> None:
    loom, a, b = human_loom(tmp_path / "h.loom", engine)
    with loom:
        assert all(needs_reading(n) for n in loom.path_nodes(b))
        plan = plan_scoring(loom, engine, node_ids_in_scope(loom, b), top_logprobs=3)
        assert plan.n_nodes == 3
        ((context, pieces),) = plan.groups
        assert context == [] and len(pieces) == 1  # after BOS alone, root..b in one sequence
        run = run_scoring(engine, plan)
        assert [i for i, _t in run.readings] == [loom.root_id, a, b]
        assert run.n_tokens == plan.n_tokens > 0 and not run.unaligned
        # the path read at once equals the path read node by node after its context
        (again,) = engine.read(engine.tokenize(PROMPT), [engine.tokenize(HUMAN)], 3)
        read_a = dict(run.readings)[a]
        assert read_a.ids.tolist() == again.ids.tolist()
        assert np.median(np.abs(read_a.logprobs - again.logprobs)) < 0.05
        seq = loom.add_scores(run.model, run.model_sha256, run.readings)
        assert seq is not None and loom.events()[-1].kind == ev.SCORE
        node = loom.node(a)
        assert reading_by(node, str(engine.info.name)) is not None
        shown, reading = shown_tokens(node, str(engine.info.name))
        assert reading is not None and not np.isnan(shown.logprobs).any()
        # read once, nothing is left to read; `again` reads it anyway
        assert plan_scoring(loom, engine, node_ids_in_scope(loom, None)).n_nodes == 0
        assert plan_scoring(loom, engine, [a], again=True).n_nodes == 1


def test_siblings_are_read_together_and_model_text_is_left_alone(
    engine: Engine, tmp_path: Path
) -> None:
    loom, a, _b = human_loom(tmp_path / "h.loom", engine)
    with loom:
        session = Session(loom, engine)
        session.save_scores(session.run_scoring(session.plan_scoring([loom.root_id])))
        (model_child,) = session.generate(loom.root_id, 1, SamplerSettings(max_tokens=4, seed=3))
        c = loom.add_child(loom.root_id, " A storm was coming.", author="human")
        plan = session.plan_scoring(node_ids_in_scope(loom, None), top_logprobs=2)
        assert model_child not in [n for _c, ps in plan.groups for p in ps for n in p.nodes]
        after_root = [ps for ctx, ps in plan.groups if ctx]
        assert len(after_root) == 1 and len(after_root[0]) == 2  # a..b and c: one batched call
        assert {p.nodes[0] for p in after_root[0]} == {a, c}
        run = session.run_scoring(plan)
        session.save_scores(run)
        assert session.plan_scoring(node_ids_in_scope(loom, None)).n_nodes == 0


def test_a_long_path_is_read_in_pieces_that_fit_the_context(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loom, _a, b = human_loom(tmp_path / "h.loom", engine)
    with loom:
        for _ in range(3):
            b = loom.add_child(b, MORE, author="human")
        monkeypatch.setattr(type(engine), "n_ctx", property(lambda self: 40))
        plan = plan_scoring(loom, engine, node_ids_in_scope(loom, b))
        pieces = [p for _c, ps in plan.groups for p in ps]
        assert len(pieces) > 1 and all(p.n_tokens <= 20 for p in pieces)
        # BOS + context + the piece fit the context: the context keeps its most recent tokens
        assert all(1 + len(ctx) + max(p.n_tokens for p in ps) <= 40 for ctx, ps in plan.groups)
        assert any(ctx for ctx, _ps in plan.groups)
        run = run_scoring(engine, plan)
        assert len(run.readings) == plan.n_nodes == 6


def test_the_store_keeps_readings_per_model_outside_undo(engine: Engine, tmp_path: Path) -> None:
    loom, a, _b = human_loom(tmp_path / "h.loom", engine)
    with loom:
        run = run_scoring(engine, plan_scoring(loom, engine, [a]))
        ((node_id, tokens),) = run.readings
        loom.add_scores("model A", "a" * 64, [(node_id, tokens)])
        other = TokenArray.concat([tokens])
        other.logprobs = other.logprobs - 1.0
        loom.add_scores("model B", "b" * 64, [(node_id, other)])
        node = loom.node(a)
        assert [s.model for s in node.scores] == ["model A", "model B"]
        assert shown_tokens(node, "model A")[1] is node.scores[0]
        assert shown_tokens(node, "elsewhere")[1] is node.scores[1]  # the newest otherwise
        # derived data: no undo step; the undo below undoes the add of b, not a reading
        last = loom.undo()
        assert last is not None and last.kind == ev.ADD
        assert len(loom.node(a).scores) == 2
        loom.redo()
        # an edit makes the readings stale (not shown); undoing the edit shows them again
        loom.edit(a, HUMAN + " Slowly.")
        assert loom.node(a).scores == [] and needs_reading(loom.node(a))
        loom.undo()
        assert len(loom.node(a).scores) == 2
        # a deleted subtree takes its readings along, and its undo brings them back
        loom.delete_subtree(a)
        loom.undo()
        assert len(loom.node(a).scores) == 2
        with pytest.raises(InvalidEditError, match="does not spell"):
            loom.add_scores("model A", "", [(a, engine.tokens_for("something else"))])
        for version in (1, 2):
            out = tmp_path / f"h{version}.json"
            write_document(loom.to_document(), "loom-json", out, version=version)
            doc = read_document(out)
            (copy,) = [n for n in doc.nodes if n.id == a]
            assert [s.model for s in copy.scores] == ["model A", "model B"]
            assert np.array_equal(copy.scores[1].tokens.logprobs, other.logprobs)
            with Loom.from_document(tmp_path / f"back{version}.loom", doc) as back:
                kept = back.node(a).scores
                assert [s.model_sha256 for s in kept] == ["a" * 64, "b" * 64]
                assert np.array_equal(kept[0].tokens.top_ids, tokens.top_ids)
                assert back.events()[-1].kind in (ev.IMPORT, ev.IMPORT_NODES)
        for fmt in ("openloom", "socketteer"):
            out = tmp_path / f"h.{fmt}.json"
            write_document(loom.to_document(), fmt, out)
            (copy,) = [n for n in read_document(out).nodes if n.text == HUMAN]
            assert [s.model for s in copy.scores] == ["model A", "model B"], fmt
            assert np.array_equal(copy.scores[0].tokens.top_logprobs, tokens.top_logprobs)
        page = tmp_path / "h.html"
        write_document(loom.to_document(), "html", page)
        assert page.read_text().count('"rb":"model B"') == 1  # the node's shown reading


def test_an_old_file_migrates_and_keeps_readings(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "old.loom"
    shutil.copyfile(OLD, path)
    with Loom.open(path) as loom:
        root = loom.node(loom.root_id)
        reading = engine.tokens_for(root.text)
        reading.logprobs = np.full(len(reading), -1.5, dtype=np.float32)
        loom.add_scores("m", "", [(root.id, reading)])
    with Loom.open(path, readonly=True) as loom:
        (score,) = loom.node(loom.root_id).scores
        assert math.isclose(float(score.tokens.logprobs.mean()), -1.5)


def test_personas_take_a_readings_logprobs_as_the_null(engine: Engine, tmp_path: Path) -> None:
    """Persona evidence for hand-written text: the model's reading of it is the bare-context
    likelihood the PMI compares against, so labelling it needs one engine call fewer."""
    loom, a, _b = human_loom(tmp_path / "h.loom", engine)
    personas = PersonaSet(personas=[
        Persona("keeper", "A lighthouse keeper writes in her diary.", "green", 0.5),
        Persona("pirate", "A pirate boasts about his plunder.", "red", 0.5),
    ])  # fmt: skip
    with loom:
        unread = plan_labels(loom, engine, personas, [a])
        run = run_scoring(engine, plan_scoring(loom, engine, [a]))
        loom.add_scores(run.model, run.model_sha256, run.readings)
        read = plan_labels(loom, engine, personas, [a])
    assert read.engine_calls == unread.engine_calls - 1
    before, after = unread.scores[a], read.scores[a]
    assert after.evidence and all(math.isfinite(v) for v in after.pmi.values())
    for name in ("keeper", "pirate"):  # the same quantity, up to the batch's rounding
        assert abs(after.pmi[name] - before.pmi[name]) < 0.15
