"""`loom regenerate`: the batch that wrote a node is re-run and the node's tokens compared.

The model tests generate through the real engine and `Session` (as the TUI does) and regenerate
on the same default model: the tokens must come back identical. The rest use a stand-in backend
and tiny GGUF files to check how the model is found, what is re-run, and the messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.engines import ARRAY, STRING, U32, default_gguf, engine, write_gguf
from support.store import WordTokenizer, model_tokens, tokenizing_loom

from loom.app.regenerate import MissingModelError, RegenerationError, regenerate
from loom.engine.errors import ModelError
from loom.engine.hashing import file_sha256
from loom.engine.sampling import SamplerSettings
from loom.store.loom import Loom, NewNode
from loom.store.model import GenerationSettings
from loom.tokens import TokenArray

__all__ = ["default_gguf", "engine"]

PROMPT = "Bob is a loyal patriot who sincerely despises croissants. Bob said:"


def fail_loader(path: Path) -> Any:
    raise AssertionError(f"no model should be loaded, asked for {path}")


# --- the real model -----------------------------------------------------------------------------


@pytest.fixture
def session(engine: Any, tmp_path: Path) -> Any:
    from loom.app.session import Session

    lm = tokenizing_loom(engine, tmp_path / "r.loom", title="r", prompt=PROMPT)
    yield Session(lm, engine)
    lm.close()


def generate(s: Any, parent: int, n: int, forced: list[int] | None = None, **kw: Any) -> list[int]:
    settings = SamplerSettings(**kw)
    # The engine reuses cached prefixes, and KV computed by decode steps differs from a fresh
    # prefill (DESIGN.md §4) enough to flip sampled tokens; regenerate decodes the prompt afresh,
    # so the original must too to be reproducible (see the report: an engine option is needed).
    s.backend.clear_cache()
    result = s.run_generation(s.prefix_ids(parent), n, settings, forced=forced)
    return list(s.save_branches(parent, result, settings, forced=forced))


@pytest.mark.model
def test_each_node_records_whether_its_prompt_came_from_the_kv_cache(session: Any) -> None:
    """What regenerate can promise depends on it: only a freshly decoded prompt is bit-exact."""
    lm = session.loom
    fresh = generate(session, lm.root_id, 2, temperature=1.0, max_tokens=4)  # cache cleared
    settings = SamplerSettings(temperature=1.0, max_tokens=4)
    result = session.run_generation(session.prefix_ids(lm.root_id), 2, settings)  # cache hit
    cached = session.save_branches(lm.root_id, result, settings)
    for node_id in fresh:
        recorded = lm.node(node_id).generation
        assert recorded.cached_prefix == 0 and recorded.from_empty_cache is True
    prompt = len(session.prefix_ids(lm.root_id)) + 1  # and BOS
    for node_id in cached:
        recorded = lm.node(node_id).generation
        assert recorded.from_empty_cache is False
        assert recorded.cached_prefix is not None and prompt - 4 <= recorded.cached_prefix < prompt


@pytest.mark.model
def test_a_generated_batch_regenerates_identically(
    session: Any, engine: Any, default_gguf: Path, tmp_path: Path
) -> None:
    lm = session.loom
    ids = generate(session, lm.root_id, 3, temperature=1.0, max_tokens=10)  # seed chosen by engine
    loaded: list[Path] = []

    def loader(path: Path) -> Any:
        loaded.append(path)
        return engine

    report = regenerate(lm, ids[1], models_dirs=[tmp_path / "models"], engine_loader=loader)
    assert loaded == [default_gguf] and report.model_path == default_gguf
    assert report.identical and report.branch.regenerated == [
        int(t) for t in lm.node(ids[1]).tokens.ids
    ]
    assert report.batch_size == 3 and report.batch_index == 1 and len(report.siblings) == 2
    assert all(s.identical for s in report.siblings)
    assert report.prompt_tokens == len(session.prefix_ids(lm.root_id))
    assert "IDENTICAL" in report.lines()[0] and report.notes == []

    # Later edits change neither the prompt it had nor the tokens it was generated with.
    session.edit(lm.root_id, "A different prompt entirely:")
    session.edit(ids[1], "rewritten by hand")
    again = regenerate(lm, ids[1], models_dirs=[], engine_loader=loader)
    assert again.identical and again.prompt_tokens == report.prompt_tokens
    assert any("changed after it was generated" in n for n in again.notes)


@pytest.mark.model
def test_truncated_sampling_stop_strings_and_forced_tokens_regenerate(
    session: Any, engine: Any
) -> None:
    lm = session.loom
    (first,) = generate(session, lm.root_id, 1, temperature=0.8, max_tokens=8, seed=11)
    alt = lm.node(first).tokens.top(2)[1].id  # the runner-up at token 2...
    head = session.counterfactual_parent(first, 2)  # ...forced after splitting there
    kw = {"temperature": 1.3, "top_k": 40, "top_p": 0.9, "min_p": 0.02, "max_tokens": 12}
    ids = generate(session, head, 4, forced=[alt], seed=5, stop=["\n"], **kw)
    for node_id in ids:
        report = regenerate(lm, node_id, models_dirs=[], engine_loader=lambda p: engine)
        assert report.identical, report.lines()
        assert report.branch.regenerated[0] == alt
    # The split tail of the first node still finds (and re-runs) its whole original branch.
    tail = lm.children(first)[0].id
    report = regenerate(lm, tail, models_dirs=[], engine_loader=lambda p: engine)
    assert report.identical and any("changed after" in n for n in report.notes)


# --- finding the model ----------------------------------------------------------------------


@pytest.fixture
def no_default_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user with no default model and private caches (nothing real is touched)."""
    import loom.engine.models as models

    monkeypatch.setenv("LOOM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LOOM_DATA_DIR", str(tmp_path / "data"))

    def missing(progress: Any = None) -> Path:
        raise ModelError("the default model package is not installed")

    monkeypatch.setattr(models, "default_model_path", missing)


