"""`events.map_tokens`: the copy with token references converted, and the depth and finiteness
checks it makes on the way (the import's one walk over a payload)."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from loom.store import events as ev


def _ref(n: int) -> dict[str, int]:
    return {ev.TOKEN_REF: n}


def _plus_100(value: dict[str, Any]) -> dict[str, int]:
    return _ref(value[ev.TOKEN_REF] + 100)


def test_references_are_converted_in_a_copy() -> None:
    payload = {"nodes": [{"id": 1, "tokens": _ref(3), "tags": ["a"]}, {"tokens": _ref(4)}]}
    out = ev.map_tokens(payload, _plus_100, max_depth=8, finite=True)
    assert out == {"nodes": [{"id": 1, "tokens": _ref(103), "tags": ["a"]}, {"tokens": _ref(104)}]}
    assert payload["nodes"][0]["tokens"] == _ref(3)  # the original is untouched
    assert out["nodes"][0]["tags"] is not payload["nodes"][0]["tags"]


def _nested(levels: int) -> Any:
    value: Any = {"end": True}
    for i in range(levels - 1):
        value = {"x": value} if i % 2 else [value]
    return value


def test_depth_limit_is_what_nesting_depth_measures() -> None:
    rng = random.Random(7)

    def grown(budget: int) -> Any:
        if budget == 0 or rng.random() < 0.2:
            return rng.choice([1, "s", None, 2.5, True])
        if rng.random() < 0.5:
            return [grown(budget - 1) for _ in range(rng.randint(0, 3))]
        return {f"k{i}": grown(budget - 1) for i in range(rng.randint(0, 3))}

    for _ in range(400):
        value = grown(rng.randint(0, 9))
        limit = rng.randint(1, 8)
        too_deep = ev.nesting_depth(value, limit) > limit
        try:
            ev.map_tokens(value, _plus_100, max_depth=limit)
        except ValueError as exc:
            assert too_deep and "nested too deeply" in str(exc)
        else:
            assert not too_deep


def test_a_payload_far_too_deep_is_refused_without_recursion() -> None:
    assert ev.map_tokens(_nested(30), _plus_100, max_depth=30) is not None
    with pytest.raises(ValueError, match="over 30 levels"):
        ev.map_tokens(_nested(31), _plus_100, max_depth=30)
    with pytest.raises(ValueError, match="nested too deeply"):
        ev.map_tokens(_nested(200_000), _plus_100, max_depth=80)
    assert ev.map_tokens(_nested(5_000), _plus_100) is not None  # no limit asked: none applied


@pytest.mark.parametrize(
    "payload",
    [{"a": math.nan}, {"a": [1.0, math.inf]}, [{"b": {"c": -math.inf}}], math.nan],
    ids=["nan", "inf in a list", "-inf deep", "nan alone"],
)
def test_finite_refuses_nan_and_infinities_anywhere(payload: Any) -> None:
    with pytest.raises(ValueError, match="NaN or an infinity"):
        ev.map_tokens(payload, _plus_100, finite=True)
    ev.map_tokens(payload, _plus_100)  # not asked: kept as they are


def test_finite_payload_text_is_what_the_log_writes() -> None:
    payload = {"x": [0.1, -0.0, 1e300, 5], "y": None, "t": "caf\u00e9 \ud800"}
    checked = ev.map_tokens(payload, _plus_100, finite=True)
    assert ev.dumps(checked, finite=True) == ev.dumps(payload)


def test_check_plain_is_one_walk_for_depth_and_finiteness() -> None:
    rng = random.Random(11)
    for _ in range(300):
        levels = rng.randint(1, 12)
        value = _nested(levels)
        limit = rng.randint(1, 12)
        if ev.nesting_depth(value, limit) > limit:
            with pytest.raises(ValueError, match="nested too deeply"):
                ev.check_plain(value, limit)
        else:
            ev.check_plain(value, limit)
    ev.check_plain({"a": [1.5, None, "nan", (2, -0.0)]}, 3)
    for bad in ({"a": [1.0, math.inf]}, [({"b": math.nan},)], -math.inf):
        with pytest.raises(ValueError, match="NaN or an infinity"):
            ev.check_plain(bad, 10)
    with pytest.raises(ValueError, match="over 80 levels"):
        ev.check_plain(_nested(200_000), 80)
