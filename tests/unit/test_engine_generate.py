"""The batched engine on the real default model (Gemma 3 270M base).

Batched decoding is not bit-exact against single-sequence evaluation (DESIGN.md §4: about 0.05-0.1
nats median on this model), so probabilities are compared statistically and token ids are compared
exactly only where the same computation is repeated or the continuation is decisive.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
from support.engines import default_gguf, engine

from loom.engine.engine import Engine
from loom.engine.logits import Analyzer, log_softmax_rows
from loom.engine.results import Branch, StepUpdate
from loom.engine.sampling import SamplerSettings

__all__ = ["default_gguf", "engine"]

pytestmark = pytest.mark.model

STORY = "Once upon a time, in a small village by the sea, there lived an old fisherman who"
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"
ALPHABET = "A B C D E F G H I J"
DAYS = "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday, Monday, Tuesday,"


def _reference_logprobs(eng: Engine, prefix: list[int], branch: Branch) -> np.ndarray:
    """Each branch token's logprob from a single-sequence evaluation of prefix + branch."""
    full = eng._with_bos(prefix) + [int(t) for t in branch.tokens.ids]
    start = len(full) - len(branch.tokens) - 1
    rows = eng.reference_logits(full, range(start, len(full) - 1))
    lp = log_softmax_rows(rows)
    return np.asarray([lp[i, int(t)] for i, t in enumerate(branch.tokens.ids)])


@pytest.fixture(scope="module")
def story(engine: Engine) -> list[int]:
    return engine.tokenize(STORY)


@pytest.fixture(scope="module")
def sampled(engine: Engine, story: list[int]) -> list[Branch]:
    return engine.generate(story, 4, SamplerSettings(temperature=1.0, max_tokens=24, seed=11))


def test_branches_have_the_promised_shape(engine: Engine, sampled: list[Branch]) -> None:
    assert [b.index for b in sampled] == [0, 1, 2, 3]
    assert all(b.seed == 11 for b in sampled)
    for b in sampled:
        t = b.tokens
        assert b.finish_reason in ("length", "eos")
        assert len(t) == 24 or b.finish_reason == "eos"
        assert t.k == 5
        assert t.text == b.text == engine.detokenize(list(t.ids))
        assert t.entropy is not None and np.all(t.entropy >= 0)
        assert set(np.unique(t.top_ids).tolist()) <= set(t.top_texts)
    assert len({tuple(b.tokens.ids) for b in sampled}) > 1  # branches explore different paths


def test_logprobs_agree_with_single_sequence_evaluation(
    engine: Engine, story: list[int], sampled: list[Branch]
) -> None:
    diffs = np.concatenate(
        [np.abs(_reference_logprobs(engine, story, b) - b.tokens.logprobs) for b in sampled]
    )
    assert np.median(diffs) < 0.2
    assert np.mean(diffs < 0.5) > 0.9


def test_top_k_is_sorted_and_truly_the_most_likely(
    engine: Engine, story: list[int], sampled: list[Branch]
) -> None:
    b = sampled[0]
    t = b.tokens
    assert np.all(np.diff(t.top_logprobs, axis=1) <= 0)
    assert np.all(t.logprobs <= t.top_logprobs[:, 0] + 1e-5)  # chosen ≤ top-1
    # the first token is sampled from the prompt's own row; compare a few positions with a
    # full-vocabulary sort of the reference logits
    full = engine._with_bos(story) + [int(x) for x in t.ids]
    positions = [0, 7, 15]
    rows = engine.reference_logits(full, [len(full) - len(t) - 1 + p for p in positions])
    ref_lp = log_softmax_rows(rows)
    for r, p in enumerate(positions):
        order = np.argsort(-rows[r], kind="stable")
        assert (
            int(t.top_ids[p, 0]) == int(order[0]) or ref_lp[r, order[0]] - ref_lp[r, order[1]] < 0.3
        )
        assert set(t.top_ids[p].tolist()) <= set(order[:8].tolist())
        assert np.allclose(t.top_logprobs[p], ref_lp[r, t.top_ids[p]], atol=0.5)
        # exactness of the top-k routine itself on real logits (262k columns)
        stats = Analyzer().analyze(rows[r : r + 1], 5)
        assert np.array_equal(stats.top_ids[0], order[:5])


