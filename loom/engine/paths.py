"""Where loom keeps per-user files: the cache (default model, sha256 cache) and the data dir.

Environment variables win so tests and packagers can redirect everything; otherwise the XDG base
directories are used (platformdirs would add a dependency for two paths).
"""

from __future__ import annotations

import os
from pathlib import Path


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    if value and Path(value).is_absolute():
        return Path(value)
    return Path.home() / fallback


def cache_dir() -> Path:
    """loom's user cache dir: LOOM_CACHE_DIR, else $XDG_CACHE_HOME/loom, else ~/.cache/loom."""
    override = os.environ.get("LOOM_CACHE_DIR")
    if override:
        return Path(override)
    return _xdg("XDG_CACHE_HOME", ".cache") / "loom"


def data_dir() -> Path:
    """The user data dir (LOOM_DATA_DIR, else $XDG_DATA_HOME/loom, else ~/.local/share/loom)."""
    override = os.environ.get("LOOM_DATA_DIR")
    if override:
        return Path(override)
    return _xdg("XDG_DATA_HOME", ".local/share") / "loom"


def model_dirs() -> list[Path]:
    """The directories searched for GGUF files: ./models first, then the user data dir's models/."""
    return [Path.cwd() / "models", data_dir() / "models"]
