"""The journey of probabilities on every token, on the real default model: a loom grows with a
hand-written reply, the model reads it, the model continues after it, and the readings travel
through export and import — through the `loom` command (subprocesses), then in the app (Pilot:
`w` writes the reply, the path shown is read by itself, `g` generates after it, `E` exports).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.cli import DATA, cli_env, ids_of, ok, run_loom
from support.engines import default_gguf, engine
from support.tui import export_in_app, isolated_config, make_app, run, settle
from textual.pilot import Pilot
from textual.widgets import TextArea

from loom.store.loom import Loom
from loom.store.tokenizer import FunctionTokenizer

pytestmark = pytest.mark.model
__all__ = ["default_gguf", "engine", "isolated_config"]  # fixtures

PROMPT = "Bob is a loyal patriot who sincerely despises croissants. Bob said:"
REPLY = ' "I would rather eat my own hat than a croissant."'


@pytest.fixture(autouse=True)
def short_generations(isolated_config: Path) -> None:
    isolated_config.parent.mkdir(parents=True, exist_ok=True)
    isolated_config.write_text("[generation]\nn = 2\nmax_tokens = 6\n", encoding="utf-8")


def test_the_scoring_journey_through_the_cli(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home")
    work = tmp_path / "work"
    work.mkdir()
    ok(run_loom("new", "s.loom", "--prompt", PROMPT, cwd=work, env=env))
    (first, _second) = ids_of(ok(run_loom("generate", "s.loom", "-n", "2", "--max-tokens", "6",
                                          "--seed", "5", cwd=work, env=env)))  # fmt: skip
    with Loom.open(work / "s.loom") as loom:  # a typed reply (the app's `w`), as the store does
        reply = loom.add_child(first, REPLY, author="human")
        sampled = loom.node(first).tokens
    scored = json.loads(ok(run_loom("score", "s.loom", "--json", cwd=work, env=env)).stdout)
    read = {n["node"] for n in scored["nodes"]}
    assert read == {1, reply}  # the prompt and the reply; model text keeps what it sampled
    (after,) = ids_of(ok(run_loom("generate", "s.loom", "--node", str(reply), "-n", "1",
                                  "--max-tokens", "6", cwd=work, env=env)))  # fmt: skip
    with Loom.open(work / "s.loom", readonly=True) as loom:
        assert loom.node(after).parent == reply and loom.node(after).scores == []
        assert np.array_equal(loom.node(first).tokens.logprobs, sampled.logprobs)
        assert loom.node(reply).scores[0].tokens.text == REPLY
    timeline = ok(run_loom("replay", "s.loom", "--headless", cwd=work, env=env)).stdout
    assert "2 nodes read by" in timeline
    ok(run_loom("export", "s.loom", "--format", "loom-json", "-o", "s.json", cwd=work, env=env))
    ok(run_loom("import", "s.json", "-o", "back.loom", cwd=work, env=env))
    again = json.loads(ok(run_loom("score", "back.loom", "--json", cwd=work, env=env)).stdout)
    assert again["n_nodes"] == 0  # the readings came along: nothing is left to read
    with Loom.open(work / "back.loom", readonly=True) as loom:
        (score,) = loom.node(reply).scores
        assert score.model == scored["model"] and not np.isnan(score.tokens.logprobs).any()
    ok(run_loom("export", "s.loom", "--format", "html", "-o", "s.html", cwd=work, env=env))
    assert '"rb":' in (work / "s.html").read_text()
    # a socketteer save file: text without probabilities, read by `loom score`
    ok(run_loom("import", DATA / "socketteer_dialectical.json", "-o", "d.loom", cwd=work, env=env))
    with Loom.open(work / "d.loom", readonly=True) as loom:
        leaf = loom.current
    result = json.loads(ok(run_loom("score", "d.loom", "--node", str(leaf), "--json",
                                    cwd=work, env=env)).stdout)  # fmt: skip
    assert result["n_nodes"] >= 1 and all(n["mean_logprob"] < 0 for n in result["nodes"])


def test_the_scoring_journey_in_the_app(tmp_path: Path, engine: Any) -> None:
    env = cli_env(tmp_path / "home")
    path = tmp_path / "s.loom"
    ok(run_loom("new", path, "--prompt", PROMPT, env=env))
    loom = Loom.open(path, tokenizer=FunctionTokenizer(engine.tokens_for))
    app = make_app(loom, engine)
    exported = tmp_path / "s.json"

    async def body(pilot: Pilot[int]) -> None:
        await settle(pilot)
        assert app.reading.path is not None and app.reading.path.readers  # the prompt, read
        await pilot.press("w")
        app.screen.query_one(TextArea).text = REPLY
        await pilot.press("ctrl+s")
        await settle(pilot)
        await settle(pilot)
        reply = app.current
        assert loom.node(reply).author == "human" and loom.node(reply).scores
        path_text = app.reading.path
        assert path_text is not None and reply in path_text.readers
        start, end = path_text.node_spans[reply]
        assert all(not math.isnan(path_text.logprobs[i]) for i in range(start, end))
        assert all(app.reading.token_style(i).italic for i in range(start, end))
        await pilot.press("g")  # the model continues after the reply
        await settle(pilot)
        kids = [h.id for h in loom.children(reply)]
        assert len(kids) == 2 and all(loom.node(k).scores == [] for k in kids)
        await export_in_app(pilot, exported)  # to loom-json, from the app

    run(app, body)
    loom.close()
    data = json.loads(exported.read_text())
    scored = [n for n in data["nodes"] if "scored" in n]
    assert {n["author"] for n in scored} == {"human"} and len(scored) == 2
    ok(run_loom("import", exported, "-o", tmp_path / "back.loom", env=env))
    back = Loom.open(tmp_path / "back.loom", tokenizer=FunctionTokenizer(engine.tokens_for))
    app = make_app(back, engine)

    async def reopened(pilot: Pilot[int]) -> None:
        await settle(pilot)
        await pilot.press("home")
        await settle(pilot)
        assert app.reading.path is not None and app.reading.path.readers
        assert app.score_job is None

    run(app, reopened)
    kinds = [e.kind for e in back.events()]
    since_import = kinds[len(kinds) - kinds[::-1].index("import") :]
    assert "score" in kinds and "score" not in since_import  # shown from the import
    back.close()
