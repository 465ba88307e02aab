"""Token arrays to stored bytes and to exported JSON, exactly."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from support.store import model_tokens

from loom.store import codec, compress
from loom.tokens import TokenArray


def same(a: TokenArray, b: TokenArray) -> bool:
    return (
        a.ids.tobytes() == b.ids.tobytes()
        and a.texts == b.texts
        and a.logprobs.tobytes() == b.logprobs.tobytes()
        and a.top_ids.tobytes() == b.top_ids.tobytes()
        and a.top_ids.shape == b.top_ids.shape
        and a.top_logprobs.tobytes() == b.top_logprobs.tobytes()
        and a.top_texts == b.top_texts
        and (a.entropy is None) == (b.entropy is None)
        and (a.entropy is None or b.entropy is None or a.entropy.tobytes() == b.entropy.tobytes())
    )


def odd_tokens() -> TokenArray:
    t = model_tokens(" a b c d", k=4, seed=5)
    t.logprobs[0] = np.nan
    t.logprobs[1] = -0.0
    t.top_logprobs[2, 3] = np.nan
    t.texts[3] = "\ud83d"  # half of a UTF-8 character split across tokens
    return t


CASES = {
    "model": model_tokens(" one two three", k=5),
    "odd": odd_tokens(),
    "human_k0": TokenArray.from_ids([1, 2, 3], ["x", "\x00", "\r\n"]),
    "no_entropy": model_tokens(" p q", entropy=False),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_encode_decode_is_exact(name: str) -> None:
    tokens = CASES[name]
    back = codec.decode_row(codec.encode(tokens))
    assert same(back, tokens)
    assert back.ids.dtype == np.int32 and back.top_logprobs.dtype == np.float32


@pytest.mark.parametrize("name", sorted(CASES))
def test_exported_json_form_is_exact_and_strict_json(name: str) -> None:
    row = codec.encode(CASES[name])
    data = json.loads(json.dumps(codec.row_to_json(row), allow_nan=False))
    again = codec.row_from_json(data)
    assert again.digest == row.digest
    assert same(codec.decode_row(again), CASES[name])


def test_top_texts_beyond_the_top_ids_are_kept() -> None:
    tokens = model_tokens(" a b", k=2)
    tokens.top_texts[99_999] = "extra"
    assert codec.decode_row(codec.encode(tokens)).top_texts == tokens.top_texts
    del tokens.top_texts[99_999]
    del tokens.top_texts[int(tokens.top_ids[0, 1])]  # one alternative with no text
    assert codec.decode_row(codec.encode(tokens)).top_texts == tokens.top_texts


def test_digest_ignores_dict_order_but_not_content() -> None:
    a = model_tokens(" a b", k=3, seed=1)
    b = model_tokens(" a b", k=3, seed=1)
    b.top_texts = dict(reversed(list(b.top_texts.items())))
    assert codec.encode(a).digest == codec.encode(b).digest
    b.logprobs[0] += 0.5
    assert codec.encode(a).digest != codec.encode(b).digest


def test_content_digest_tells_every_column_and_text_apart() -> None:
    """What the store deduplicates by: equal for the same tokens (alternatives in any order),
    different when anything differs, texts split differently included."""
    base = model_tokens(" a b c", k=3, seed=2)
    same_again = model_tokens(" a b c", k=3, seed=2)
    same_again.top_texts = dict(reversed(list(same_again.top_texts.items())))
    assert codec.content_digest(base) == codec.content_digest(same_again)

    def changed(edit: str) -> TokenArray:
        t = model_tokens(" a b c", k=3, seed=2)
        if edit == "logprob":
            t.logprobs[1] = np.nextafter(t.logprobs[1], np.float32(0))
        elif edit == "entropy":
            t.entropy = None
        elif edit == "top_logprob":
            t.top_logprobs[0, 2] = np.nan
        elif edit == "split":  # the same characters, cut between tokens elsewhere
            t.texts[0], t.texts[1] = t.texts[0] + t.texts[1][:1], t.texts[1][1:]
        elif edit == "top_text":
            t.top_texts[int(t.top_ids[0, 0])] += "x"
        elif edit == "extra_top_text":
            t.top_texts[99_999] = ""
        return t

    edits = ["logprob", "entropy", "top_logprob", "split", "top_text", "extra_top_text"]
    digests = {codec.content_digest(base), *(codec.content_digest(changed(e)) for e in edits)}
    assert len(digests) == 1 + len(edits)
    assert codec.content_digest(CASES["odd"])  # a lone surrogate and NaN are hashed too


def test_statistics_skip_unknown_logprobs() -> None:
    row = codec.encode(odd_tokens())
    lps = odd_tokens().logprobs
    known = lps[~np.isnan(lps)].astype(np.float64)
    assert row.n_logprob == len(known) and row.sum_logprob == pytest.approx(float(known.sum()))
    assert codec.encode(TokenArray.from_ids([1], ["x"])).sum_logprob is None
    assert codec.mean_logprob(None, 0) is None and codec.mean_logprob(-2.0, 4) == -0.5


@pytest.mark.parametrize(
    "broken",
    [
        {},
        {"n": 1, "k": 0, "ids": "!!", "logprobs": "", "top_ids": "", "top_logprobs": ""},
        {
            "n": 2,
            "k": 0,
            "ids": "AAAAAA==",
            "logprobs": "AAAAAA==",
            "top_ids": "",
            "top_logprobs": "",
            "texts": "[]",
            "top_texts": "[]",
        },
    ],
)
def test_malformed_token_json_is_a_value_error(broken: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="malformed"):
        codec.row_from_json(broken)


@pytest.mark.parametrize("name", sorted(CASES))
def test_packed_columns_unpack_bit_for_bit(name: str) -> None:
    t = CASES[name]
    ids, logprobs, top_ids, top_lps, entropy = codec.unpack(len(t), t.k, codec.pack(t))
    assert ids.tobytes() == t.ids.tobytes() and logprobs.tobytes() == t.logprobs.tobytes()
    assert top_ids.tobytes() == t.top_ids.tobytes() and top_ids.shape == t.top_ids.shape
    assert top_lps.tobytes() == t.top_logprobs.tobytes()
    assert (entropy is None) == (t.entropy is None)
    assert entropy is None or t.entropy is None or entropy.tobytes() == t.entropy.tobytes()


@pytest.mark.parametrize("pick", [3, 4, 100, -2, -128])
def test_a_pick_outside_the_alternatives_is_refused(pick: int) -> None:
    """The first byte of the packed body picks token 0's alternative (k = 4 here)."""
    t = model_tokens(" a b c", k=4)
    blob = codec.pack(t)
    body = bytearray(compress.decompress(blob[1:], 1000))
    body[0] = pick & 0xFF
    bad = blob[:1] + compress.compress(bytes(body))
    if pick == 3:  # the last alternative: allowed, and token 0 becomes it
        ids = codec.unpack(len(t), t.k, bad)[0]
        assert ids[0] == t.top_ids[0, 3]
        return
    with pytest.raises(ValueError, match="picks an alternative that does not exist"):
        codec.unpack(len(t), t.k, bad)


