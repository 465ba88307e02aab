"""The user's TOML configuration: sampler presets, generation defaults, theme, keymap, model.

The file lives in the user config directory (see `config_path`); `default_config.toml` beside
this module is the documented default and the fallback for every missing key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from loom.paths import config_path

DEFAULT_CONFIG_FILE = Path(__file__).with_name("default_config.toml")
# Siblings: as made, by mean or cumulative logprob (likeliest first), by mean token entropy (most
# certain first); "shuffled" is blind reading's order (a fixed shuffle per session), never a
# setting, so it is not in SORT_ORDERS (what `o` cycles through and the config accepts).
SortOrder = Literal["created", "mean", "cumulative", "entropy", "shuffled"]
SORT_ORDERS: tuple[SortOrder, ...] = ("created", "mean", "cumulative", "entropy")


class ConfigError(Exception):
    """The config file exists but can't be used; the message names the file and the problem."""


@dataclass
class SamplerPreset:
    name: str
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    max_tokens: int | None = None  # None: use [generation].max_tokens
    n: int | None = None  # None: use [generation].n

    def to_toml(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "min_p": self.min_p,
        }
        if self.max_tokens is not None:
            data["max_tokens"] = self.max_tokens
        if self.n is not None:
            data["n"] = self.n
        return data


@dataclass
class RemoteSettings:
    """[remote]: how loom talks to a completion server given with `--remote URL`."""

    api_key: str = field(default="", repr=False)  # never shown
    model: str = ""
    connect_timeout: float = 10.0
    timeout: float = 120.0
    concurrency: int = 8
    retries: int = 3


