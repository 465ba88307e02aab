"""The remote backend against llama.cpp's own llama-server with 8 parallel slots (started by the
session fixture from the binary .ci/build-llama-server builds): N branches decoded at once, per
branch seeds, cancel, the server's identity, and a clear refusal to score."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from support.engines import default_gguf, engine, llama_cpp_server
from support.llama_server import LlamaServer

from loom.engine.engine import Engine
from loom.engine.errors import RemoteError
from loom.engine.remote import RemoteBackend
from loom.engine.results import Branch, StepUpdate
from loom.engine.sampling import SamplerSettings

__all__ = ["default_gguf", "engine", "llama_cpp_server"]

PROMPT = "Once upon a time, in a small village by the sea,"
pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def remote(llama_cpp_server: LlamaServer) -> RemoteBackend:
    return RemoteBackend(llama_cpp_server.url, llama_cpp_server.key, timeout=120).connect()


@pytest.fixture(scope="module")
def run(remote: RemoteBackend) -> tuple[list[Branch], list[tuple[float, StepUpdate]]]:
    updates: list[tuple[float, StepUpdate]] = []
    branches = remote.generate(
        None, 4, SamplerSettings(temperature=0.9, max_tokens=12, seed=11), top_logprobs=3,
        prompt_text=PROMPT, on_step=lambda u: updates.append((time.monotonic(), u)),
    )  # fmt: skip
    return branches, updates


def test_branches_are_decoded_at_once(
    run: tuple[list[Branch], list[tuple[float, StepUpdate]]],
) -> None:
    branches, updates = run
    assert [b.index for b in branches] == [0, 1, 2, 3]
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for at, update in updates:
        for index, *_ in update.new:
            first.setdefault(index, at)
            last[index] = at
    # every branch had begun before any had finished: the slots decoded them together
    assert max(first.values()) < min(last.values())
    assert [u.step for _, u in updates] == list(range(len(updates)))  # one update at a time


def test_branches_have_the_engine_shape_and_its_logprobs(
    run: tuple[list[Branch], list[tuple[float, StepUpdate]]], engine: Engine
) -> None:
    branches, _ = run
    prefix = engine.tokenize(PROMPT)
    for b in branches:
        t = b.tokens
        assert b.finish_reason == "length" and len(t) == 12 and b.note is None
        assert np.all(t.ids >= 0)  # llama-server reports ids
        assert engine.detokenize(list(t.ids)) == b.text
        assert t.k == 3 and np.all(np.diff(t.top_logprobs, axis=1) <= 0)
        assert np.all(t.logprobs <= t.top_logprobs[:, 0] + 1e-4)
    scores = engine.score(prefix, [list(b.tokens.ids) for b in branches])
    diffs = np.concatenate(
        [np.abs(s - b.tokens.logprobs) for s, b in zip(scores, branches, strict=True)]
    )
    assert np.median(diffs) < 0.2


def test_a_seed_repeats_the_run_and_each_branch_has_its_own(remote: RemoteBackend) -> None:
    # Each branch sends its own seed. Decoded together, llama-server's logits depend on which
    # requests share a batch and slot, which the arrival order decides: only a run sent one
    # request at a time repeats exactly (the user guide says so: [remote] concurrency = 1).
    settings = SamplerSettings(temperature=0.9, max_tokens=12, seed=11)
    texts = []
    for _ in range(2):
        run = remote.generate(None, 4, settings, top_logprobs=3, prompt_text=PROMPT, concurrency=1)
        texts.append([b.text for b in run])
    assert texts[0] == texts[1]
    assert len(set(texts[0])) > 1  # seeds per branch, not one seed for all


def test_cancel_closes_every_stream_at_once_and_keeps_what_arrived(remote: RemoteBackend) -> None:
    cancel = threading.Event()
    seen: set[int] = set()

    def on_step(update: StepUpdate) -> None:
        seen.update(i for i, *_ in update.new)
        if len(seen) == 4:
            cancel.set()

    start = time.monotonic()
    branches = remote.generate(
        None, 4, SamplerSettings(max_tokens=2000, seed=1), top_logprobs=0, prompt_text=PROMPT,
        cancel=cancel, on_step=on_step,
    )  # fmt: skip
    assert time.monotonic() - start < 30
    assert all(b.finish_reason == "cancelled" for b in branches)
    assert all(1 <= len(b.tokens) < 2000 for b in branches)
    assert all(b.text == b.tokens.text for b in branches)


def test_the_servers_identity_is_recorded(
    remote: RemoteBackend, llama_cpp_server: LlamaServer
) -> None:
    info = remote.info
    assert info.model.endswith(".gguf") and info.server == llama_cpp_server.url
    assert info.fingerprint.startswith("llama.cpp ")
    assert llama_cpp_server.url in info.name and info.sha256 == ""
    assert remote.n_ctx == 1024  # per slot, from /props
    assert llama_cpp_server.key not in info.name + repr(remote)


def test_scoring_is_refused_in_one_line(remote: RemoteBackend, engine: Engine) -> None:
    for _ in range(2):  # detected once, then refused at once
        with pytest.raises(RemoteError, match="returns no logprobs for prompt tokens") as err:
            remote.score(engine.tokenize("The sea"), [engine.tokenize(" was calm")])
        assert "\n" not in str(err.value)
    with pytest.raises(RemoteError, match="cannot score"):
        remote.check_scoring()


def test_a_model_the_server_does_not_serve(llama_cpp_server: LlamaServer) -> None:
    rb = RemoteBackend(llama_cpp_server.url, llama_cpp_server.key, model="gpt-17")
    with pytest.raises(RemoteError, match="does not serve model 'gpt-17'") as err:
        rb.connect()
    assert "\n" not in str(err.value)


def test_a_wrong_key_is_one_line_without_the_key(llama_cpp_server: LlamaServer) -> None:
    with pytest.raises(RemoteError, match="HTTP 401") as err:
        RemoteBackend(llama_cpp_server.url, "not-the-key").connect()
    assert "not-the-key" not in str(err.value) and "\n" not in str(err.value)