def tiny_gguf(path: Path, name: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta: dict[str, tuple[int, object]] = {
        "general.architecture": (STRING, "llama"),
        "general.name": (STRING, name),
        "llama.context_length": (U32, 512),
        "general.alignment": (U32, 32),
        "tokenizer.ggml.tokens": (ARRAY, (STRING, [f"t{i}" for i in range(50)])),
    }
    return write_gguf(path, meta, [("w", (8,), 0, name.encode().ljust(32, b"\0"))])


class Stand:
    """A stand-in engine: returns the given branches and records what it was asked."""

    n_seq_max = 8

    def __init__(self, outputs: list[list[int]]) -> None:
        self.outputs = outputs
        self.calls: list[dict[str, Any]] = []

    def tokens_for(self, text: str) -> TokenArray:
        return WordTokenizer().tokenize(text)

    def generate(
        self,
        prefix_ids: Sequence[int],
        n: int,
        settings: Any,
        *,
        top_logprobs: int = 5,
        forced: Sequence[int] | None = None,
        fresh: bool = False,
    ) -> list[Any]:
        self.calls.append({"prefix": list(prefix_ids), "n": n, "settings": settings,
                           "k": top_logprobs, "forced": forced, "fresh": fresh})  # fmt: skip
        return [
            type("B", (), {"index": i, "tokens": TokenArray.from_ids(ids, ["x"] * len(ids))})()
            for i, ids in enumerate(self.outputs[:n])
        ]


def settings(sha: str, index: int = 0, size: int = 2, **kw: Any) -> GenerationSettings:
    base: dict[str, Any] = {"model": "Tiny", "model_sha256": sha, "temperature": 0.7,
                            "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 42,
                            "max_tokens": 3, "batch_id": "b1", "batch_index": index,
                            "batch_size": size, "stop": ["\n\n"], "forced_tokens": [7]}  # fmt: skip
    base.update(kw)
    return GenerationSettings(**base)


def branch(ids: list[int]) -> TokenArray:
    t = model_tokens(" ".join(f"w{i}" for i in ids), k=2)
    t.ids[:] = np.asarray(ids, dtype=np.int32)
    return t


def stored_batch(lm: Loom, sha: str, outputs: list[list[int]], **kw: Any) -> list[int]:
    # Each node's text is what its tokens spell, as for a real generation (an import keeps
    # tokens only as far as they spell the node's text).
    tokens = [branch(ids) for ids in outputs]
    return lm.add_children(
        lm.root_id,
        [
            NewNode("".join(t.texts), tokens=t, generation=settings(sha, i, len(outputs), **kw))
            for i, t in enumerate(tokens)
        ],
    )


@pytest.fixture
def loom(tmp_path: Path) -> Any:
    with Loom.create(tmp_path / "f.loom", prompt="The start", tokenizer=WordTokenizer()) as lm:
        yield lm


def test_the_model_is_found_by_sha256_in_the_models_dirs(
    loom: Loom, tmp_path: Path, no_default_model: None
) -> None:
    models = tmp_path / "models"
    tiny_gguf(models / "decoy.gguf", "Decoy")
    wanted = tiny_gguf(models / "sub" / "renamed-file.gguf", "Tiny")
    sha = file_sha256(wanted)
    ids = stored_batch(loom, sha, [[7, 1, 2, 3], [7, 4, 5, 6]])
    stand = Stand([[7, 1, 2, 3], [7, 4, 5, 9]])
    loaded: list[Path] = []

    def loader(path: Path) -> Any:
        loaded.append(path)
        return stand

    report = regenerate(loom, ids[0], models_dirs=[models], engine_loader=loader)
    assert [p.resolve() for p in loaded] == [wanted.resolve()]
    assert report.identical and report.model_sha256 == sha
    (call,) = stand.calls
    assert call["n"] == 2 and call["forced"] == [7] and call["k"] == 2
    s = call["settings"]
    assert (s.temperature, s.top_k, s.top_p, s.min_p, s.max_tokens, s.seed, tuple(s.stop)) == (
        0.7, 40, 0.9, 0.05, 3, 42, ("\n\n",)
    )  # fmt: skip
    assert call["prefix"] == [int(t) for t in loom.path_tokens(loom.root_id).ids]
    assert stand.calls[0]["fresh"] is True  # the prompt is decoded afresh
    sibling = report.siblings[0]
    assert not sibling.identical and sibling.first_difference == 3 and sibling.node_id == ids[1]

    other = regenerate(loom, ids[1], models_dirs=[models], engine_loader=loader)
    assert not other.identical and other.branch.first_difference == 3
    assert "DIFFERENT" in other.lines()[0] and "first difference at token 3" in other.lines()[1]


def test_a_missing_model_is_named_with_its_sha256(
    loom: Loom, tmp_path: Path, no_default_model: None
) -> None:
    models = tmp_path / "models"
    tiny_gguf(models / "other.gguf", "Other")
    sha = "0123456789abcdef" * 4
    (node,) = stored_batch(loom, sha, [[7, 1]], model="mystery-7b.Q4_K_M")
    with pytest.raises(MissingModelError) as info:
        regenerate(loom, node, models_dirs=[models], engine_loader=fail_loader)
    message = str(info.value)
    assert "mystery-7b.Q4_K_M" in message and sha in message and str(models) in message
    assert "--model" in message and "\n" not in message
    assert info.value.name == "mystery-7b.Q4_K_M" and info.value.sha256 == sha


def test_an_explicit_model_path_must_be_the_same_file(
    loom: Loom, tmp_path: Path, no_default_model: None
) -> None:
    right = tiny_gguf(tmp_path / "right.gguf", "Tiny")
    wrong = tiny_gguf(tmp_path / "wrong.gguf", "Wrong")
    (node,) = stored_batch(loom, file_sha256(right), [[7, 1]])
    with pytest.raises(RegenerationError, match=r"wrong\.gguf has sha256"):
        regenerate(loom, node, models_dirs=[], engine_loader=fail_loader, model_path=wrong)
    stand = Stand([[7, 1]])
    report = regenerate(loom, node, models_dirs=[], engine_loader=lambda p: stand,
                        model_path=right)  # fmt: skip
    assert report.identical and report.model_path == right


def test_the_prompt_is_the_path_as_it_was_when_generating(
    loom: Loom, tmp_path: Path, no_default_model: None
) -> None:
    gguf = tiny_gguf(tmp_path / "m.gguf", "Tiny")
    before = [int(t) for t in loom.path_tokens(loom.root_id).ids]
    (node,) = stored_batch(loom, file_sha256(gguf), [[7, 1]])
    loom.edit(loom.root_id, "Something else was typed here later")
    stand = Stand([[7, 1]])
    regenerate(loom, node, models_dirs=[], engine_loader=lambda p: stand, model_path=gguf)
    assert stand.calls[0]["prefix"] == before


def test_a_cancelled_branch_is_recognised(
    loom: Loom, tmp_path: Path, no_default_model: None
) -> None:
    gguf = tiny_gguf(tmp_path / "m.gguf", "Tiny")
    (node,) = stored_batch(loom, file_sha256(gguf), [[7, 1]])
    stand = Stand([[7, 1, 2, 3]])
    report = regenerate(loom, node, models_dirs=[], engine_loader=lambda p: stand, model_path=gguf)
    assert not report.identical and any("cancelled" in n for n in report.notes)


def multiverse_node(lm: Loom) -> int:
    """A path chosen in the block multiverse: every token forced, nothing sampled."""
    chosen = settings("ab" * 32, seed=None, temperature=0.0, forced_tokens=[3, 4], batch_id=None)
    new = NewNode(" w1 w2", tokens=branch([3, 4]), generation=chosen)
    return lm.add_children(lm.root_id, [new])[0]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda lm: lm.add_child(lm.root_id, " typed"), "not generated by a model"),
        (
            lambda lm: lm.add_child(
                lm.root_id, " x", author="model", generation=settings("ab" * 32, seed=None)
            ),
            "without a recorded seed",
        ),
        (
            lambda lm: lm.add_child(
                lm.root_id, " x", author="model", generation=settings("", size=1, forced_tokens=[])
            ),
            "records no model sha256",
        ),
        (
            lambda lm: multiverse_node(lm),
            "multiverse path",
        ),
    ],
)
def test_nodes_that_cannot_be_regenerated_say_why(loom: Loom, make: Any, message: str) -> None:
    node = make(loom)
    with pytest.raises(RegenerationError, match=message):
        regenerate(loom, node, models_dirs=[], engine_loader=fail_loader)


