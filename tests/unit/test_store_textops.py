"""How tokens follow text through edit, split and merge (the pure functions under the Loom API)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from support.store import WordTokenizer, model_tokens

from loom.store import textops
from loom.store.errors import InvalidEditError
from loom.store.textops import Span
from loom.tokens import TokenArray

TEXT = "The cat sat on the mat"  # pieces: "The", " cat", " sat", " on", " the", " mat"


def model_span(text: str = TEXT) -> Span:
    return Span(text, model_tokens(text, seed=1))


def test_covered_ends_stop_where_token_texts_stop_spelling_the_text() -> None:
    tokens = TokenArray.from_ids([1, 2, 3], ["ab", "cd", "XX"])
    assert textops.covered_ends(tokens, "abcdef") == [2, 4]


def test_new_text_without_tokenizer_is_partial_and_with_one_is_complete() -> None:
    bare = textops.new_text("hello world", None, None)
    assert bare.partial and len(bare.tokens) == 0
    tok = textops.new_text("hello world", None, WordTokenizer())
    assert not tok.partial and tok.tokens.texts == ["hello", " world"]
    assert not textops.new_text("", None, None).partial


def test_edit_keeps_probabilities_of_the_unchanged_prefix() -> None:
    span = model_span()
    new = textops.edit(span, "The cat sat on a hat", WordTokenizer())
    assert new.tokens.texts == ["The", " cat", " sat", " on", " a", " hat"]
    assert not new.partial
    np.testing.assert_array_equal(new.tokens.logprobs[:4], span.tokens.logprobs[:4])
    assert all(math.isnan(x) for x in new.tokens.logprobs[4:])


def test_edit_without_tokenizer_keeps_the_prefix_tokens_and_flags_the_rest() -> None:
    new = textops.edit(model_span(), "The cat sat on a hat", None)
    assert new.partial
    assert new.tokens.texts == ["The", " cat", " sat", " on"]


def test_edit_that_cuts_at_a_token_boundary_stays_complete_without_tokenizer() -> None:
    new = textops.edit(model_span(), "The cat sat", None)
    assert not new.partial and new.tokens.texts == ["The", " cat", " sat"]


def test_edit_inside_a_word_drops_that_word_token() -> None:
    new = textops.edit(model_span(), "The cat sax on the mat", None)
    assert new.tokens.texts == ["The", " cat"] and new.partial


def test_split_at_a_token_boundary_keeps_every_token_on_its_side() -> None:
    span = model_span()
    head, tail = textops.split_at_char(span, len("The cat"), None)
    assert (head.text, tail.text) == ("The cat", " sat on the mat")
    assert not head.partial and not tail.partial
    joined = TokenArray.concat([head.tokens, tail.tokens])
    np.testing.assert_array_equal(joined.ids, span.tokens.ids)
    np.testing.assert_array_equal(joined.top_logprobs, span.tokens.top_logprobs)
    np.testing.assert_array_equal(joined.entropy, span.tokens.entropy)  # type: ignore[arg-type]


def test_split_inside_a_token_retokenizes_only_the_straddling_token() -> None:
    span = model_span()
    head, tail = textops.split_at_char(span, len("The cat s"), WordTokenizer())
    assert head.text + tail.text == TEXT
    assert head.tokens.texts == ["The", " cat", " s"]
    assert tail.tokens.texts == ["at", " on", " the", " mat"]
    assert not head.partial and not tail.partial
    np.testing.assert_array_equal(head.tokens.logprobs[:2], span.tokens.logprobs[:2])
    assert math.isnan(head.tokens.logprobs[2]) and math.isnan(tail.tokens.logprobs[0])
    np.testing.assert_array_equal(tail.tokens.logprobs[1:], span.tokens.logprobs[3:])


def test_split_inside_a_token_without_tokenizer_flags_both_halves() -> None:
    head, tail = textops.split_at_char(model_span(), len("The cat s"), None)
    assert head.partial and head.tokens.texts == ["The", " cat"]
    assert tail.partial and len(tail.tokens) == 0


@pytest.mark.parametrize("at", [0, len(TEXT), -1, len(TEXT) + 5])
def test_split_outside_the_text_is_refused(at: int) -> None:
    with pytest.raises(InvalidEditError):
        textops.split_at_char(model_span(), at, None)


def test_split_at_token_is_exact() -> None:
    span = model_span()
    head, tail = textops.split_at_token(span, 2, None)
    assert (head.text, tail.text) == ("The cat", " sat on the mat")
    assert head.tokens.texts == ["The", " cat"] and not tail.partial
    np.testing.assert_array_equal(tail.tokens.top_ids, span.tokens.top_ids[2:])


@pytest.mark.parametrize("index", [0, 6, 7])
def test_split_at_token_outside_is_refused(index: int) -> None:
    with pytest.raises(InvalidEditError):
        textops.split_at_token(model_span(), index, None)


def test_split_at_token_refused_when_token_texts_do_not_spell_the_text() -> None:
    span = Span("abcdef", TokenArray.from_ids([1, 2, 3], ["ab", "ZZ", "ef"]))
    with pytest.raises(InvalidEditError, match="split at a character"):
        textops.split_at_token(span, 2, None)


def test_merge_concatenates_complete_spans() -> None:
    a, b = model_span("The cat"), model_span(" sat")
    merged = textops.merge(a, b, None)
    assert merged.text == "The cat sat" and not merged.partial
    assert merged.tokens.texts == ["The", " cat", " sat"]


def test_merge_after_a_partial_head_stays_partial_or_is_completed() -> None:
    a = Span("The cat", TokenArray.from_ids([1], ["The"]), partial=True)
    b = model_span(" sat")
    assert textops.merge(a, b, None).partial
    assert textops.merge(a, b, None).tokens.texts == ["The"]
    done = textops.merge(a, b, WordTokenizer())
    assert not done.partial and done.tokens.texts == ["The", " cat", " sat"]


def test_complete_fills_only_the_uncovered_tail() -> None:
    tok = WordTokenizer()
    span = Span("The cat sat", TokenArray.from_ids([7], ["The"]), partial=True)
    full = textops.complete(span, tok)
    assert full.tokens.texts == ["The", " cat", " sat"] and int(full.tokens.ids[0]) == 7
    assert tok.calls == [" cat sat"]
