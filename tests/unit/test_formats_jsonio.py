"""The depth-proof JSON reader/writer agrees with the json module and survives any nesting."""

from __future__ import annotations

import json
import random
import sys
from typing import Any

import numpy as np
import orjson
import pytest
from support.formats import ODD_TEXTS

from loom.formats import jsonio
from loom.formats.errors import FormatError
from loom.formats.jsonio import _iterencode, _loads_iterative


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return rng.choice(ODD_TEXTS)
    if kind == 1:
        return rng.randint(-(10**20), 10**20)
    if kind == 2:
        return rng.choice([0.1, -2.5e-300, 1e300, 3.0, -0.0, rng.random()])
    if kind == 3:
        return rng.choice([True, False, None])
    if kind == 4:
        return []
    if kind in (5, 6):
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(ODD_TEXTS) + str(i): _random_value(rng, depth + 1) for i in range(4)}


def _nested(depth: int) -> Any:
    value: Any = {"text": "leaf \x1b", "children": []}
    for i in range(depth):
        value = {"text": f"n{i}", "children": [value, [i]]}
    return value


@pytest.mark.parametrize("seed", range(30))
def test_iterative_decoder_matches_json(seed: int) -> None:
    value = _random_value(random.Random(seed))
    for indent in (None, 2):
        text = json.dumps(value, indent=indent)
        assert _loads_iterative(text) == json.loads(text)


@pytest.mark.parametrize("seed", range(30))
def test_iterative_encoder_matches_json(seed: int) -> None:
    value = _random_value(random.Random(seed))
    for indent in (None, 0, 2):
        assert "".join(_iterencode(value, indent)) == json.dumps(value, indent=indent)


def test_decoder_handles_literals_and_whitespace_like_json() -> None:
    text = ' \n{ "a" : [ NaN , -Infinity , 1e5 , -0 , "\\ud800\\u0000" ] , "b" : { } } \t'
    ours, theirs = _loads_iterative(text), json.loads(text)
    assert str(ours) == str(theirs)  # NaN != NaN, so compare the printed forms


@pytest.mark.parametrize(
    "bad", ['{"a": 1', "[1, 2", '{"a" 1}', "[1 2]", '{"a": 1,}', "[1] x", "{'a': 1}", "tru"]
)
def test_decoder_rejects_what_json_rejects(bad: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad)
    with pytest.raises(json.JSONDecodeError):
        _loads_iterative(bad)


def test_deep_nesting_round_trips_past_the_recursion_limit() -> None:
    value = _nested(5000)
    with pytest.raises(RecursionError):
        json.dumps(value)  # the reason jsonio exists
    text = jsonio.dumps(value)
    back = jsonio.loads(text)
    depth = 0
    while back["children"] and isinstance(back["children"][0], dict):
        assert back["text"] == f"n{4999 - depth}"
        back = back["children"][0]
        depth += 1
    assert depth == 5000
    assert back["text"] == "leaf \x1b"


def test_dumps_is_strict_ascii_json() -> None:
    text = jsonio.dumps({"t": "é \ud800 \x00", "n": np.float32(0.5), "a": np.arange(2)})
    assert text.isascii()
    assert json.loads(text) == {"t": "é \ud800 \x00", "n": 0.5, "a": [0, 1]}
    with pytest.raises(FormatError, match="cannot write JSON"):
        jsonio.dumps({"x": float("nan")})


def test_loads_reports_position_in_one_line() -> None:
    with pytest.raises(FormatError) as info:
        jsonio.loads('{\n  "a": [1,\n')
    message = str(info.value)
    assert message.startswith("invalid JSON at line 3")
    assert "\n" not in message


def test_every_fallback_gives_the_same_text(monkeypatch: pytest.MonkeyPatch) -> None:
    value = _nested(3000)
    limit = sys.getrecursionlimit()
    fast = jsonio.dumps(value)  # the C encoder on a deep stack
    assert sys.getrecursionlimit() == limit  # raised only for that moment

    def refuse(func: object) -> object:
        raise RecursionError("no deep stack")

    monkeypatch.setattr(jsonio, "_in_deep_thread", refuse)
    assert jsonio.dumps(value) == fast  # the iterative encoder
    back = jsonio.loads(fast)  # the iterative decoder
    assert jsonio.dumps(back) == fast


@pytest.mark.parametrize(
    ("line", "huge"),
    [
        (b'{"id": 1, "sha": "16102b17a559b7bc6bc85683bd69b9970632d656"}', False),
        (b'{"lp": [-0.123456789, -1.5e-05, 3.4e+38]}', False),
        (b'{"id": 18446744073709551617}', True),  # past 64 bits: orjson would round it
        (b'{"x": 1e400}', True),
        (b'{"x": 2E-308}', True),
        (b'{"x": -1.5e+300}', True),
        (b'{"x": -1.5E-300}', True),
        # signs are dropped before the search: digits they separated inside a string join into
        # a false alarm, which only costs the exact reader
        (b'{"t": "555-1234-5678-9012-3456", "n": [-1, -22, 333]}', True),
    ],
)
def test_lines_with_numbers_orjson_would_not_keep_go_to_the_exact_reader(
    line: bytes, huge: bool
) -> None:
    from loom.formats import jsonstream

    assert jsonstream._huge_number(line) is huge
    if b"555" in line:
        assert jsonstream._loads(line, 1) == orjson.loads(line)
    if huge and b"18446744073709551617" in line:
        assert jsonstream._loads(line, 1) == {"id": 18446744073709551617}
