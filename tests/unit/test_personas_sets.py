"""Persona sets in TOML: loading with one-line errors, saving, normalising, the shipped sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from loom.personas.sets import (
    DEFAULT_FRAMING,
    PersonaSet,
    PersonaSetError,
    dumps_persona_set,
    load_persona_set,
    normalise_priors,
    parse_persona_set,
    save_persona_set,
)
from loom.store.model import Persona

SESSIONS = Path(__file__).resolve().parents[2] / "sessions"

GOOD = '''
title = "Croissants"
prompt = """Alice: hi

Bob:"""

[[persona]]
name = "luigi"
description = "Bob sincerely despises croissants."
color = "green"
prior = 1

[[persona]]
name = "waluigi"
description = "Bob secretly loves croissants."
color = "chartreuse-ish"
prior = 3
'''


def test_load_a_full_set(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text(GOOD, encoding="utf-8")
    s = load_persona_set(path)
    assert s.title == "Croissants"
    assert s.prompt == "Alice: hi\n\nBob:"
    assert s.names == ["luigi", "waluigi"]
    assert s.get("waluigi").color == "chartreuse-ish"  # any colour string is kept
    assert s.get("luigi").prior == 1.0 and isinstance(s.get("luigi").prior, float)
    assert s.framing == DEFAULT_FRAMING
    assert s.source == path


def test_defaults() -> None:
    s = parse_persona_set('[[persona]]\nname = "a"\ndescription = "d"\n')
    assert (s.title, s.prompt) == ("", "")
    assert s.personas == [Persona("a", "d", "white", 1.0)]


def test_normalise_priors() -> None:
    s = parse_persona_set(GOOD).normalised()
    assert [p.prior for p in s.personas] == [0.25, 0.75]
    assert parse_persona_set(GOOD).personas[1].prior == 3.0  # the original is untouched
    with pytest.raises(PersonaSetError):
        normalise_priors([])


def test_round_trip(tmp_path: Path) -> None:
    s = parse_persona_set(GOOD)
    s.framing = "Character note: {description}\n\n"
    path = tmp_path / "saved.toml"
    save_persona_set(s, path)
    again = load_persona_set(path)
    assert again == s
    assert '"""' in path.read_text(encoding="utf-8")  # the prompt stays readable multi-line


def test_minimal_dump_omits_defaults() -> None:
    text = dumps_persona_set(PersonaSet([Persona("a", "d")]))
    assert "title" not in text and "prompt" not in text and "framing" not in text


def test_frame() -> None:
    s = PersonaSet([Persona("a", "d")], framing="[{description}] {not a field}\n")
    assert s.frame("Bob lies.") == "[Bob lies.] {not a field}\n"
    assert s.frame("") == ""  # the null hypothesis: no description at all


BAD = [
    ("[[persona]]\ndescription = 'd'\n", "persona #1 has no name"),
    ("[[persona]]\nname = ''\ndescription = 'd'\n", "persona #1 has no name"),
    ("[[persona]]\nname = 3\ndescription = 'd'\n", "persona #1 has no name"),
    ("[[persona]]\nname = 'a'\n", "persona 'a' has no description"),
    (
        "[[persona]]\nname='a'\ndescription='d'\n[[persona]]\nname='a'\ndescription='e'\n",
        "duplicate persona name 'a' (#1 and #2)",
    ),
    (
        "[[persona]]\nname='a'\ndescription='d'\n[[persona]]\nname='A'\ndescription='e'\n",
        "duplicate persona name 'A' (#1 and #2)",
    ),
    ("[[persona]]\nname='a'\ndescription='d'\nprior=0\n", "persona 'a': prior must be > 0"),
    ("[[persona]]\nname='a'\ndescription='d'\nprior=-1.5\n", "prior must be > 0, not -1.5"),
    ("[[persona]]\nname='a'\ndescription='d'\nprior=nan\n", "prior must be > 0"),
    ("[[persona]]\nname='a'\ndescription='d'\nprior=inf\n", "prior must be > 0"),
    ("[[persona]]\nname='a'\ndescription='d'\nprior='high'\n", "prior must be a number"),
    ("[[persona]]\nname='a'\ndescription='d'\nprior=true\n", "prior must be a number"),
    ("[[persona]]\nname='a'\ndescription='d'\ncolor=3\n", "color must be a string"),
    ("[[persona]]\nname='a'\ndescripton='d'\n", "unknown key 'descripton'"),
    ("title = 'x'\n", "no [[persona]] tables"),
    ("persona = 'x'\n", "no [[persona]] tables"),
    ("persona = ['x']\n", "persona #1 is not a table"),
    ("promt = 'x'\n[[persona]]\nname='a'\ndescription='d'\n", "unknown top-level key 'promt'"),
    ("prompt = 3\n[[persona]]\nname='a'\ndescription='d'\n", "prompt must be a string"),
    ("framing = 'x'\n[[persona]]\nname='a'\ndescription='d'\n", "framing must contain"),
    ("[[persona]\nname='a'\n", "invalid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_errors_are_one_line_and_name_the_file(text: str, message: str) -> None:
    with pytest.raises(PersonaSetError) as info:
        parse_persona_set(text, source="bad.toml")
    msg = str(info.value)
    assert msg.startswith("bad.toml: ")
    assert message in msg
    assert "\n" not in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PersonaSetError, match=r"nope\.toml: cannot read"):
        load_persona_set(tmp_path / "nope.toml")


def test_a_shipped_set_loads_by_name_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no sessions/ folder here
    assert (
        load_persona_set("croissant").title == load_persona_set(SESSIONS / "croissant.toml").title
    )
    with pytest.raises(PersonaSetError, match="the shipped sets: assistant, croissant, narrators"):
        load_persona_set("croissants")


@pytest.mark.parametrize("name", ["croissant", "assistant", "narrators"])
def test_shipped_sets_are_ready_for_loom_new(name: str) -> None:
    s = load_persona_set(SESSIONS / f"{name}.toml")
    assert s.title and s.prompt
    assert len(s.personas) >= 2
    # A base model continues best from a prompt that does not end in a space.
    assert not s.prompt.endswith((" ", "\n"))
    assert abs(sum(p.prior for p in s.normalised().personas) - 1.0) < 1e-12


def test_croissant_set_is_the_essays_dialogue() -> None:
    s = load_persona_set(SESSIONS / "croissant.toml")
    assert s.names == ["luigi", "waluigi"]
    assert s.prompt.startswith("Alice: You hate croissants and would never eat one.")
    assert "Bob: Yes, croissants are terrible. Boo France." in s.prompt
    assert s.prompt.endswith("Bob:")
    assert "truly hates croissants" in s.get("luigi").description  # sincere
    assert "secret croissant lover" in s.get("waluigi").description  # only pretending