def test_greedy_takes_the_top_token(engine: Engine, story: list[int]) -> None:
    (b,) = engine.generate(story, 1, SamplerSettings(temperature=0, max_tokens=12))
    assert np.array_equal(b.tokens.ids, b.tokens.top_ids[:, 0])
    assert np.allclose(b.tokens.logprobs, b.tokens.top_logprobs[:, 0])


def test_fixed_seed_reproduces_exactly_from_a_freshly_decoded_prompt(
    engine: Engine, story: list[int]
) -> None:
    """The guarantee: a prompt decoded from an empty cache gives the same numbers every time."""
    s = SamplerSettings(temperature=0.9, top_p=0.95, max_tokens=20, seed=1234)
    engine.clear_cache()
    first = engine.generate(story, 3, s)
    engine.clear_cache()
    third = engine.generate(story, 3, s)
    for a, c in zip(first, third, strict=True):
        assert a.cached_prefix == c.cached_prefix == 0
        assert a.from_empty_cache and c.from_empty_cache
        assert np.array_equal(a.tokens.ids, c.tokens.ids)
        assert np.array_equal(a.tokens.logprobs, c.tokens.logprobs)


def test_a_cached_prompt_is_recorded_and_close_to_a_fresh_decode(
    engine: Engine, story: list[int]
) -> None:
    """Not guaranteed bit-exact (it differs in the last bits on AVX-512 CPUs): the branch says how
    much came from the cache, and the first position's distribution agrees within rounding."""
    s = SamplerSettings(temperature=0.9, top_p=0.95, max_tokens=20, seed=1234)
    engine.clear_cache()
    fresh = engine.generate(story, 3, s)
    cached = engine.generate(story, 3, s)  # the prompt is found in the cache this time
    prompt = len(story) + (engine.bos_id is not None)
    for a, b in zip(fresh, cached, strict=True):
        assert a.cached_prefix == 0 and a.from_empty_cache and b.from_empty_cache is False
        assert b.cached_prefix is not None and prompt - 4 <= b.cached_prefix < prompt
        assert b.cached_prefix % 4 == 0  # re-decoded from an aligned position
        assert abs(float(a.tokens.logprobs[0]) - float(b.tokens.logprobs[0])) < 0.3
        assert len(set(a.tokens.top_ids[0]) & set(b.tokens.top_ids[0])) >= 4


def test_different_seeds_differ(engine: Engine, story: list[int]) -> None:
    a = engine.generate(story, 2, SamplerSettings(max_tokens=16, seed=1))
    b = engine.generate(story, 2, SamplerSettings(max_tokens=16, seed=2))
    assert [list(x.tokens.ids) for x in a] != [list(x.tokens.ids) for x in b]
    unseeded = engine.generate(story, 1, SamplerSettings(max_tokens=4))
    assert isinstance(unseeded[0].seed, int)


def test_streaming_reports_every_token(engine: Engine, story: list[int]) -> None:
    updates: list[StepUpdate] = []
    branches = engine.generate(
        story, 3, SamplerSettings(max_tokens=10, seed=5), on_step=updates.append
    )
    assert [u.step for u in updates] == list(range(len(updates)))
    for b in branches:
        streamed = [(tok, lp) for u in updates for (i, tok, _, lp) in u.new if i == b.index]
        assert [tok for tok, _ in streamed] == list(b.tokens.ids)
        assert np.allclose([lp for _, lp in streamed], b.tokens.logprobs)
        assert "".join(txt for u in updates for (i, _, txt, _) in u.new if i == b.index) == b.text
    assert all(len(u.new) <= 3 for u in updates)  # one token per live branch per step


def test_cancel_keeps_partial_tokens(engine: Engine, story: list[int]) -> None:
    cancel = threading.Event()

    def stop_after_three(update: StepUpdate) -> None:
        if update.step == 2:
            cancel.set()

    branches = engine.generate(
        story, 2, SamplerSettings(max_tokens=50, seed=3), on_step=stop_after_three, cancel=cancel
    )
    for b in branches:
        assert b.finish_reason == "cancelled"
        assert len(b.tokens) == 3
        assert b.text == b.tokens.text and b.text
    cancel_before = threading.Event()
    cancel_before.set()
    (early,) = engine.generate(story, 1, SamplerSettings(max_tokens=5), cancel=cancel_before)
    assert early.finish_reason == "cancelled" and len(early.tokens) == 0


