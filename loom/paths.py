"""Where loom keeps per-user files, on every platform: config, cache, data and model folders.

platformdirs gives each platform's convention (XDG on Linux, ~/Library on macOS, AppData on
Windows). Environment variables win, so tests and packagers can redirect everything:
LOOM_CONFIG (the config file itself), LOOM_CACHE_DIR, LOOM_DATA_DIR.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "loom"


def config_dir() -> Path:
    """The per-user config directory (themes/ and the last opened loom live here too)."""
    return Path(platformdirs.user_config_dir(APP, appauthor=False))


def config_path() -> Path:
    """$LOOM_CONFIG if set, else config.toml in `config_dir()`."""
    override = os.environ.get("LOOM_CONFIG")
    return Path(override) if override else config_dir() / "config.toml"


def cache_dir() -> Path:
    """The cache: the assembled default model, remembered sha256s, engine checks."""
    override = os.environ.get("LOOM_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir(APP, appauthor=False))


def data_dir() -> Path:
    """The user data dir; its models/ folder is searched for GGUF files."""
    override = os.environ.get("LOOM_DATA_DIR")
    return Path(override) if override else Path(platformdirs.user_data_dir(APP, appauthor=False))


def model_dirs() -> list[Path]:
    """The directories searched for GGUF files: ./models first, then the user data dir's models/."""
    return [Path.cwd() / "models", data_dir() / "models"]


def shipped_dir(name: str) -> Path:
    """A folder that ships with loom ("themes", "sessions"): inside the installed package, or at
    the top of the repository in a source checkout (pyproject.toml maps one onto the other)."""
    package = Path(__file__).resolve().parent
    installed = package / name
    return installed if installed.is_dir() else package.parent / name