def test_stored_json_orjson_refuses_is_read_by_json() -> None:
    text = codec.json_text({"0": "\ud83d", "1": "é"})  # a lone surrogate, escaped
    assert codec.read_json(text) == {"0": "\ud83d", "1": "é"}
    assert codec.read_json('{"x": 1}') == {"x": 1}
    with pytest.raises(ValueError):
        codec.read_json("{")


def test_token_blobs_written_with_zlib_before_schema_4_still_unpack() -> None:
    t = model_tokens(" a b c", k=4)
    blob = codec.pack(t)
    assert blob[1:5] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    legacy = blob[:1] + zlib.compress(compress.decompress(blob[1:], 1000), 6)
    assert [c.tobytes() for c in codec.unpack(len(t), t.k, legacy) if c is not None] == [
        c.tobytes() for c in codec.unpack(len(t), t.k, blob) if c is not None
    ]


@pytest.mark.parametrize(
    "how", ["zstd cut", "zstd says more", "zstd garbage", "zlib cut", "zlib more"]
)
def test_damaged_compressed_bodies_are_value_errors(how: str) -> None:
    body = bytes(range(256)) * 4
    packed = {
        "zstd cut": compress.compress(body)[:-3],
        "zstd says more": compress.compress(body + body),
        "zstd garbage": compress.compress(body)[:6] + b"\x00" * 40,
        "zlib cut": zlib.compress(body)[:-3],
        "zlib more": zlib.compress(body + body),
    }[how]
    with pytest.raises(ValueError):
        compress.decompress(packed, len(body))
    assert compress.decompress(compress.compress(body), len(body)) == body
    with pytest.raises(ValueError, match="token data"):
        codec.unpack(1, 0, b"\x00" + packed)
