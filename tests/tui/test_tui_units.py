"""Pure pieces of the TUI: config, themes, text safety, wrapping, the probability scale."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from textual.color import Color

from loom.config import (
    DEFAULT_CONFIG_FILE,
    ConfigError,
    SamplerPreset,
    config_path,
    load_config,
    parse_config,
    save_preset,
)
from loom.text import one_line
from loom.tui.display import ProbabilityScale, bar, inert, percent, token_label
from loom.tui.keymap import ALL_ACTIONS, APP_ACTIONS
from loom.tui.screens.multiverse import allocate_rows
from loom.tui.themes import LOOM_VARIABLE_DEFAULTS, SHIPPED_THEMES_DIR, load_themes
from loom.tui.widgets.reading_pane import wrap_tokens


def test_default_config_file_parses_and_has_every_section() -> None:
    config = parse_config({})
    assert config.theme == "loom-dark"
    assert {"default", "focused", "wild"} <= set(config.presets)
    assert config.n == 4 and config.max_tokens == 48
    assert config.multiverse_depth == 3 and config.multiverse_width == 4
    assert tomllib.loads(DEFAULT_CONFIG_FILE.read_text())["keymap"] == {}


def test_user_config_overrides_and_adds_presets(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        'theme = "loom-light"\n[generation]\nn = 2\n[presets.mine]\ntemperature = 0.5\n'
        '[keymap]\n"loom.generate" = "ctrl+g"\n'
    )
    config = load_config(path)
    assert config.theme == "loom-light" and config.n == 2
    assert config.presets["mine"].temperature == 0.5
    assert "default" in config.presets  # shipped presets stay
    assert config.keymap == {"loom.generate": "ctrl+g"}


@pytest.mark.parametrize(
    "text",
    ["[generation]\nn = true\n", "[generation]\nn = 1.5\n", "[display]\nsort = 'x'\n", "n = [\n"],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)


def test_config_path_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LOOM_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert config_path() == tmp_path / "loom" / "config.toml"
    monkeypatch.setenv("LOOM_CONFIG", str(tmp_path / "x.toml"))
    assert config_path() == tmp_path / "x.toml"


def test_save_preset_appends_then_replaces_keeping_comments(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("# my comment\ntheme = 'nord'\n")
    save_preset(SamplerPreset("calm", temperature=0.3, top_k=10), path)
    save_preset(SamplerPreset("calm", temperature=0.4), path)
    save_preset(SamplerPreset("other", temperature=0.9, n=2), path)
    text = path.read_text()
    assert text.startswith("# my comment") and text.count("[presets.calm]") == 1
    config = load_config(path)
    assert config.presets["calm"].temperature == 0.4 and config.presets["calm"].top_k == 0
    assert config.presets["other"].n == 2 and config.theme == "nord"


def test_shipped_themes_load_with_loom_variables() -> None:
    themes, problems = load_themes([SHIPPED_THEMES_DIR])
    assert problems == []
    names = {t.name for t in themes}
    assert {"loom-dark", "loom-light", "loom-cividis"} <= names
    assert any(not t.dark for t in themes)
    for theme in themes:
        assert set(LOOM_VARIABLE_DEFAULTS) <= set(theme.variables)


def test_bad_theme_file_is_reported_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('name = "x"\nprimary = "not-a-colour"\n')
    (tmp_path / "typo.toml").write_text('name = "y"\nprimary = "#fff"\nprimry = "#000"\n')
    themes, problems = load_themes([tmp_path])
    assert themes == [] and len(problems) == 2


def test_inert_neutralises_escapes_markup_stays_literal() -> None:
    nasty = "\x1b[31mred\x1b[0m [bold]x[/bold] \x07\r\u202e"
    shown = inert(nasty)
    assert "\x1b" not in shown and "\x07" not in shown and "\r" not in shown
    assert "\u202e" not in shown
    assert "[bold]x[/bold]" in shown  # left as text; it is never parsed as markup
    assert one_line("a\nb\tc", 10) == "a↵b c"
    assert token_label(" a\n") == "‹·a↵›"


def test_percent_and_bar() -> None:
    assert percent(None).strip() == "—"
    assert percent(0.999) == "100%" and percent(0.5) == " 50%" and percent(0.001) == "<1% "
    assert bar(0.5, 4) == "██  " and bar(1.0, 3) == "███" and bar(0.0, 2) == "  "


def test_probability_scale_endpoints() -> None:
    scale = ProbabilityScale(Color(255, 0, 0), Color(0, 0, 255), Color(0, 255, 0))
    assert scale.colour(0.0) == Color(255, 0, 0)
    assert scale.colour(0.5) == Color(0, 0, 255)
    assert scale.colour(1.0) == Color(0, 255, 0)
    assert scale.colour(7) == Color(0, 255, 0)


def test_wrap_tokens_keeps_words_and_maps_tokens_to_lines() -> None:
    texts = ["Hello", " world", ",", " this", " is", " loom", "\n", "next", ""]
    lines, first = wrap_tokens(texts, 12)
    drawn = ["".join(t for t, _ in runs) for runs in lines]
    assert drawn[0] == "Hello world,"
    assert drawn[1] == " this is"  # a word that doesn't fit moves down with its space
    assert drawn[2] == " loom "  # the newline token keeps a cell
    assert drawn[3] == "next·"  # an empty token still gets a cell
    assert first[5] == 2 and first[6] == 2 and first[7] == 3 and first[8] == 3


def test_wrap_tokens_hard_breaks_long_words_and_wide_chars() -> None:
    lines, first = wrap_tokens(["x" * 10, "日本語"], 4)
    drawn = ["".join(t for t, _ in runs) for runs in lines]
    assert drawn == ["xxxx", "xxxx", "xx日", "本語"]
    assert first == [0, 2]


def test_allocate_rows_is_proportional_and_keeps_every_block() -> None:
    assert allocate_rows([0.5, 0.25, 0.25], 8) == [4, 2, 2, 0]
    counts = allocate_rows([0.97, 0.01, 0.01], 10)
    assert sum(counts) == 10 and all(c >= 1 for c in counts[:3])
    # Scarce rows go to tokens before the rest of the mass.
    assert allocate_rows([0.2, 0.1], 1) == [1, 0, 0]
    assert allocate_rows([0.2, 0.1], 2) == [1, 1, 0]


def test_every_action_has_a_unique_id_key_and_help() -> None:
    assert len(ALL_ACTIONS) == len({a.id for a in ALL_ACTIONS.values()})
    for action in APP_ACTIONS:
        assert action.keys and action.help and action.title
    required = {"loom.generate": "g", "loom.cancel": "escape", "loom.help": "f1",
                "loom.palette": "ctrl+p", "loom.quit": "q"}  # fmt: skip
    for binding_id, key in required.items():
        assert key in ALL_ACTIONS[binding_id].keys.split(",")
    assert "left" in ALL_ACTIONS["loom.parent"].keys and "h" in ALL_ACTIONS["loom.parent"].keys


def test_incremental_wrap_matches_a_full_wrap() -> None:
    import random

    from loom.tui.widgets.reading_pane import WrappedText

    rng = random.Random(4)
    words = [" the", " cat", "\n", " a", "verylongwordthatbreaks", ".", " 日本", "", "  ", "x"]
    for _ in range(300):
        shared = [rng.choice(words) for _ in range(rng.randrange(1, 120))]
        old_texts = shared + [rng.choice(words) for _ in range(rng.randrange(0, 40))]
        new_texts = shared + [rng.choice(words) for _ in range(rng.randrange(0, 40))]
        width = rng.randrange(5, 30)
        old = WrappedText(old_texts, width)
        reused = WrappedText(new_texts, width, (old, len(shared)))
        full = WrappedText(new_texts, width)
        assert reused.line_starts.tolist() == full.line_starts.tolist()
        assert reused.line_ends.tolist() == full.line_ends.tolist()


def test_run_app_reports_bad_config_and_bad_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from loom.tui.launch import run_app

    config = tmp_path / "config.toml"
    monkeypatch.setenv("LOOM_CONFIG", str(config))
    config.write_text("[generation]\nn = 0\n")
    assert run_app(tmp_path / "x.loom", prompt=None, model_path=None, readonly=False) == 2
    assert "config" in capsys.readouterr().err
    config.write_text("")
    bad = tmp_path / "bad.loom"
    bad.write_bytes(b"not sqlite")
    assert run_app(bad, prompt=None, model_path=None, readonly=False) == 1
    assert "bad.loom" in capsys.readouterr().err
    assert run_app(tmp_path / "none.loom", prompt=None, model_path=None, readonly=True) == 1
    assert not (tmp_path / "none.loom").exists()


def test_open_session_creates_a_loom_with_the_prompt(tmp_path: Path) -> None:
    from loom.engine.fake import FakeBackend
    from loom.tui.launch import new_loom_path, open_session

    session, notices = open_session(tmp_path / "n.loom", prompt="Hello there", readonly=False,
                                    backend=FakeBackend())  # fmt: skip
    assert session.loom.node(session.loom.root_id).text == "Hello there"
    assert notices == []
    session.loom.close()
    _again, notices = open_session(tmp_path / "n.loom", prompt="ignored", readonly=False)
    assert "ignored" in notices[0]
    assert new_loom_path(tmp_path).parent == tmp_path


def test_loom_without_a_file_reopens_the_last_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loom.tui.launch import open_session, remember_loom

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.chdir(tmp_path)
    first, notices = open_session(None, prompt="A new one", readonly=False)
    assert "new loom" in notices[0]
    path = Path(first.loom.path)
    first.loom.close()
    remember_loom(path)
    again, notices = open_session(None, prompt=None, readonly=False)
    assert Path(again.loom.path) == path.resolve() and "last loom" in notices[0]
    again.loom.close()
    fresh, notices = open_session(None, prompt="Another", readonly=False)
    assert Path(fresh.loom.path) != path and "new loom" in notices[0]
    fresh.loom.close()