def test_counterfactual_branches_start_with_the_forced_tokens(
    engine: Engine, story: list[int]
) -> None:
    forced = engine.tokenize(" never")
    branches = engine.generate(
        story, 3, SamplerSettings(max_tokens=8, seed=9), forced=forced, top_logprobs=4
    )
    ref = engine.reference_logits(engine._with_bos(story), [len(story)])
    expected = float(log_softmax_rows(ref)[0, forced[0]])
    for b in branches:
        assert list(b.tokens.ids[: len(forced)]) == forced
        assert b.n_forced == len(forced)
        assert b.text.startswith(" never")
        assert len(b.tokens) == len(forced) + 8
        assert b.tokens.top_ids.shape == (len(b.tokens), 4)
        assert abs(float(b.tokens.logprobs[0]) - expected) < 0.2  # from the model, not sampled
        assert b.tokens.logprobs[0] <= b.tokens.top_logprobs[0, 0] + 1e-5


def test_score_matches_generation(engine: Engine, story: list[int], sampled: list[Branch]) -> None:
    scores = engine.score(story, [list(b.tokens.ids) for b in sampled] + [[], [496]])
    assert len(scores) == len(sampled) + 2
    assert scores[-2].shape == (0,)
    diffs = np.concatenate(
        [np.abs(s - b.tokens.logprobs) for s, b in zip(scores, sampled, strict=False)]
    )
    assert np.median(diffs) < 0.2
    # score reads like a single-sequence prefill: it matches the reference evaluator closely
    ref = _reference_logprobs(engine, story, sampled[1])
    assert np.median(np.abs(scores[1] - ref)) < 0.05
    first = engine.reference_logits(engine._with_bos(story), [len(story)])
    assert abs(float(scores[-1][0]) - float(log_softmax_rows(first)[0, 496])) < 0.2


def test_score_many_continuations_in_groups(engine: Engine, story: list[int]) -> None:
    words = [" fish", " boat", " net", " sea", " wave", " gull", " storm", " sail", " rope"]
    conts = [engine.tokenize(w + " and the" + w) for w in words] * 2  # 18 > n_seq_max - 1
    scores = engine.score(story, conts)
    assert all(len(s) == len(c) for s, c in zip(scores, conts, strict=True))
    # the same continuations scored in another group (another batch composition): close, not equal
    again = np.abs(np.concatenate(scores[:9]) - np.concatenate(scores[9:]))
    assert np.median(again) < 0.05 and again.max() < 1.0
    assert all(np.all(s < 0) for s in scores)


def test_stop_strings_trim_the_text(engine: Engine) -> None:
    prompt = engine.tokenize("Shopping list:\n- apples\n- bread\n- milk\n-")
    (b,) = engine.generate(prompt, 1, SamplerSettings(temperature=0, max_tokens=30, stop=["\n"]))
    assert b.finish_reason == "stop" and b.stop == "\n"
    assert "\n" not in b.text and b.text
    assert b.tokens.text.startswith(b.text)
    assert len(b.tokens) < 30
    (free,) = engine.generate(
        prompt, 1, SamplerSettings(temperature=0, max_tokens=len(b.tokens) + 3)
    )
    assert "\n" in free.text and free.text.startswith(b.text)


def test_eos_ends_a_branch(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    prompt = engine.tokenize("Shopping list: apples, bread, milk, eggs,")
    s = SamplerSettings(temperature=0, max_tokens=8)
    (free,) = engine.generate(prompt, 1, s)
    assert engine.eos_id is not None and engine.eos_id not in free.tokens.ids.tolist()
    # make the model's third greedy token an end-of-generation token: the branch must stop
    # right before it, without it, and say "eos"
    stop_id = int(free.tokens.ids[2])
    first = free.tokens.ids.tolist().index(stop_id)
    real = engine.runtime.is_eog
    monkeypatch.setattr(engine.runtime, "is_eog", lambda t: t == stop_id or real(t))
    (b,) = engine.generate(prompt, 1, s)
    assert b.finish_reason == "eos"
    assert b.tokens.ids.tolist() == free.tokens.ids.tolist()[:first]
    assert real(engine.eos_id)


def test_context_overflow_is_one_line(engine: Engine) -> None:
    too_long = engine.tokenize(" word" * (engine.n_ctx + 10))
    from loom.engine.errors import ContextOverflowError

    with pytest.raises(ContextOverflowError) as err:
        engine.generate(too_long, 2, SamplerSettings(max_tokens=4))
    assert err.value.n_tokens == len(too_long) + 1 and err.value.n_ctx == engine.n_ctx
    assert str(engine.n_ctx) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ContextOverflowError):
        engine.score(too_long, [[496]])
    kept = engine.keep_recent(too_long, reserve=64)
    assert kept == too_long[-len(kept) :]
    assert len(kept) + 1 + 64 == engine.n_ctx
    (b,) = engine.generate(kept[-200:], 1, SamplerSettings(max_tokens=2, seed=0))
    assert len(b.tokens) == 2


