"""Theme files (themes/*.toml) → textual Theme objects, and loom's own theme variables.

loom's variables (the probability scale, the token cursor, persona colours) get defaults in
`LOOM_VARIABLE_DEFAULTS`, which the app returns from `get_theme_variable_defaults`, so every
built-in Textual theme works with loom's CSS too.
"""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from textual.color import Color
from textual.theme import Theme

from loom.paths import config_dir, shipped_dir

# The themes shipped with loom (themes/ in the repository), then the user's own.
SHIPPED_THEMES_DIR = shipped_dir("themes")
PERSONA_SLOTS = 6

LOOM_VARIABLE_DEFAULTS: dict[str, str] = {
    "prob-low": "#d9534f",
    "prob-mid": "#d4a72c",
    "prob-high": "#3fa66b",
    "token-cursor": "#3d8bfd",
    "node-current": "#ffa62b",
    "persona-1": "#4ebf71",
    "persona-2": "#e5534b",
    "persona-3": "#58a6ff",
    "persona-4": "#e3b341",
    "persona-5": "#bc8cff",
    "persona-6": "#f0883e",
}

_THEME_FIELDS = {f.name for f in fields(Theme)} - {"variables"}


class ThemeFileError(Exception):
    pass


def theme_from_toml(data: dict[str, Any], source: str = "<theme>") -> Theme:
    """A Theme from one theme file's table; unknown keys are an error (typos must not pass)."""
    unknown = set(data) - _THEME_FIELDS - {"variables"}
    if unknown:
        raise ThemeFileError(f"{source}: unknown keys {', '.join(sorted(unknown))}")
    if "name" not in data or "primary" not in data:
        raise ThemeFileError(f"{source}: a theme needs at least `name` and `primary`")
    variables = data.get("variables", {})
    if not isinstance(variables, dict):
        raise ThemeFileError(f"{source}: [variables] must be a table")
    for key, value in {k: v for k, v in data.items() if k not in ("name", "dark")}.items():
        if isinstance(value, str) and key not in ("name",):
            _check_colour(value, f"{source}: {key}")
    for key in LOOM_VARIABLE_DEFAULTS:
        if key in variables:
            _check_colour(str(variables[key]), f"{source}: variables.{key}")
    kwargs = {k: v for k, v in data.items() if k != "variables"}
    return Theme(**kwargs, variables={str(k): str(v) for k, v in variables.items()})


def _check_colour(value: str, where: str) -> None:
    try:
        Color.parse(value)
    except Exception as exc:  # textual raises ColorParseError, a ValueError subclass
        raise ThemeFileError(f"{where}: {value!r} is not a colour") from exc


def theme_dirs() -> list[Path]:
    return [SHIPPED_THEMES_DIR, config_dir() / "themes"]


def load_themes(dirs: list[Path] | None = None) -> tuple[list[Theme], list[str]]:
    """Every theme file found, and one message per file that could not be used."""
    themes: list[Theme] = []
    problems: list[str] = []
    for folder in dirs if dirs is not None else theme_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            try:
                with path.open("rb") as f:
                    themes.append(theme_from_toml(tomllib.load(f), str(path)))
            except (OSError, tomllib.TOMLDecodeError, ThemeFileError, TypeError) as exc:
                problems.append(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
    return themes, problems


def shipped_theme_names() -> list[str]:
    return [t.name for t in load_themes([SHIPPED_THEMES_DIR])[0]]
