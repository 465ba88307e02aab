"""Every tree operation of `Loom`, its reads, and its refusals."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support.store import WordTokenizer, digest, model_tokens

from loom.store.errors import (
    InvalidEditError,
    LoomExistsError,
    ReadOnlyLoomError,
    TokensUnavailableError,
    UnknownNodeError,
)
from loom.store.loom import Loom, NewNode
from loom.store.model import GenerationSettings, Persona, PersonaLabel
from loom.tokens import TokenArray

PROMPT = "Bob sat down at the cafe."

GEN = GenerationSettings(
    model="toy.gguf",
    model_sha256="ab" * 32,
    temperature=0.8,
    top_p=0.95,
    top_k=40,
    min_p=0.05,
    seed=7,
    max_tokens=32,
    batch_id="b1",
    batch_index=0,
    batch_size=2,
)


@pytest.fixture
def loom(tmp_path: Path) -> Iterator[Loom]:
    with Loom.create(
        tmp_path / "t.loom", title="cafe", prompt=PROMPT, prompt_tokens=model_tokens(PROMPT)
    ) as lm:
        yield lm


def fts_in_sync(lm: Loom) -> None:
    assert lm.path is not None
    conn = sqlite3.connect(lm.path)
    try:
        conn.execute("INSERT INTO nodes_fts (nodes_fts) VALUES ('integrity-check')")
    finally:
        conn.close()


def test_create_makes_a_root_with_the_prompt_and_refuses_an_existing_path(tmp_path: Path) -> None:
    tokens = model_tokens(PROMPT, seed=3)
    with Loom.create(tmp_path / "a.loom", title="T", prompt=PROMPT, prompt_tokens=tokens) as lm:
        root = lm.node(lm.root_id)
        assert (root.text, root.parent, root.author, lm.title) == (PROMPT, None, "human", "T")
        assert digest(root.tokens) == digest(tokens)
        assert lm.current == lm.root_id
    before = (tmp_path / "a.loom").read_bytes()
    with pytest.raises(LoomExistsError):
        Loom.create(tmp_path / "a.loom")
    assert (tmp_path / "a.loom").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.loom"]


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "r.loom"
    with Loom.create(path, prompt="p") as lm:
        a = lm.add_child(lm.root_id, " one", tokens=model_tokens(" one"), generation=GEN)
        lm.set_current(a)
    with Loom.open(path) as lm:
        assert lm.current == a
        node = lm.node(a)
        assert node.generation == GEN and digest(node.tokens) == digest(model_tokens(" one"))


def test_add_child_and_children_in_creation_order(loom: Loom) -> None:
    r = loom.root_id
    a = loom.add_child(r, " He ordered", author="human")
    b, c = loom.add_children(
        r,
        [
            NewNode(" A croissant", tokens=model_tokens(" A croissant"), generation=GEN),
            NewNode(" Coffee", tokens=model_tokens(" Coffee", seed=2), generation=GEN),
        ],
    )
    kids = loom.children(r)
    assert [h.id for h in kids] == [a, b, c]
    assert [h.author for h in kids] == ["human", "model", "model"]
    assert all(h.depth == 1 and h.parent == r and h.n_children == 0 for h in kids)
    assert loom.header(r).n_children == 3
    assert len({a, b, c, r}) == 4


def test_add_children_is_one_transaction_and_one_undo_step(loom: Loom) -> None:
    ids = loom.add_children(loom.root_id, [NewNode(f" {i}") for i in range(8)])
    assert len(loom.children(loom.root_id)) == 8
    assert [e.kind for e in loom.events()][-1] == "add"
    loom.undo()
    assert loom.children(loom.root_id) == []
    assert all(i not in loom for i in ids)


def test_add_children_with_a_bad_node_adds_none(loom: Loom) -> None:
    with pytest.raises(InvalidEditError):
        loom.add_children(loom.root_id, [NewNode(" ok"), NewNode(" bad", author="alien")])  # type: ignore[arg-type]
    assert loom.children(loom.root_id) == []


def test_tokens_round_trip_exactly_with_nan_and_entropy(loom: Loom) -> None:
    tokens = model_tokens(" and then it rained", k=5, seed=9)
    tokens.logprobs[1] = np.nan
    tokens.top_logprobs[2, 4] = np.nan
    tokens.logprobs[3] = -0.0
    a = loom.add_child(loom.root_id, " and then it rained", author="model", tokens=tokens)
    got = loom.node(a).tokens
    assert got.texts == tokens.texts and got.top_texts == tokens.top_texts
    np.testing.assert_array_equal(got.ids, tokens.ids)
    np.testing.assert_array_equal(got.top_ids, tokens.top_ids)
    assert got.logprobs.tobytes() == tokens.logprobs.tobytes()
    assert got.top_logprobs.tobytes() == tokens.top_logprobs.tobytes()
    assert got.entropy is not None and tokens.entropy is not None
    assert got.entropy.tobytes() == tokens.entropy.tobytes()
    assert got.ids.dtype == np.int32 and got.logprobs.dtype == np.float32


def test_header_has_token_statistics_without_loading_tokens(loom: Loom) -> None:
    tokens = model_tokens(" one two three", seed=4)
    tokens.logprobs[0] = np.nan
    a = loom.add_child(loom.root_id, " one two three", author="model", tokens=tokens)
    h = loom.header(a)
    known = tokens.logprobs[~np.isnan(tokens.logprobs)].astype(np.float64)
    assert h.n_tokens == 3 and h.n_logprob == 2
    assert h.sum_logprob == pytest.approx(float(known.sum()))
    assert h.mean_logprob == pytest.approx(float(known.mean()))
    human = loom.add_child(loom.root_id, "x", tokens=TokenArray.from_ids([5], ["x"]))
    assert loom.header(human).mean_logprob is None


def test_siblings_ancestors_and_path(loom: Loom) -> None:
    r = loom.root_id
    a = loom.add_child(r, " a", tokens=model_tokens(" a"))
    b = loom.add_child(a, " b", tokens=model_tokens(" b"))
    c = loom.add_child(a, " c", tokens=model_tokens(" c"))
    d = loom.add_child(b, " d", tokens=model_tokens(" d"))
    assert [h.id for h in loom.siblings(b)] == [c]
    assert loom.siblings(r) == []
    assert [h.id for h in loom.ancestors(d)] == [r, a, b]
    assert [n.id for n in loom.path_nodes(d)] == [r, a, b, d]
    assert loom.path_text(d) == PROMPT + " a b d"
    ids = loom.path_tokens(d).ids
    expected = np.concatenate([loom.node(i).tokens.ids for i in (r, a, b, d)])
    np.testing.assert_array_equal(ids, expected)
    assert loom.header(d).depth == 3


def test_path_tokens_needs_a_tokenizer_for_text_without_tokens(loom: Loom) -> None:
    a = loom.add_child(loom.root_id, " typed by hand")
    assert loom.header(a).tokens_partial
    with pytest.raises(TokensUnavailableError, match=f"node {a}"):
        loom.path_tokens(a)
    loom.tokenizer = WordTokenizer()
    assert loom.path_tokens(a).texts[-3:] == [" typed", " by", " hand"]
    assert loom.header(a).tokens_partial  # reading never writes


def test_human_text_is_tokenized_on_entry_with_a_tokenizer(loom: Loom) -> None:
    loom.tokenizer = WordTokenizer()
    a = loom.add_child(loom.root_id, " He left")
    assert loom.node(a).tokens.texts == [" He", " left"]
    assert not loom.header(a).tokens_partial


def test_edit_with_tokenizer_retokenizes_the_changed_tail(loom: Loom) -> None:
    tokens = model_tokens(" He ordered a croissant", seed=5)
    a = loom.add_child(loom.root_id, " He ordered a croissant", author="model", tokens=tokens)
    loom.tokenizer = WordTokenizer()
    loom.edit(a, " He ordered a coffee")
    node = loom.node(a)
    assert node.text == " He ordered a coffee"
    assert node.tokens.texts == [" He", " ordered", " a", " coffee"]
    np.testing.assert_array_equal(node.tokens.logprobs[:3], tokens.logprobs[:3])
    assert math.isnan(node.tokens.logprobs[3])
    assert loom.search("coffee")[0].node_id == a
    assert loom.search("croissant") == []
    fts_in_sync(loom)


def test_edit_without_tokenizer_marks_tokens_partial(loom: Loom) -> None:
    a = loom.add_child(
        loom.root_id, " He ordered", author="model", tokens=model_tokens(" He ordered")
    )
    loom.edit(a, " He ordered tea")
    h = loom.header(a)
    assert h.tokens_partial and h.n_tokens == 2
    assert loom.node(a).meta == {"tokens_partial": True}


def test_edit_with_explicit_tokens_and_no_op_edit(loom: Loom) -> None:
    a = loom.add_child(loom.root_id, " x", tokens=model_tokens(" x"))
    n_events = len(loom.events())
    loom.edit(a, " x")
    assert len(loom.events()) == n_events
    loom.edit(a, " y z", tokens=model_tokens(" y z", seed=8))
    assert digest(loom.node(a).tokens) == digest(model_tokens(" y z", seed=8))
    assert not loom.header(a).tokens_partial


def test_split_at_char_moves_children_under_the_tail(loom: Loom) -> None:
    text = " He ordered a croissant"
    a = loom.add_child(
        loom.root_id, text, author="model", tokens=model_tokens(text), generation=GEN
    )
    loom.set_persona(a, PersonaLabel("luigi", "model", {"luigi": 0.9, "waluigi": 0.1}))
    loom.set_manual_persona(a, "luigi")
    loom.add_tag(a, "good")
    kid = loom.add_child(a, " and ate it")
    tail = loom.split(a, at_char=len(" He ordered"))
    assert loom.node(a).text == " He ordered"
    t = loom.node(tail)
    assert (t.text, t.parent, t.author, t.generation) == (" a croissant", a, "model", GEN)
    assert t.persona is not None and t.persona.label == "luigi" and loom.node(a).persona is None
    assert t.manual_persona == "luigi" and t.tags == [] and loom.node(a).tags == ["good"]
    assert [h.id for h in loom.children(a)] == [tail]
    assert loom.header(kid).parent == tail and loom.header(kid).depth == 3
    assert loom.path_text(kid) == PROMPT + text + " and ate it"


def test_split_at_token(loom: Loom) -> None:
    text = " one two three"
    tokens = model_tokens(text)
    a = loom.add_child(loom.root_id, text, author="model", tokens=tokens)
    tail = loom.split(a, at_token=1)
    assert loom.node(a).text == " one" and loom.node(tail).text == " two three"
    joined = TokenArray.concat([loom.node(a).tokens, loom.node(tail).tokens])
    assert digest(joined) == digest(tokens)


def test_split_refuses_bad_arguments(loom: Loom) -> None:
    a = loom.add_child(loom.root_id, " ab", tokens=model_tokens(" ab"))
    with pytest.raises(InvalidEditError):
        loom.split(a)
    with pytest.raises(InvalidEditError):
        loom.split(a, at_char=1, at_token=1)
    with pytest.raises(InvalidEditError):
        loom.split(a, at_char=0)
    with pytest.raises(UnknownNodeError):
        loom.split(999, at_char=1)
    assert loom.node(a).text == " ab" and loom.children(a) == []


def test_merge_into_parent_joins_text_tokens_and_children(loom: Loom) -> None:
    a = loom.add_child(loom.root_id, " He", author="model", tokens=model_tokens(" He"))
    b = loom.add_child(a, " left", author="model", tokens=model_tokens(" left", seed=3))
    c = loom.add_child(b, " early", tokens=model_tokens(" early"))
    loom.add_tag(a, "x")
    loom.add_tag(b, "y")
    loom.add_tag(b, "x")
    loom.set_bookmark(b, True)
    loom.set_current(b)
    loom.merge_into_parent(b)
    assert b not in loom
    merged = loom.node(a)
    assert merged.text == " He left" and merged.tokens.texts == [" He", " left"]
    assert merged.tags == ["x", "y"] and merged.bookmarked and merged.author == "model"
    assert loom.header(c).parent == a and loom.header(c).depth == 2
    assert loom.current == a


def test_merge_of_human_into_model_node_makes_it_human(loom: Loom) -> None:
    a = loom.add_child(
        loom.root_id, " He", author="model", tokens=model_tokens(" He"), generation=GEN
    )
    b = loom.add_child(a, " ran", tokens=TokenArray.from_ids([1], [" ran"]))
    loom.merge_into_parent(b)
    assert loom.node(a).author == "human" and loom.node(a).generation is None


def test_merge_refused_when_the_parent_has_other_children_or_for_root(loom: Loom) -> None:
    a = loom.add_child(loom.root_id, " a")
    b = loom.add_child(a, " b")
    loom.add_child(a, " c")
    with pytest.raises(InvalidEditError, match="2 children"):
        loom.merge_into_parent(b)
    with pytest.raises(InvalidEditError):
        loom.merge_into_parent(loom.root_id)
    assert b in loom and loom.node(a).text == " a"


def test_prune_is_soft(loom: Loom) -> None:
    a = loom.add_child(loom.root_id, " aardvark")
    b = loom.add_child(loom.root_id, " b")
    loom.prune(a)
    assert [h.id for h in loom.children(loom.root_id, include_pruned=False)] == [b]
    assert [h.id for h in loom.children(loom.root_id)] == [a, b]
    assert loom.header(a).pruned and loom.stats()["pruned"] == 1
    assert [h.node_id for h in loom.search("aardvark", include_pruned=False)] == []
    assert [h.node_id for h in loom.search("aardvark")] == [a]
    loom.unprune(a)
    assert not loom.header(a).pruned


def test_delete_subtree_removes_everything_below(loom: Loom) -> None:
    a = loom.add_child(loom.root_id, " a")
    b = loom.add_child(a, " b")
    c = loom.add_child(b, " cucumber")
    loom.add_tag(c, "t")
    loom.set_current(c)
    assert [h.node_id for h in loom.search("cucumber")] == [c]
    loom.delete_subtree(a)
    assert all(i not in loom for i in (a, b, c))
    assert loom.current == loom.root_id
    assert loom.tagged("t") == [] and loom.search("cucumber") == []
    with pytest.raises(UnknownNodeError):
        loom.node(b)
    with pytest.raises(InvalidEditError):
        loom.delete_subtree(loom.root_id)
    fts_in_sync(loom)


def test_deleted_ids_are_never_reused(loom: Loom) -> None:
    a = loom.add_child(loom.root_id, " a")
    loom.delete_subtree(a)
    b = loom.add_child(loom.root_id, " b")
    assert b > a


def test_bookmarks_and_tags(loom: Loom) -> None:
    a = loom.add_child(loom.root_id, " a")
    b = loom.add_child(loom.root_id, " b")
    loom.set_bookmark(b, True)
    loom.set_bookmark(a, True)
    assert loom.bookmarks() == [a, b]
    loom.set_bookmark(a, False)
    assert loom.bookmarks() == [b]
    loom.add_tag(a, "zeta")
    loom.add_tag(a, "alpha")
    loom.add_tag(a, "zeta")  # already there: no change, no event
    assert loom.header(a).tags == ["zeta", "alpha"]
    loom.remove_tag(a, "zeta")
    assert loom.node(a).tags == ["alpha"] and loom.tagged("alpha") == [a]
    with pytest.raises(InvalidEditError):
        loom.add_tag(a, "  ")


def test_move_subtree_updates_depths_and_refuses_cycles(loom: Loom) -> None:
    r = loom.root_id
    a = loom.add_child(r, " a")
    b = loom.add_child(a, " b")
    c = loom.add_child(b, " c")
    d = loom.add_child(r, " d")
    loom.move(b, d)
    assert loom.header(b).parent == d
    assert [h.id for h in loom.ancestors(c)] == [r, d, b]
    assert loom.header(c).depth == 3
    loom.move(b, r)
    assert loom.header(c).depth == 2 and [h.id for h in loom.children(r)] == [a, d, b]
    with pytest.raises(InvalidEditError, match="inside that subtree"):
        loom.move(b, c)
    with pytest.raises(InvalidEditError):
        loom.move(b, b)
    with pytest.raises(InvalidEditError):
        loom.move(r, a)
    assert loom.header(b).parent == r


def test_persona_labels_model_and_manual_are_kept_apart(loom: Loom) -> None:
    a = loom.add_child(loom.root_id, " a")
    loom.set_persona(a, PersonaLabel("waluigi", "model", {"luigi": 0.2, "waluigi": 0.8}))
    assert loom.header(a).label == "waluigi"
    loom.set_manual_persona(a, "luigi")
    h = loom.header(a)
    assert h.label == "luigi" and h.persona is not None and h.persona.label == "waluigi"
    loom.set_manual_persona(a, None)
    assert loom.header(a).label == "waluigi"
    loom.set_persona(a, None)
    assert loom.header(a).label is None


def test_personas_set(loom: Loom) -> None:
    ps = [Persona("luigi", "loyal", "green", 0.5), Persona("waluigi", "inverted", "magenta", 0.5)]
    loom.set_personas(ps)
    assert loom.personas == ps
    loom.undo()
    assert loom.personas == []


def test_title(loom: Loom) -> None:
    loom.set_title("new title")
    assert loom.title == "new title"
    loom.undo()
    assert loom.title == "cafe"


def test_current_node(loom: Loom) -> None:
    a = loom.add_child(loom.root_id, " a")
    loom.set_current(a)
    assert loom.current == a
    assert loom.events()[-1].kind == "visit" and not loom.can_redo
    with pytest.raises(UnknownNodeError):
        loom.set_current(12345)
    loom.undo()  # undoes the add, not the visit; the cursor falls back to the parent
    assert loom.current == loom.root_id


def test_search_finds_words_with_snippets(loom: Loom) -> None:
    a = loom.add_child(loom.root_id, " The croissant was stale.\nBob frowned.")
    loom.add_child(loom.root_id, " Coffee instead.")
    hits = loom.search("croiss")
    assert [h.node_id for h in hits] == [a]
    start, end = hits[0].highlights[0]
    assert hits[0].snippet[start:end].lower() == "croiss"
    assert "\n" not in hits[0].snippet
    assert [h.node_id for h in loom.search("bob stale")] == [a]
    assert loom.search("bob tea ") == []
    assert loom.search("   ") == [] and loom.search('"*(') == []
    assert len(loom.search("bob", limit=0)) == 0


def test_stats(loom: Loom) -> None:
    r = loom.root_id
    a = loom.add_child(r, " a", author="model", tokens=model_tokens(" a b"))
    b = loom.add_child(a, " b")
    loom.add_child(r, " c")
    loom.set_bookmark(b, True)
    loom.prune(a)
    s = loom.stats()
    expected = {"nodes": 4, "leaves": 2, "max_depth": 2, "bookmarked": 1, "pruned": 1}
    assert {k: s[k] for k in expected} == expected
    assert (s["model_nodes"], s["human_nodes"]) == (1, 3)
    assert s["tokens"] == len(model_tokens(PROMPT)) + 2
    assert loom.leaves() == sorted([b, loom.children(r)[1].id])


ODD = [
    "naïve café — 東京 🧶 ",
    "line1\r\nline2\rline3\n",
    "nul\x00inside\x00",
    "\x1b[31mred\x1b[0m \x07bell \x1b]0;title\x07",
    "\u200b\ufeff\u202e reversed",
    "",
]


@pytest.mark.parametrize("text", ODD)
def test_odd_text_is_stored_and_returned_exactly(tmp_path: Path, text: str) -> None:
    path = tmp_path / "odd.loom"
    with Loom.create(path, title=text, prompt=text) as lm:
        a = lm.add_child(lm.root_id, text, tokens=TokenArray.from_ids([1], [text]))
        lm.add_tag(a, text + "tag")
        lm.edit(a, text + text)
    with Loom.open(path, readonly=True) as lm:
        assert lm.title == text and lm.node(lm.root_id).text == text
        assert lm.node(a).text == text + text and lm.node(a).tags == [text + "tag"]
        assert lm.node(a).tokens.texts[0] == text
        assert lm.path_text(a) == text + text + text


def test_unpaired_surrogate_is_refused_cleanly(loom: Loom) -> None:
    with pytest.raises(InvalidEditError, match="surrogate"):
        loom.add_child(loom.root_id, "bad \ud800")
    assert loom.children(loom.root_id) == []


@pytest.mark.parametrize("bad", [999, -1, 0, "1", None, 1.0, True])
def test_unknown_node_ids_raise_unknown_node_error(loom: Loom, bad: object) -> None:
    for call in (
        lambda: loom.node(bad),  # type: ignore[arg-type]
        lambda: loom.header(bad),  # type: ignore[arg-type]
        lambda: loom.children(bad),  # type: ignore[arg-type]
        lambda: loom.path_text(bad),  # type: ignore[arg-type]
        lambda: loom.add_child(bad, "x"),  # type: ignore[arg-type]
        lambda: loom.edit(bad, "x"),  # type: ignore[arg-type]
        lambda: loom.prune(bad),  # type: ignore[arg-type]
        lambda: loom.delete_subtree(bad),  # type: ignore[arg-type]
    ):
        with pytest.raises(UnknownNodeError) as info:
            call()
        assert "\n" not in str(info.value) and "no node" in str(info.value)
    assert loom.stats()["nodes"] == 1


def test_readonly_loom_refuses_writes_but_moves_its_cursor(tmp_path: Path) -> None:
    path = tmp_path / "ro.loom"
    with Loom.create(path, prompt="p") as lm:
        a = lm.add_child(lm.root_id, " a")
    with Loom.open(path, readonly=True) as lm:
        assert lm.readonly
        with pytest.raises(ReadOnlyLoomError):
            lm.add_child(lm.root_id, " b")
        with pytest.raises(ReadOnlyLoomError):
            lm.undo()
        lm.set_current(a)
        assert lm.current == a
    with Loom.open(path) as lm:
        assert lm.current == lm.root_id and lm.stats()["nodes"] == 2


def test_opening_lists_children_without_reading_token_blobs(tmp_path: Path) -> None:
    path = tmp_path / "lazy.loom"
    with Loom.create(path, prompt="p") as lm:
        lm.add_children(lm.root_id, [NewNode(" x", tokens=model_tokens(" x y z"))] * 4)
    with Loom.open(path, readonly=True) as lm:
        reads: list[str] = []
        lm._db.conn.set_trace_callback(reads.append)
        lm.children(lm.root_id)
        lm.header(lm.root_id)
        lm.set_current(lm.root_id)
        assert reads and not any("tokens t" in q or "FROM tokens" in q for q in reads)
        plans = " ".join(
            str(r)
            for r in lm._db.conn.execute("EXPLAIN QUERY PLAN SELECT id FROM nodes WHERE parent = 1")
        )
        assert "nodes_by_parent" in plans


def test_data_that_cannot_be_logged_is_refused_without_a_change(loom: Loom) -> None:
    a = loom.add_child(loom.root_id, " a")
    with pytest.raises(InvalidEditError):
        loom.set_persona(a, PersonaLabel("x", "model", {"x": float("nan")}))
    with pytest.raises(InvalidEditError):
        loom.add_child(a, " b", meta={"obj": object()})
    assert loom.header(a).persona is None and loom.children(a) == []
    assert [e.kind for e in loom.events()][-1] == "add"
