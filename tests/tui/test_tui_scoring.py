"""Pilot tests of probabilities on every token, with the real default model: a socketteer import
read by `loom score` is shaded in the app; the path shown is read automatically (unless the
setting is off); `S` reads on demand; read tokens are drawn in italics and the inspector says
they were read, not sampled; without a model `S` is one notice.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from support.cli import DATA, cli_env, ok, run_loom
from support.tui import engine, isolated_config, make_app, notices, run, settle, small_generations
from textual.pilot import Pilot

from loom.engine.engine import Engine
from loom.engine.errors import RemoteError
from loom.engine.fake import FakeBackend
from loom.engine.remote import no_prompt_logprobs
from loom.store.loom import Loom
from loom.store.tokenizer import FunctionTokenizer
from loom.tokens import TokenArray
from loom.tui.app import LoomApp
from loom.tui.widgets.inspector import TokenInspector

__all__ = ["engine", "isolated_config", "small_generations"]  # fixtures

pytestmark = pytest.mark.model
TELEOLOGY = DATA / "socketteer_teleology.json"


def imported(tmp_path: Path) -> Path:
    path = tmp_path / "t.loom"
    ok(run_loom("import", TELEOLOGY, "-o", path, env=cli_env(tmp_path / "home")))
    return path


def auto_score(config: Path, on: bool) -> None:
    with config.open("a", encoding="utf-8") as handle:
        handle.write(f"[display]\nauto_score = {'true' if on else 'false'}\n")


def open_app(path: Path, backend: Engine | None) -> LoomApp:
    tokenizer = FunctionTokenizer(backend.tokens_for) if backend is not None else None
    return make_app(Loom.open(path, tokenizer=tokenizer), backend)


def assert_read_and_shaded(app: LoomApp) -> None:
    """Every token of the path shown has a probability, and is drawn shaded and in italics."""
    path = app.reading.path
    assert path is not None and len(path) > 20
    assert set(path.readers) == set(app.path_ids)  # socketteer text: every node was read
    assert not any(math.isnan(lp) for lp in path.logprobs)
    for index in range(0, len(path), 7):
        style = app.reading.token_style(index)
        assert style.bgcolor is not None, index  # shaded by its probability
        assert style.italic, index  # read by the model, not sampled
        assert path.reader_at(index) == "Gemma 3 270m"


def test_a_socketteer_import_read_by_loom_score_is_shaded(
    engine: Engine, tmp_path: Path, isolated_config: Path
) -> None:
    path = imported(tmp_path)
    with Loom.open(path, readonly=True) as loom:
        current = loom.current
    ok(run_loom("score", path, "--node", str(current), env=cli_env(tmp_path / "home")))
    auto_score(isolated_config, False)  # what the app shows is what `loom score` stored
    app = open_app(path, engine)

    async def body(pilot: Pilot[int]) -> None:
        await settle(pilot)
        assert app.current == current
        assert_read_and_shaded(app)
        await pilot.press("i")  # the token cursor: the inspector shows the alternatives
        await pilot.pause()
        inspector = app.query_one(TokenInspector)
        text = str(inspector.render())
        assert "read by the model Gemma 3 270m, not sampled" in text
        assert "logprob -" in text and "entropy" in text
        assert app.reading.path is not None
        index = app.reading.cursor
        assert index is not None and len(app.reading.path.tokens.top(index)) == 5

    run(app, body)
    with Loom.open(path, readonly=True) as loom:
        assert [e.kind for e in loom.events()].count("score") == 1  # nothing read again


def test_the_path_shown_is_read_automatically(engine: Engine, tmp_path: Path) -> None:
    path = imported(tmp_path)
    app = open_app(path, engine)

    async def body(pilot: Pilot[int]) -> None:
        await settle(pilot)
        await settle(pilot)
        assert app.score_job is None
        assert_read_and_shaded(app)
        await pilot.press("home")  # the root was read with the path: nothing new starts
        await pilot.pause()
        assert app.score_job is None

    run(app, body)
    with Loom.open(path, readonly=True) as loom:
        (score,) = [e for e in loom.events() if e.kind == "score"]
        path_ids = [h.id for h in loom.ancestors(loom.current)] + [loom.current]
        assert [n["node"] for n in score.payload["nodes"]] == path_ids
        assert not loom.can_undo  # derived data, not an edit: no undo step


def test_s_reads_on_demand_and_the_setting_keeps_it_off(
    engine: Engine, tmp_path: Path, isolated_config: Path
) -> None:
    path = imported(tmp_path)
    auto_score(isolated_config, False)
    app = open_app(path, engine)
    expected: set[int] = set()

    async def body(pilot: Pilot[int]) -> None:
        await settle(pilot)
        await pilot.press("home", "right")
        await settle(pilot)
        expected.update(app.path_ids, app.session.subtree_ids(app.current))
        assert app.reading.path is not None and not app.reading.path.readers  # setting off
        assert all(math.isnan(lp) for lp in app.reading.path.logprobs)
        assert app.reading.token_style(0).bgcolor is None  # no probability: not shaded
        await pilot.press("S")  # this path and the node's subtree
        await settle(pilot)
        assert "read " in notices(app) and " node(s), " in notices(app)
        assert_read_and_shaded(app)

    run(app, body)
    with Loom.open(path, readonly=True) as loom:
        (score,) = [e for e in loom.events() if e.kind == "score"]
        assert {n["node"] for n in score.payload["nodes"]} == expected


def test_without_a_model_s_is_one_notice(tmp_path: Path) -> None:
    path = imported(tmp_path)
    app = open_app(path, None)

    async def body(pilot: Pilot[int]) -> None:
        await settle(pilot)
        await pilot.press("S")
        await pilot.pause()
        assert "scoring needs a model" in notices(app)
        assert app.is_running and app.score_job is None

    run(app, body)
    with Loom.open(path, readonly=True) as loom:
        assert "score" not in [e.kind for e in loom.events()]


def test_escape_stops_a_reading_and_keeps_what_was_read(
    engine: Engine, tmp_path: Path, isolated_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = imported(tmp_path)
    auto_score(isolated_config, False)
    app = open_app(path, engine)
    read = engine.read

    def first_call_waits_for_escape(*args: Any, **kwargs: Any) -> Any:
        # The reading would otherwise often end before the key arrives (a race): the first
        # call finishes only once escape has been pressed, so the run stops after it.
        job = app.score_job
        assert job is not None
        job.cancel.wait(30)
        return read(*args, **kwargs)

    monkeypatch.setattr(engine, "read", first_call_waits_for_escape)

    async def body(pilot: Pilot[int]) -> None:
        await settle(pilot)
        await pilot.press("home", "S")  # the whole loom: several calls, one per branching node
        job = app.score_job  # the worker may end as soon as escape lets its first call go
        assert job is not None
        await pilot.press("escape")
        assert job.cancel.is_set()
        await settle(pilot)
        assert app.score_job is None and "stopped: read " in notices(app)

    run(app, body)
    with Loom.open(path, readonly=True) as loom:
        (score,) = [e for e in loom.events() if e.kind == "score"]
        assert 0 < len(score.payload["nodes"]) < loom.stats()["nodes"]


class NoPromptLogprobs(FakeBackend):
    """A server like llama-server, which returns no logprobs for prompt tokens (a UI test of
    the refusal: nothing is scored, so no real model is needed)."""

    def read(self, *_args: object, **_kwargs: object) -> list[TokenArray]:
        raise RemoteError(no_prompt_logprobs("http://127.0.0.1:9"))


def test_a_server_that_cannot_score_is_said_once(tmp_path: Path) -> None:
    path = imported(tmp_path)
    backend = NoPromptLogprobs()
    app = make_app(Loom.open(path, tokenizer=FunctionTokenizer(backend.tokens_for)), backend)

    async def body(pilot: Pilot[int]) -> None:
        await settle(pilot)
        assert notices(app).count("no logprobs for prompt tokens") == 1
        assert app.auto_score_failed is not None
        await pilot.press("home", "right", "down")  # other paths: not tried again by itself
        await settle(pilot)
        assert notices(app).count("no logprobs for prompt tokens") == 1
        await pilot.press("S")  # asked for, it is said again
        await settle(pilot)
        assert notices(app).count("no logprobs for prompt tokens") == 2
        assert app.is_running

    run(app, body)
    with Loom.open(path, readonly=True) as loom:
        assert "score" not in [e.kind for e in loom.events()]
