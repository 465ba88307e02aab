"""The mode-collapse rule (repetition loops) and collapse marks, on token ids."""

from __future__ import annotations

import pytest

from loom.personas.marks import (
    Repetition,
    collapse_mark,
    find_tail_repetition,
    mode_collapse_mark,
)


def test_a_phrase_repeated_three_times_is_a_loop() -> None:
    phrase = [5, 6, 7, 8, 9]
    ids = [1, 2, 3, *phrase * 3]
    assert find_tail_repetition(ids) == Repetition(period=5, repeats=3, span=15)


def test_partial_copy_at_the_end_still_counts() -> None:
    ids = [1, 2, *([5, 6, 7, 8] * 3), 5, 6]
    assert find_tail_repetition(ids) == Repetition(period=4, repeats=3, span=14)


def test_two_copies_are_not_enough() -> None:
    assert find_tail_repetition([1, *([5, 6, 7, 8, 9, 10, 11] * 2)]) is None


def test_short_stutters_are_not_loops() -> None:
    assert find_tail_repetition([1, 2, 3, 4, 0, 0, 0, 0]) is None  # "!!!!": span 4 < 12
    assert find_tail_repetition([1, *[0] * 12]) == Repetition(1, 12, 12)


def test_smallest_period_wins_and_long_periods_are_found() -> None:
    assert find_tail_repetition([3, 4] * 10) == Repetition(2, 10, 20)
    long = list(range(100, 132))  # a 32-token sentence, three times
    assert find_tail_repetition([1, *long * 3]) == Repetition(32, 3, 96)
    too_long = list(range(100, 133))
    assert find_tail_repetition([1, *too_long * 3]) is None


def test_a_loop_that_was_broken_is_not_marked() -> None:
    ids = [*([5, 6, 7, 8] * 4), 42, 43]
    assert find_tail_repetition(ids) is None
    assert mode_collapse_mark(9, ids, node_len=2) is None


def test_mode_collapse_mark_reaches_into_the_node() -> None:
    parent = [1, *([5, 6, 7, 8] * 3)]
    mark = mode_collapse_mark(9, [*parent, 5, 6, 7, 8], node_len=4)
    assert mark is not None and (mark.kind, mark.period, mark.repeats) == ("mode_collapse", 4, 4)
    assert mode_collapse_mark(9, parent, node_len=0) is None  # an empty node adds nothing


def test_rule_is_configurable() -> None:
    ids = [1, *([5, 6] * 3)]
    assert find_tail_repetition(ids) is None
    assert find_tail_repetition(ids, min_span=6) == Repetition(2, 3, 6)
    assert find_tail_repetition(ids, min_span=6, min_repeats=4) is None


def test_collapse_mark() -> None:
    before = {"luigi": 0.9, "waluigi": 0.1}
    after = {"luigi": 0.05, "waluigi": 0.95}
    mark = collapse_mark(3, before, after)
    assert mark is not None and mark.persona == "waluigi" and mark.delta == pytest.approx(0.85)
    assert collapse_mark(3, before, {"luigi": 0.5, "waluigi": 0.5}) is None
    assert collapse_mark(3, before, {"luigi": 0.5, "waluigi": 0.5}, threshold=0.3) is not None
    assert collapse_mark(3, before, {}) is None