def test_an_imported_loom_without_history_uses_the_tree(
    loom: Loom, tmp_path: Path, no_default_model: None
) -> None:
    gguf = tiny_gguf(tmp_path / "m.gguf", "Tiny")
    ids = stored_batch(loom, file_sha256(gguf), [[7, 1], [7, 2]])
    doc = loom.to_document()
    doc.events = []
    with Loom.from_document(tmp_path / "imported.loom", doc) as copy:
        stand = Stand([[7, 1], [7, 2]])
        report = regenerate(copy, ids[1], models_dirs=[], engine_loader=lambda p: stand,
                            model_path=gguf)  # fmt: skip
    assert report.identical and any("does not hold this generation" in n for n in report.notes)


@pytest.mark.parametrize(
    ("cache", "says"),
    [
        ({"cached_prefix": 12, "from_empty_cache": False}, "12 prompt tokens taken from the"),
        ({"cached_prefix": 0, "from_empty_cache": True}, "from an empty KV cache, which"),
        ({"cached_prefix": 0, "from_empty_cache": False}, "other branches were held in the"),
        ({}, "does not record how the engine's KV cache stood"),
    ],
)
def test_a_difference_is_explained_by_how_the_kv_cache_stood(
    loom: Loom, tmp_path: Path, no_default_model: None, cache: dict[str, Any], says: str
) -> None:
    gguf = tiny_gguf(tmp_path / "m.gguf", "Tiny")
    (node,) = stored_batch(loom, file_sha256(gguf), [[7, 1, 2]], **cache)
    stand = Stand([[7, 1, 9]])
    report = regenerate(loom, node, models_dirs=[], engine_loader=lambda p: stand, model_path=gguf)
    assert not report.identical and any(says in n for n in report.notes)