@dataclass
class Config:
    theme: str = "loom-dark"
    model: str = ""
    models_dir: str = ""
    n_ctx: int = 4096
    n: int = 4
    max_tokens: int = 48
    preset: str = "default"
    top_logprobs: int = 5
    reproducible: bool = False  # every generation starts from an empty KV cache (bit-exact)
    presets: dict[str, SamplerPreset] = field(default_factory=dict)
    multiverse_depth: int = 3
    multiverse_width: int = 4
    census_rollouts: int = 32
    census_tokens: int = 48
    fork_budget: int = 8000
    growth_budget: int = 1000
    shading: bool = True
    show_pruned: bool = False
    sort: SortOrder = "created"
    auto_score: bool = True  # the app reads unscored text on the path shown with the model
    persona_threshold: float = 0.6  # confidence a label, filter or prune by persona needs
    persona_auto_label: bool = True  # label new children when the loom has a persona set
    keymap: dict[str, str] = field(default_factory=dict)
    remote: RemoteSettings = field(default_factory=RemoteSettings)
    source: Path | None = None  # the file this was read from, None for pure defaults

    def active_preset(self) -> SamplerPreset:
        return self.presets.get(self.preset) or SamplerPreset(self.preset)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _number(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = table[key]
    # bool is an int subclass: `n = true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}.{key} must be a number, not {value!r}")
    if kind is int and not float(value).is_integer():
        raise ConfigError(f"{where}.{key} must be a whole number, not {value!r}")
    return kind(value)


def _flag(table: dict[str, Any], key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be true or false, not {value!r}")
    return value


def _preset(name: str, table: dict[str, Any]) -> SamplerPreset:
    where = f"presets.{name}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    preset = SamplerPreset(name)
    for key, kind in (("temperature", float), ("top_p", float), ("min_p", float)):
        if key in table:
            setattr(preset, key, _number(table, key, kind, where))
    for key in ("top_k", "max_tokens", "n"):
        if key in table:
            setattr(preset, key, _number(table, key, int, where))
    return preset


def _remote(table: dict[str, Any]) -> RemoteSettings:
    if not isinstance(table, dict):
        raise ConfigError("[remote] must be a table")
    settings = RemoteSettings(
        api_key=str(table.get("api_key", "")),
        model=str(table.get("model", "")),
        connect_timeout=_number(table, "connect_timeout", float, "remote"),
        timeout=_number(table, "timeout", float, "remote"),
        concurrency=_number(table, "concurrency", int, "remote"),
        retries=_number(table, "retries", int, "remote"),
    )
    if settings.connect_timeout <= 0 or settings.timeout <= 0:
        raise ConfigError("remote.timeout and remote.connect_timeout must be above 0 seconds")
    if not 1 <= settings.concurrency <= 64 or not 0 <= settings.retries <= 10:
        raise ConfigError("remote.concurrency must be 1..64 and remote.retries 0..10")
    return settings


def parse_config(data: dict[str, Any], source: Path | None = None) -> Config:
    """Build a Config from a TOML table merged over the shipped defaults."""
    with DEFAULT_CONFIG_FILE.open("rb") as f:
        defaults = tomllib.load(f)
    # A user's [presets] replaces nothing: their presets are added to (or override) ours.
    merged = _merge(defaults, data)
    gen = merged.get("generation", {})
    multiverse = merged.get("multiverse", {})
    display = merged.get("display", {})
    census = merged.get("census", {})
    personas = merged.get("personas", {})
    keymap = merged.get("keymap", {})
    if not isinstance(keymap, dict) or not all(isinstance(v, str) for v in keymap.values()):
        raise ConfigError('[keymap] entries must be "binding-id" = "key"')
    config = Config(
        theme=str(merged.get("theme", "loom-dark")),
        model=str(merged.get("model", "")),
        models_dir=str(merged.get("models_dir", "")),
        n_ctx=_number(merged, "n_ctx", int, "config"),
        n=_number(gen, "n", int, "generation"),
        max_tokens=_number(gen, "max_tokens", int, "generation"),
        preset=str(gen.get("preset", "default")),
        top_logprobs=_number(gen, "top_logprobs", int, "generation"),
        reproducible=_flag(gen, "reproducible", "generation"),
        presets={
            str(name): _preset(str(name), table)
            for name, table in merged.get("presets", {}).items()
        },
        multiverse_depth=_number(multiverse, "depth", int, "multiverse"),
        multiverse_width=_number(multiverse, "width", int, "multiverse"),
        census_rollouts=_number(census, "rollouts", int, "census"),
        census_tokens=_number(census, "tokens", int, "census"),
        fork_budget=_number(census, "fork_budget", int, "census"),
        growth_budget=_number(census, "growth_budget", int, "census"),
        shading=bool(display.get("shading", True)),
        show_pruned=bool(display.get("show_pruned", False)),
        sort=cast(SortOrder, str(display.get("sort", "created"))),  # checked below
        auto_score=_flag(display, "auto_score", "display"),
        persona_threshold=_number(personas, "threshold", float, "personas"),
        persona_auto_label=bool(personas.get("auto_label", True)),
        keymap={str(k): str(v) for k, v in keymap.items()},
        remote=_remote(merged.get("remote", {})),
        source=source,
    )
    if config.sort not in SORT_ORDERS:
        raise ConfigError(f"display.sort must be one of {', '.join(SORT_ORDERS)}")
    if not 0.0 < config.persona_threshold <= 1.0:
        raise ConfigError("personas.threshold must be above 0 and at most 1")
    if not 1 <= config.n <= 64 or config.max_tokens < 1:
        raise ConfigError("generation.n must be 1..64 and generation.max_tokens at least 1")
    if not 1 <= config.census_rollouts <= 4096 or not 1 <= config.census_tokens <= 1024:
        raise ConfigError("census.rollouts must be 1..4096 and census.tokens 1..1024")
    if config.fork_budget < 1 or config.growth_budget < 1:
        raise ConfigError("census.fork_budget and census.growth_budget must be at least 1")
    return config


def load_config(path: Path | None = None) -> Config:
    """Read the user's config (or the defaults if there is none). Raises ConfigError."""
    path = path or config_path()
    if not path.exists():
        return parse_config({})
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    try:
        return parse_config(data, source=path)
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def save_preset(preset: SamplerPreset, path: Path | None = None) -> Path:
    """Store a sampler preset in the user's config file, keeping the rest of the file as it is.

    A new preset is appended as a `[presets.NAME]` table, so the user's comments survive; a
    preset that already exists is replaced in place by rewriting only its table.
    """
    import tomli_w

    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(DEFAULT_CONFIG_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    block = tomli_w.dumps({"presets": {preset.name: preset.to_toml()}})
    lines = text.splitlines(keepends=True)
    header = block.splitlines()[0]
    if header in (line.strip() for line in lines):
        start = next(i for i, line in enumerate(lines) if line.strip() == header)
        end = start + 1
        # The table runs to the next table header (or the end of the file).
        while end < len(lines) and not lines[end].lstrip().startswith("["):
            end += 1
        lines[start:end] = [block if block.endswith("\n") else block + "\n", "\n"]
        text = "".join(lines)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    # Validate before writing: a preset save must never leave an unreadable config behind.
    parse_config(tomllib.loads(text))
    path.write_text(text, encoding="utf-8")
    return path