def test_tokens_and_texts(engine: Engine) -> None:
    text = "Bob said: “croissants!” — café ☕ 🥐"
    ids = engine.tokenize(text)
    texts = engine.token_texts(ids)
    assert "".join(texts) == text
    arr = engine.tokens_for(text)
    assert list(arr.ids) == ids and arr.text == text and np.all(np.isnan(arr.logprobs))
    assert engine.tokenize(text, add_bos=True) == [engine.bos_id, *ids]
    # a character split over byte tokens goes to the token that completes it
    croissant = [i for i in ids if engine.token_texts([i]) != [engine.piece_text(i)]]
    for i in croissant:
        assert "\\x" in engine.piece_text(i)


def test_concurrent_calls_serialise(engine: Engine, story: list[int]) -> None:
    results: dict[int, list[Branch]] = {}
    s = SamplerSettings(temperature=0, max_tokens=6)

    def run(k: int) -> None:
        results[k] = engine.generate(story, 2, s)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [[list(b.tokens.ids) for b in results[k]] for k in range(3)]
    assert ids[0] == ids[1] == ids[2]


@pytest.fixture(scope="module")
def fresh_engine(default_gguf: object) -> Iterator[Engine]:
    eng = Engine.load(default_gguf, n_ctx=2048, n_seq_max=16)  # type: ignore[arg-type]
    yield eng
    eng.close()


def test_kv_cache_never_changes_results(engine: Engine, fresh_engine: Engine) -> None:
    """Jumping around the tree (cache hits, partial reuse, evictions, holes in the KV cells) gives
    what a fresh engine with an empty cache gives for the same request: the same tokens where the
    model is decisive, logprobs within the batching noise."""
    # decisive continuations: batching noise (~0.05 nats) cannot flip them, a wrong KV reuse would
    prompts = [engine.tokenize(p) for p in (COUNTING, ALPHABET, DAYS)]
    greedy = SamplerSettings(temperature=0, max_tokens=6)
    seeded = SamplerSettings(temperature=0.2, max_tokens=6, seed=77)

    def fresh(prefix: list[int], s: SamplerSettings) -> list[Branch]:
        fresh_engine.clear_cache()
        return fresh_engine.generate(prefix, 4, s)

    def same(got: list[Branch], want: list[Branch]) -> None:
        assert [list(b.tokens.ids) for b in got] == [list(b.tokens.ids) for b in want]
        diffs = np.abs(np.concatenate([b.tokens.logprobs for b in got])
                       - np.concatenate([b.tokens.logprobs for b in want]))  # fmt: skip
        assert np.median(diffs) < 0.05

    # wander: several prefixes, more sequences than slots (evictions), then come back
    for p in [*prompts, prompts[0]]:
        for s in (greedy, seeded):
            same(engine.generate(p, 4, s), fresh(p, s))
    # a child of a generated node: its parent path is resident, partly decoded step by step
    counting = prompts[0]
    (parent,) = engine.generate(counting, 1, greedy)
    child = counting + list(parent.tokens.ids)
    got = engine.generate(child, 4, greedy)
    same(got, fresh(child, greedy))
    assert "13" in parent.text and "15" in got[0].text
    assert [engine.bos_id, *child] in [r[: len(child) + 1] for r in engine.resident_prefixes()]


def test_vocab_only_tokenizer_matches_the_engine(engine: Engine, default_gguf: object) -> None:
    from loom.engine.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(default_gguf)  # type: ignore[arg-type]
    text = "The croissant debate began. “No,” said Bob — 🥐"
    ours, theirs = tokenizer.tokenize(text), engine.tokens_for(text)
    assert list(ours.ids) == list(theirs.ids) and ours.texts == theirs.texts
    assert ours.text == text
    tokenizer.close()
