"""Persona sets: the TOML files users write, loaded with one-line errors and saved back.

A file holds `[[persona]]` tables (name, description, color, prior) and optionally
a top-level `title`, a starting `prompt` (what `loom new --personas FILE` puts in the root node) and
a `framing` template that places a description before the path context when scoring.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomli_w

from loom.paths import shipped_dir
from loom.store.model import Persona

# A base model reads the description as the preface of the text that follows; the blank line
# separates it from the path context the way a preface is separated from prose.
DEFAULT_FRAMING = "{description}\n\n"
_PERSONA_KEYS = frozenset({"name", "description", "color", "prior"})
_TOP_KEYS = frozenset({"title", "prompt", "framing", "persona"})


class PersonaSetError(ValueError):
    """A persona file that cannot be used; the message is one line naming the file."""


@dataclass
class PersonaSet:
    personas: list[Persona]
    title: str = ""
    prompt: str = ""
    framing: str = DEFAULT_FRAMING
    source: Path | None = field(default=None, compare=False)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.personas]

    def get(self, name: str) -> Persona:
        for p in self.personas:
            if p.name == name:
                return p
        raise KeyError(name)

    def frame(self, description: str) -> str:
        """The text placed before the path context for one description ("" gives the null)."""
        if not description:
            return ""
        return self.framing.replace("{description}", description)

    def normalised(self) -> PersonaSet:
        return replace(self, personas=normalise_priors(self.personas))


def normalise_priors(personas: Sequence[Persona]) -> list[Persona]:
    """Copies whose priors sum to 1 (the file may use any positive weights, e.g. 1 and 3)."""
    total = math.fsum(p.prior for p in personas)
    if not personas or not total > 0 or not math.isfinite(total):
        raise PersonaSetError("priors must be positive and finite to normalise")
    return [replace(p, prior=p.prior / total) for p in personas]


def shipped_persona_sets() -> list[str]:
    """Names of the persona sets that ship with loom (`--personas croissant`)."""
    return sorted(p.stem for p in shipped_dir("sessions").glob("*.toml"))


def load_persona_set(path: str | Path) -> PersonaSet:
    """A persona set from a TOML file, or by the name of a shipped set ("croissant")."""
    path = Path(path)
    shipped = shipped_dir("sessions") / f"{path}.toml"
    if not path.exists() and path.suffix == "" and shipped.is_file():
        path = shipped
    elif not path.exists():
        known = ", ".join(shipped_persona_sets())
        raise PersonaSetError(f"{path}: cannot read: no such file (the shipped sets: {known})")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PersonaSetError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    result = parse_persona_set(text, source=str(path))
    result.source = path
    return result


def parse_persona_set(text: str, *, source: str = "<persona set>") -> PersonaSet:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PersonaSetError(f"{source}: invalid TOML: {exc}") from exc
    return persona_set_from_dict(data, source=source)


def persona_set_from_dict(data: Mapping[str, Any], *, source: str = "<persona set>") -> PersonaSet:
    def fail(msg: str) -> PersonaSetError:
        return PersonaSetError(f"{source}: {msg}")

    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise fail(f"unknown top-level key {unknown[0]!r} (allowed: {_allowed(_TOP_KEYS)})")
    title = _string(data, "title", "", fail)
    prompt = _string(data, "prompt", "", fail)
    framing = _string(data, "framing", DEFAULT_FRAMING, fail)
    if "{description}" not in framing:
        raise fail("framing must contain {description}")
    tables = data.get("persona")
    if not isinstance(tables, list) or not tables:
        raise fail("no [[persona]] tables")
    personas: list[Persona] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(tables, start=1):
        if not isinstance(table, dict):
            raise fail(f"persona #{index} is not a table")
        persona = _persona(table, f"persona #{index}", fail)
        # Names key posteriors and labels; names differing only in case would confuse users.
        key = persona.name.casefold()
        if key in seen:
            raise fail(f"duplicate persona name {persona.name!r} (#{seen[key]} and #{index})")
        seen[key] = index
        personas.append(persona)
    return PersonaSet(personas=personas, title=title, prompt=prompt, framing=framing)


def _persona(table: Mapping[str, Any], where: str, fail: Any) -> Persona:
    unknown = sorted(set(table) - _PERSONA_KEYS)
    if unknown:
        raise fail(f"{where}: unknown key {unknown[0]!r} (allowed: {_allowed(_PERSONA_KEYS)})")
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        raise fail(f"{where} has no name")
    name = name.strip()
    where = f"persona {name!r}"
    description = table.get("description")
    if not isinstance(description, str) or not description.strip():
        raise fail(f"{where} has no description")
    color = table.get("color", "white")
    if not isinstance(color, str):
        raise fail(f"{where}: color must be a string")
    prior = table.get("prior", 1.0)
    # bool is an int in Python; `prior = true` is a typo, not a weight.
    if isinstance(prior, bool) or not isinstance(prior, int | float):
        raise fail(f"{where}: prior must be a number")
    if not math.isfinite(prior) or prior <= 0:
        raise fail(f"{where}: prior must be > 0, not {prior}")
    return Persona(name=name, description=description.strip(), color=color, prior=float(prior))


def _string(data: Mapping[str, Any], key: str, default: str, fail: Any) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise fail(f"{key} must be a string")
    return value


def _allowed(keys: frozenset[str]) -> str:
    return ", ".join(sorted(keys))


def persona_set_to_dict(persona_set: PersonaSet) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if persona_set.title:
        out["title"] = persona_set.title
    if persona_set.prompt:
        out["prompt"] = persona_set.prompt
    if persona_set.framing != DEFAULT_FRAMING:
        out["framing"] = persona_set.framing
    out["persona"] = [p.to_json() for p in persona_set.personas]
    return out


def dumps_persona_set(persona_set: PersonaSet) -> str:
    return tomli_w.dumps(persona_set_to_dict(persona_set), multiline_strings=True)


def save_persona_set(persona_set: PersonaSet, path: str | Path) -> None:
    Path(path).write_text(dumps_persona_set(persona_set), encoding="utf-8")
